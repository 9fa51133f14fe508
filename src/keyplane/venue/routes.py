"""HTTP routes of the demo venue: Bybit V5 market, account, order, position and asset endpoints.

Handlers are plain Starlette endpoints. They expect the auth middleware to have put the verified
caller into `scope["keyplane.auth"]` (an AuthContext; private routes only) and the parsed
parameters into `scope["keyplane.params"]` (GET: query str -> str; POST: the JSON object). They
find the VenueState at `request.app.state.venue` and the clock at `request.app.state.clock`, and
answer with the V5 envelope. Errors are raised as keyplane exceptions (10001, 110001, 110007).
Source of shapes: Bybit V5 API docs per endpoint; DESIGN.md §3.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keyplane.auth.context import AUTH_SCOPE_KEY, PARAMS_SCOPE_KEY, AuthContext
from keyplane.errors import KeyplaneError, ParameterError
from keyplane.http.envelope import reply
from keyplane.venue.balances import UNIFIED, wallet_account_wire
from keyplane.venue.instruments import COINS, fmt, parse_decimal
from keyplane.venue.orders import Order, OrderFilters, OrderRequest
from keyplane.venue.state import VenueState

__all__ = ["venue_routes"]

_T = TypeVar("_T")
_TRADED = ("spot", "linear")
_LINK_ID = re.compile(r"[A-Za-z0-9_-]{1,36}")
#: Bybit V5 orderStatus values; /v5/order/history lists only the closed ones among them.
_ORDER_STATUSES = (
    "Created", "New", "Rejected", "PartiallyFilled", "PartiallyFilledCanceled", "Filled",
    "Cancelled", "Untriggered", "Triggered", "Deactivated",
)  # fmt: skip


class _Params:
    """Typed access to one request's parameters; every failure is a ParameterError (10001)."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.raw = raw

    def text(self, name: str, *, required: bool = False) -> str | None:
        value = self.raw.get(name)
        if value is None or value == "":
            if required:
                raise ParameterError(f"missing required parameter '{name}'")
            return None
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ParameterError(f"{name} must be a string")
        return str(value)

    def need(self, name: str) -> str:
        value = self.text(name, required=True)
        assert value is not None
        return value

    def choice(self, name: str, options: Sequence[str], *, required: bool = False) -> str | None:
        value = self.text(name, required=required)
        if value is not None and value not in options:
            raise ParameterError(f"{name} must be one of {', '.join(options)}; got {value!r}")
        return value

    def decimal(self, name: str, *, required: bool = False) -> Decimal | None:
        value = self.raw.get(name)
        if value is None or value == "":
            if required:
                raise ParameterError(f"missing required parameter '{name}'")
            return None
        return parse_decimal(value, name)

    def positive(self, name: str) -> Decimal:
        value = self.decimal(name, required=True)
        assert value is not None
        if value <= 0:
            raise ParameterError(f"{name} must be a positive decimal, got {fmt(value)}")
        return value

    def integer(self, name: str, *, default: int, low: int, high: int) -> int:
        value = self.raw.get(name)
        if value is None or value == "":
            return default
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise ParameterError(f"{name} must be an integer")
        text = str(value).strip()
        if not re.fullmatch(r"-?\d{1,19}", text) or not low <= int(text) <= high:
            raise ParameterError(f"{name} must be an integer in [{low}, {high}], got {text!r}")
        return int(text)

    def flag(self, name: str) -> bool:
        value = self.raw.get(name)
        if value is None or value == "":
            return False
        if value in (True, 1, "true", "True", "1"):
            return True
        if value in (False, 0, "false", "False", "0"):
            return False
        raise ParameterError(f"{name} must be true or false")

    def page(self, items: list[_T], *, default: int, high: int) -> tuple[list[_T], str]:
        """items[cursor : cursor + limit] and the next cursor ("" on the last page)."""
        limit = self.integer("limit", default=default, low=1, high=high)
        cursor = self.text("cursor")
        if cursor is not None and not cursor.isdigit():
            raise ParameterError(f"cursor {cursor!r} is invalid")
        start = int(cursor or 0)
        end = start + limit
        return items[start:end], str(end) if end < len(items) else ""


