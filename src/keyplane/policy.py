"""The route table: for each V5 path, who may call it and with which permission.

Source: Bybit V5 API docs, per-endpoint "Permission" notes; summarised in DESIGN.md §3.
A route's requirement is any-of a set of (group, value) grants, chosen by the request's
`category` where the route trades several product lines (order create/cancel).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from keyplane.errors import ParameterError
from keyplane.keys.limits import RateOverrides
from keyplane.ratelimit.protocol import Rate

__all__ = [
    "ROUTES",
    "Grant",
    "RoutePolicy",
    "check_rate_overrides",
    "find_route",
    "is_known_path",
]

Grant = tuple[str, str]

_WALLET_ADMIN: tuple[Grant, ...] = (("Wallet", "AccountTransfer"), ("Wallet", "SubMemberTransfer"))
#: a sub key acting on itself may hold the sub-side transfer grant instead of a master's.
_SUB_KEY_ADMIN: tuple[Grant, ...] = (*_WALLET_ADMIN, ("Wallet", "SubMemberTransferList"))
_CONTRACT: tuple[Grant, ...] = (("ContractTrade", "Order"), ("Derivatives", "DerivativesTrade"))
_TRADE_BY_CATEGORY: Mapping[str, tuple[Grant, ...]] = {
    "spot": (("Spot", "SpotTrade"),),
    "linear": _CONTRACT,
    "inverse": _CONTRACT,
    "option": (("Options", "OptionsTrade"),),
}


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    """Access rule for one (method, path).

    public: no key needed. write: refused to read-only keys (10005). master_only: refused to
    sub account keys (10005). requires: any-of grants; by_category: requirement keyed by the
    request's `category` parameter (an unknown category falls back to `requires`).
    rate / rate_by_category: the default per-key budget (Bybit V5 "Rate Limit" page, per UID and
    endpoint, rolling per second; inter-transfer per minute).
    """

    method: str
    path: str
    public: bool = False
    write: bool = False
    master_only: bool = False
    requires: tuple[Grant, ...] = ()
    by_category: Mapping[str, tuple[Grant, ...]] = field(default_factory=dict)
    rate: Rate | None = None
    rate_by_category: Mapping[str, Rate] = field(default_factory=dict)

    def rate_for(self, category: str | None) -> Rate | None:
        """The default per-key budget for this request (None for public routes)."""
        if category is not None and category in self.rate_by_category:
            return self.rate_by_category[category]
        return self.rate

    def required_grants(self, category: str | None) -> tuple[Grant, ...]:
        """The any-of grants needed for this request; () means none."""
        if self.by_category and category is not None:
            return self.by_category.get(category, self.requires or _CONTRACT)
        return self.requires


def _get(path: str, **kw: object) -> RoutePolicy:
    return RoutePolicy("GET", path, **kw)  # type: ignore[arg-type]


def _post(path: str, **kw: object) -> RoutePolicy:
    return RoutePolicy("POST", path, write=True, **kw)  # type: ignore[arg-type]


_ORDERS = Rate(10)
_ORDERS_BY_CATEGORY = {"spot": Rate(20)}
_QUERIES = Rate(50)
_ADMIN_READ = Rate(10)
_ADMIN_WRITE = Rate(5)
_CREATE = Rate(1)
_SLOW = Rate(5)

_TABLE: tuple[RoutePolicy, ...] = (
    # public market data (only the per-IP limit applies)
    _get("/v5/market/time", public=True),
    _get("/v5/market/instruments-info", public=True),
    _get("/v5/market/tickers", public=True),
    # key management (Bybit V5 "User" section)
    _get("/v5/user/query-api", rate=_ADMIN_READ),
    _get("/v5/user/sub-apikeys", master_only=True, rate=_ADMIN_READ),
    _get("/v5/user/query-sub-members", master_only=True, rate=_ADMIN_READ),
    _post("/v5/user/create-sub-member", master_only=True, requires=_WALLET_ADMIN, rate=_CREATE),
    _post("/v5/user/create-sub-api", master_only=True, requires=_WALLET_ADMIN, rate=_CREATE),
    _post("/v5/user/update-api", master_only=True, requires=_WALLET_ADMIN, rate=_ADMIN_WRITE),
    _post("/v5/user/delete-api", master_only=True, requires=_WALLET_ADMIN, rate=_ADMIN_WRITE),
    _post("/v5/user/update-sub-api", requires=_SUB_KEY_ADMIN, rate=_ADMIN_WRITE),
    _post("/v5/user/delete-sub-api", requires=_SUB_KEY_ADMIN, rate=_ADMIN_WRITE),
    # account and asset reads
    _get("/v5/account/info", rate=_QUERIES),
    _get("/v5/account/wallet-balance", rate=_QUERIES),
    _get("/v5/asset/coin/query-info", rate=_SLOW),
    _get("/v5/order/realtime", rate=_QUERIES),
    _get("/v5/order/history", rate=_QUERIES),
    _get("/v5/position/list", rate=_QUERIES),
    # trading and money movement
    _post(
        "/v5/order/create",
        by_category=_TRADE_BY_CATEGORY,
        requires=_CONTRACT,
        rate=_ORDERS,
        rate_by_category=_ORDERS_BY_CATEGORY,
    ),
    _post(
        "/v5/order/cancel",
        by_category=_TRADE_BY_CATEGORY,
        requires=_CONTRACT,
        rate=_ORDERS,
        rate_by_category=_ORDERS_BY_CATEGORY,
    ),
    _post(
        "/v5/asset/transfer/inter-transfer",
        requires=(("Wallet", "AccountTransfer"),),
        rate=Rate(60, 60_000),
    ),
    _post(
        "/v5/asset/withdraw/create",
        master_only=True,
        requires=(("Wallet", "Withdraw"),),
        rate=_SLOW,
    ),
)

#: (method, path) -> policy.
ROUTES: Mapping[tuple[str, str], RoutePolicy] = {(r.method, r.path): r for r in _TABLE}
_PATHS = frozenset(r.path for r in _TABLE)


def find_route(method: str, path: str) -> RoutePolicy | None:
    """The policy for (method, path), or None when the pair is not a route."""
    return ROUTES.get((method, path))


def check_rate_overrides(overrides: RateOverrides) -> None:
    """Raise ParameterError (10001) when an override names a route without a rate budget."""
    budgeted = {r.path for r in _TABLE if r.rate is not None}
    for route in overrides.limits:
        path = route.partition(":")[0]
        if path not in budgeted:
            names = ", ".join(sorted(budgeted))
            raise ParameterError(f"no rate-limited route {path}; choose one of: {names}")


def is_known_path(path: str) -> bool:
    """True when path is a route for some method (used to tell 10017 from a wrong method)."""
    return path in _PATHS
