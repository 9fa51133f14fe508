"""The route table: for each V5 path, who may call it and with which permission.

Source: Bybit V5 API docs, per-endpoint "Permission" notes; summarised in DESIGN.md §3.
A route's requirement is any-of a set of (group, value) grants, chosen by the request's
`category` where the route trades several product lines (order create/cancel).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["ROUTES", "Grant", "RoutePolicy", "find_route", "is_known_path"]

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
    """

    method: str
    path: str
    public: bool = False
    write: bool = False
    master_only: bool = False
    requires: tuple[Grant, ...] = ()
    by_category: Mapping[str, tuple[Grant, ...]] = field(default_factory=dict)

    def required_grants(self, category: str | None) -> tuple[Grant, ...]:
        """The any-of grants needed for this request; () means none."""
        if self.by_category and category is not None:
            return self.by_category.get(category, self.requires or _CONTRACT)
        return self.requires


def _get(path: str, **kw: object) -> RoutePolicy:
    return RoutePolicy("GET", path, **kw)  # type: ignore[arg-type]


def _post(path: str, **kw: object) -> RoutePolicy:
    return RoutePolicy("POST", path, write=True, **kw)  # type: ignore[arg-type]


_TABLE: tuple[RoutePolicy, ...] = (
    # public market data
    _get("/v5/market/time", public=True),
    _get("/v5/market/instruments-info", public=True),
    _get("/v5/market/tickers", public=True),
    # key management (Bybit V5 "User" section)
    _get("/v5/user/query-api"),
    _get("/v5/user/sub-apikeys", master_only=True),
    _get("/v5/user/query-sub-members", master_only=True),
    _post("/v5/user/create-sub-member", master_only=True, requires=_WALLET_ADMIN),
    _post("/v5/user/create-sub-api", master_only=True, requires=_WALLET_ADMIN),
    _post("/v5/user/update-api", master_only=True, requires=_WALLET_ADMIN),
    _post("/v5/user/delete-api", master_only=True, requires=_WALLET_ADMIN),
    _post("/v5/user/update-sub-api", requires=_SUB_KEY_ADMIN),
    _post("/v5/user/delete-sub-api", requires=_SUB_KEY_ADMIN),
    # account and asset reads
    _get("/v5/account/info"),
    _get("/v5/account/wallet-balance"),
    _get("/v5/asset/coin/query-info"),
    _get("/v5/order/realtime"),
    _get("/v5/order/history"),
    _get("/v5/position/list"),
    # trading and money movement
    _post("/v5/order/create", by_category=_TRADE_BY_CATEGORY, requires=_CONTRACT),
    _post("/v5/order/cancel", by_category=_TRADE_BY_CATEGORY, requires=_CONTRACT),
    _post("/v5/asset/transfer/inter-transfer", requires=(("Wallet", "AccountTransfer"),)),
    _post("/v5/asset/withdraw/create", master_only=True, requires=(("Wallet", "Withdraw"),)),
)

#: (method, path) -> policy.
ROUTES: Mapping[tuple[str, str], RoutePolicy] = {(r.method, r.path): r for r in _TABLE}
_PATHS = frozenset(r.path for r in _TABLE)


def find_route(method: str, path: str) -> RoutePolicy | None:
    """The policy for (method, path), or None when the pair is not a route."""
    return ROUTES.get((method, path))


def is_known_path(path: str) -> bool:
    """True when path is a route for some method (used to tell 10017 from a wrong method)."""
    return path in _PATHS