async def _params(request: Request) -> _Params:
    raw = request.scope.get(PARAMS_SCOPE_KEY)
    if raw is None:  # not behind the auth middleware: parse here
        if request.method == "GET":
            raw = dict(request.query_params)
        else:
            body = await request.body()
            try:
                raw = json.loads(body) if body.strip() else {}
            except (ValueError, UnicodeDecodeError) as exc:
                raise ParameterError("request body is not valid JSON") from exc
            if not isinstance(raw, dict):
                raise ParameterError("request body must be a JSON object")
    return _Params(raw)


def _uid(request: Request) -> int:
    auth = request.scope.get(AUTH_SCOPE_KEY)
    if not isinstance(auth, AuthContext):  # wiring fault: private route without the middleware
        raise KeyplaneError()
    return auth.uid


def _venue(request: Request) -> tuple[VenueState, int]:
    state: VenueState = request.app.state.venue
    now_ms: int = request.app.state.clock.now_ms()
    return state, now_ms


# -- public market data ------------------------------------------------------------------------


async def market_time(request: Request) -> Response:
    """GET /v5/market/time -> {"timeSecond": str s, "timeNano": str ns} from the app clock."""
    now_ms = request.app.state.clock.now_ms()
    return reply(request, {"timeSecond": str(now_ms // 1000), "timeNano": str(now_ms * 10**6)})


async def instruments_info(request: Request) -> Response:
    """GET /v5/market/instruments-info?category=[&symbol=&baseCoin=&status=&limit=&cursor=]
    -> {"category", "list", "nextPageCursor"}; unknown categories answer an empty list."""
    p = await _params(request)
    state, _ = _venue(request)
    category = p.need("category")
    symbol, base, status = p.text("symbol"), p.text("baseCoin"), p.text("status")
    items = [
        i
        for i in state.book.in_category(category)
        if (symbol is None or i.symbol == symbol.upper())
        and (base is None or i.base_coin == base.upper())
        and (status is None or status == "Trading")
    ]
    page, cursor = p.page(items, default=500, high=1000)
    listed = [i.to_wire() for i in page]
    return reply(request, {"category": category, "list": listed, "nextPageCursor": cursor})


async def tickers(request: Request) -> Response:
    """GET /v5/market/tickers?category=[&symbol=] -> {"category", "list"} at the fixed prices."""
    p = await _params(request)
    state, _ = _venue(request)
    category, symbol = p.need("category"), p.text("symbol")
    items = state.book.in_category(category)
    if symbol is not None:
        items = [i for i in items if i.symbol == symbol]
        if not items and category in _TRADED:
            raise ParameterError(f"Not supported symbols: {symbol}")
    return reply(request, {"category": category, "list": [i.ticker() for i in items]})


# -- private reads -----------------------------------------------------------------------------


async def account_info(request: Request) -> Response:
    """GET /v5/account/info -> unified-account status; updatedTime: ms string."""
    state, now_ms = _venue(request)
    created = state.account_created_ms(_uid(request), now_ms)
    return reply(
        request,
        {
            "unifiedMarginStatus": 4,
            "marginMode": "REGULAR_MARGIN",
            "isMasterTrader": False,
            "spotHedgingStatus": "OFF",
            "updatedTime": str(created),
            "dcpStatus": "OFF",
            "timeWindow": 10,
            "smpGroup": 0,
        },
    )


async def wallet_balance(request: Request) -> Response:
    """GET /v5/account/wallet-balance?accountType=UNIFIED[&coin=BTC,USDT] -> {"list": [account]}
    with USD totals over every coin held and coin[] limited to the coins asked for."""
    p = await _params(request)
    if p.need("accountType") != UNIFIED:
        raise ParameterError("accountType only support UNIFIED")
    wanted = p.text("coin")
    coins = [c.strip().upper() for c in wanted.split(",") if c.strip()] if wanted else None
    state, now_ms = _venue(request)
    balances = state.wallet(_uid(request), now_ms, coins)

    account = wallet_account_wire(balances, coins)
    return reply(request, {"list": [account]})


async def coin_query_info(request: Request) -> Response:
    """GET /v5/asset/coin/query-info[?coin=] -> {"rows": [coin with chains]}."""
    p = await _params(request)
    _uid(request)
    coin = p.text("coin")
    rows = [c.to_wire() for c in COINS.values() if coin is None or c.coin == coin.upper()]
    return reply(request, {"rows": rows})


def _order_filters(p: _Params) -> OrderFilters:
    return {
        "symbol": p.text("symbol"),
        "order_id": p.text("orderId"),
        "order_link_id": p.text("orderLinkId"),
    }


def _order_page(request: Request, p: _Params, category: str, found: list[Order]) -> Response:
    page, cursor = p.page(found, default=20, high=50)
    listed = [o.to_wire() for o in page]
    return reply(request, {"category": category, "list": listed, "nextPageCursor": cursor})


async def order_realtime(request: Request) -> Response:
    """GET /v5/order/realtime?category=[&symbol=&orderId=&orderLinkId=&openOnly=&limit=&cursor=]
    -> {"category", "list", "nextPageCursor"}: the caller's orders only, newest first."""
    p = await _params(request)
    category = p.need("category")
    open_only = p.integer("openOnly", default=0, low=0, high=2) == 0
    state, now_ms = _venue(request)
    uid = _uid(request)
    found = state.orders(uid, category, now_ms, open_only=open_only, **_order_filters(p))
    return _order_page(request, p, category, found)


async def order_history(request: Request) -> Response:
    """GET /v5/order/history?category=[&symbol=&orderId=&orderLinkId=&orderStatus=&limit=
    &cursor=] -> {"category", "list", "nextPageCursor"}: the caller's closed orders (Filled,
    Cancelled, Rejected), newest first, items as in /v5/order/realtime; limit 1..50 (20)."""
    p = await _params(request)
    category = p.need("category")
    status = p.choice("orderStatus", _ORDER_STATUSES)
    state, now_ms = _venue(request)
    uid = _uid(request)
    found = state.order_history(uid, category, now_ms, status=status, **_order_filters(p))
    return _order_page(request, p, category, found)


async def position_list(request: Request) -> Response:
    """GET /v5/position/list?category=linear[&symbol=] -> {"category", "list", "nextPageCursor"};
    other categories answer an empty list."""
    p = await _params(request)
    category, symbol = p.need("category"), p.text("symbol")
    state, now_ms = _venue(request)
    uid = _uid(request)
    found = state.positions(uid, now_ms, symbol) if category == "linear" else []
    page, cursor = p.page(found, default=20, high=200)
    lev = state.config.leverage
    listed = []
    for pos in page:
        inst = state.book.find("linear", pos.symbol)
        listed.append(pos.to_wire(inst.price if inst else pos.avg_price, lev))
    return reply(request, {"category": category, "list": listed, "nextPageCursor": cursor})


# -- private writes ----------------------------------------------------------------------------


def _trade_category(p: _Params) -> str:
    category = p.need("category")
    if category not in _TRADED:
        raise ParameterError(
            f"category {category!r} is not traded on the demo venue: use spot or linear"
        )
    return category


async def order_create(request: Request) -> Response:
    """POST /v5/order/create {category, symbol, side, orderType, qty, price?, orderLinkId?,
    marketUnit?, timeInForce?, reduceOnly?} -> {"orderId", "orderLinkId"}."""
    p = await _params(request)
    category = _trade_category(p)
    link_id = p.text("orderLinkId") or ""
    if link_id and not _LINK_ID.fullmatch(link_id):
        raise ParameterError("orderLinkId must be 1-36 letters, digits, '-' or '_'")
    if p.integer("positionIdx", default=0, low=0, high=2) != 0:
        raise ParameterError("positionIdx must be 0: the demo venue trades in one-way mode")
    order_type = p.choice("orderType", ("Market", "Limit"), required=True)
    req = OrderRequest(
        category=category,
        symbol=p.need("symbol"),
        side=p.choice("side", ("Buy", "Sell"), required=True) or "",
        order_type=order_type or "",
        qty=p.positive("qty"),
        price=p.positive("price") if order_type == "Limit" and "price" in p.raw else None,
        order_link_id=link_id,
        market_unit=p.choice("marketUnit", ("baseCoin", "quoteCoin")),
        time_in_force=p.choice("timeInForce", ("GTC", "IOC", "FOK", "PostOnly")),
        reduce_only=p.flag("reduceOnly"),
    )
    state, now_ms = _venue(request)
    order = state.place_order(_uid(request), req, now_ms)
    return reply(request, {"orderId": order.order_id, "orderLinkId": order.order_link_id})


async def order_cancel(request: Request) -> Response:
    """POST /v5/order/cancel {category, symbol, orderId | orderLinkId} -> {"orderId",
    "orderLinkId"}; 110001 when no such open order of the caller exists."""
    p = await _params(request)
    category, symbol = _trade_category(p), p.need("symbol")
    order_id, link_id = p.text("orderId"), p.text("orderLinkId")
    if order_id is None and link_id is None:
        raise ParameterError("orderId or orderLinkId is required")
    state, now_ms = _venue(request)
    order = state.cancel_order(
        _uid(request), category, symbol, now_ms, order_id=order_id, order_link_id=link_id
    )
    return reply(request, {"orderId": order.order_id, "orderLinkId": order.order_link_id})


async def inter_transfer(request: Request) -> Response:
    """POST /v5/asset/transfer/inter-transfer {transferId (UUID), coin, amount,
    fromAccountType, toAccountType} -> {"transferId", "status": "SUCCESS"}."""
    p = await _params(request)
    transfer_id = p.need("transferId")
    try:
        uuid.UUID(transfer_id)
    except ValueError as exc:
        raise ParameterError("transferId must be a UUID") from exc
    state, now_ms = _venue(request)
    record = state.transfer(
        _uid(request),
        now_ms,
        transfer_id=transfer_id,
        coin=p.need("coin").upper(),
        amount=p.positive("amount"),
        from_account_type=p.need("fromAccountType"),
        to_account_type=p.need("toAccountType"),
    )
    return reply(request, {"transferId": record.transfer_id, "status": "SUCCESS"})


async def withdraw_create(request: Request) -> Response:
    """POST /v5/asset/withdraw/create {coin, chain?, address, amount, timestamp (ms), tag?,
    forceChain?, accountType?, feeType?} -> {"id": numeric str}; debits amount (+ withdrawFee
    unless feeType 1)."""
    p = await _params(request)
    coin, address = p.need("coin").upper(), p.need("address").strip()
    if not address:
        raise ParameterError("missing required parameter 'address'")
    p.need("timestamp")
    p.integer("timestamp", default=0, low=1, high=2**63 - 1)
    p.integer("forceChain", default=0, low=0, high=2)
    fee_type = p.integer("feeType", default=0, low=0, high=1)
    state, now_ms = _venue(request)
    record = state.withdraw(
        _uid(request),
        now_ms,
        coin=coin,
        chain=p.text("chain"),
        address=address,
        amount=p.positive("amount"),
        account_type=p.text("accountType"),
        fee_included=fee_type == 1,
    )
    return reply(request, {"id": record.id})


def venue_routes() -> list[Route]:
    """The demo venue's Starlette routes (Bybit V5 paths); mount them behind the auth middleware
    and set app.state.venue (VenueState) and app.state.clock (keyplane Clock)."""
    get, post = ["GET"], ["POST"]
    return [
        Route("/v5/market/time", market_time, methods=get),
        Route("/v5/market/instruments-info", instruments_info, methods=get),
        Route("/v5/market/tickers", tickers, methods=get),
        Route("/v5/account/info", account_info, methods=get),
        Route("/v5/account/wallet-balance", wallet_balance, methods=get),
        Route("/v5/asset/coin/query-info", coin_query_info, methods=get),
        Route("/v5/order/realtime", order_realtime, methods=get),
        Route("/v5/order/history", order_history, methods=get),
        Route("/v5/position/list", position_list, methods=get),
        Route("/v5/order/create", order_create, methods=post),
        Route("/v5/order/cancel", order_cancel, methods=post),
        Route("/v5/asset/transfer/inter-transfer", inter_transfer, methods=post),
        Route("/v5/asset/withdraw/create", withdraw_create, methods=post),
    ]
