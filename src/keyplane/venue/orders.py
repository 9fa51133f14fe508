"""Orders of the demo venue: the order model, its wire rendering, and the per-account order book.

The book stores every order by id and, per account, the order sequence (oldest first), the
resting (open) orders and the orderLinkIds used; it cancels resting orders, lists orders and
reports what resting orders hold. Placement lives in `keyplane.venue.matching`. The wire
rendering follows Bybit V5 "Get Open & Closed Orders" and "Get Order History". Not thread-safe
on its own: VenueState holds its lock around every call.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, TypedDict

from keyplane.errors import KeyplaneError
from keyplane.venue.balances import Holds
from keyplane.venue.instruments import InstrumentBook, fmt

__all__ = ["Order", "OrderBook", "OrderFilters", "OrderNotFoundError", "OrderRequest"]

_ZERO = Decimal(0)


class OrderNotFoundError(KeyplaneError):
    """Unknown, foreign, filled or cancelled order id (retCode 110001, as Bybit's order API)."""

    ret_code = 110001
    default_msg = "Order does not exist."


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """A parsed `POST /v5/order/create`; qty in base coin unless a spot market order's
    market_unit (or a spot market Buy's default) says quote coin; price in quote coin."""

    category: str
    symbol: str
    side: str
    order_type: str
    qty: Decimal
    price: Decimal | None = None
    order_link_id: str = ""
    market_unit: str | None = None
    time_in_force: str | None = None
    reduce_only: bool = False


@dataclass(slots=True)
class Order:
    """One order; created_ms/updated_ms in ms since epoch; lock_amount of lock_coin is held
    while a spot order rests; order_im (settle coin) is held while a linear order rests."""

    order_id: str
    order_link_id: str
    uid: int
    category: str
    symbol: str
    side: str
    order_type: str
    qty: Decimal
    price: Decimal
    time_in_force: str
    market_unit: str
    created_ms: int
    updated_ms: int
    reduce_only: bool = False
    status: str = "New"
    cum_exec_qty: Decimal = _ZERO
    cum_exec_value: Decimal = _ZERO
    avg_price: Decimal = _ZERO
    cancel_type: str = "UNKNOWN"
    reject_reason: str = "EC_NoError"
    lock_coin: str = ""
    lock_amount: Decimal = _ZERO
    order_im: Decimal = _ZERO

    @property
    def is_open(self) -> bool:
        """True while the order rests (status New)."""
        return self.status == "New"

    def fill(self, qty: Decimal, price: Decimal, now_ms: int) -> None:
        """Mark filled in full: qty in base coin at price (quote per base)."""
        self.cum_exec_qty, self.cum_exec_value, self.avg_price = qty, qty * price, price
        self.status, self.updated_ms = "Filled", now_ms
        self.lock_amount = self.order_im = _ZERO

    def cancel(self, now_ms: int, cancel_type: str, reason: str = "EC_NoError") -> None:
        """Mark cancelled and release whatever it held."""
        self.status, self.cancel_type, self.reject_reason = "Cancelled", cancel_type, reason
        self.updated_ms = now_ms
        self.lock_amount = self.order_im = _ZERO

    def to_wire(self) -> dict[str, Any]:
        """One item of `GET /v5/order/realtime` or `/v5/order/history` (numbers as strings,
        times as ms strings)."""
        leaves = self.qty - self.cum_exec_qty if self.is_open else _ZERO
        wire: dict[str, Any] = {
            "orderId": self.order_id,
            "orderLinkId": self.order_link_id,
            "blockTradeId": "",
            "symbol": self.symbol,
            "price": fmt(self.price),
            "qty": fmt(self.qty),
            "side": self.side,
            "isLeverage": "0" if self.category == "spot" else "",
            "positionIdx": 0,
            "orderStatus": self.status,
            "createType": "CreateByUser",
            "cancelType": self.cancel_type,
            "rejectReason": self.reject_reason,
            "avgPrice": fmt(self.avg_price),
            "leavesQty": fmt(leaves),
            "leavesValue": fmt(leaves * self.price),
            "cumExecQty": fmt(self.cum_exec_qty),
            "cumExecValue": fmt(self.cum_exec_value),
            "cumExecFee": "0",
            "cumFeeDetail": {},
            "timeInForce": self.time_in_force,
            "orderType": self.order_type,
            "stopOrderType": "",
            "orderIv": "",
            "triggerPrice": "0",
            "takeProfit": "0",
            "stopLoss": "0",
            "tpTriggerBy": "",
            "slTriggerBy": "",
            "triggerDirection": 0,
            "triggerBy": "",
            "lastPriceOnCreated": "",
            "reduceOnly": self.reduce_only,
            "closeOnTrigger": False,
            "placeType": "",
            "smpType": "None",
            "smpGroup": 0,
            "smpOrderId": "",
            "createdTime": str(self.created_ms),
            "updatedTime": str(self.updated_ms),
        }
        if self.category == "spot":
            wire["marketUnit"] = self.market_unit
        else:  # ccxt tells contract orders from spot ones by the presence of tpslMode
            wire.update(tpslMode="UNKNOWN", tpLimitPrice="", slLimitPrice="")
        return wire


class OrderFilters(TypedDict, total=False):
    """Exact-match narrowing of an order listing; a missing, None or "" value does not narrow."""

    symbol: str | None
    order_id: str | None
    order_link_id: str | None


@dataclass(slots=True)
class _Index:
    order_ids: list[str] = field(default_factory=list)
    open_ids: dict[str, None] = field(default_factory=dict)
    link_ids: set[str] = field(default_factory=set)


class OrderBook:
    """Every account's orders. book resolves an order's instrument (for its settle coin)."""

    def __init__(self, book: InstrumentBook) -> None:
        self._book = book
        self._orders: dict[str, Order] = {}
        self._by_uid: dict[int, _Index] = {}

    def _index(self, uid: int) -> _Index:
        return self._by_uid.setdefault(uid, _Index())

    def link_id_taken(self, uid: int, order_link_id: str) -> bool:
        """True when uid already placed an order with this orderLinkId."""
        return order_link_id in self._index(uid).link_ids

    def add(self, order: Order) -> None:
        """Record a placed order of order.uid (resting when order.is_open)."""
        index = self._index(order.uid)
        self._orders[order.order_id] = order
        index.order_ids.append(order.order_id)
        if order.order_link_id:
            index.link_ids.add(order.order_link_id)
        if order.is_open:
            index.open_ids[order.order_id] = None

    def cancel(self, uid: int, category: str, now_ms: int, filters: OrderFilters) -> Order:
        """Cancel uid's oldest resting order of category matching filters at now_ms (ms since
        epoch), releasing what it held; filters["symbol"] must match exactly. Returns a copy;
        raises OrderNotFoundError (110001) when no resting order matches."""
        index = self._index(uid)
        for oid in index.open_ids:
            order = self._orders[oid]
            if order.symbol == filters.get("symbol") and _matches(order, category, filters):
                order.cancel(now_ms, "CancelByUser")
                del index.open_ids[oid]
                return replace(order)
        raise OrderNotFoundError()

    def select(
        self,
        uid: int,
        category: str,
        filters: OrderFilters,
        *,
        open_only: bool | None = None,
        status: str | None = None,
    ) -> list[Order]:
        """Copies of uid's orders of category matching filters, newest first; open_only True
        keeps resting orders, False closed ones, None both; status keeps orders whose
        orderStatus is exactly that."""
        newest_first = (self._orders[oid] for oid in reversed(self._index(uid).order_ids))
        return [
            replace(order)
            for order in newest_first
            if _matches(order, category, filters)
            and (open_only is None or order.is_open == open_only)
            and (status is None or order.status == status)
        ]

    def holds(self, uid: int, coin: str) -> Holds:
        """What uid's resting orders hold of coin: spot locks and linear order margin."""
        locked = order_im = _ZERO
        for oid in self._index(uid).open_ids:
            order = self._orders[oid]
            if order.lock_coin == coin:
                locked += order.lock_amount
            inst = self._book.find(order.category, order.symbol)
            if order.order_im and inst is not None and inst.settle_coin == coin:
                order_im += order.order_im
        return Holds(locked=locked, order_im=order_im)


def _matches(order: Order, category: str, filters: OrderFilters) -> bool:
    symbol, order_id = filters.get("symbol"), filters.get("order_id")
    order_link_id = filters.get("order_link_id")
    return (
        order.category == category
        and (not symbol or order.symbol == symbol)
        and (not order_id or order.order_id == order_id)
        and (not order_link_id or order.order_link_id == order_link_id)
    )
