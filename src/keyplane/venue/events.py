"""Account events of the demo venue, for the private WebSocket (Bybit V5 private topics).

VenueState publishes a batch of events per account (uid) after every change that a Bybit
private stream would report: an order placed, filled or cancelled (`order`), a fill
(`execution`), a balance change (`wallet`) and a linear position change (`position`).
Listeners are called on the thread that made the change, after the venue lock is released,
and must not block (the WebSocket hub hands the batch over to its event loop).

Wire renderings follow Bybit V5 WebSocket "Order", "Execution", "Wallet" and "Position" push
data: numbers as strings, times as ms-since-epoch strings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import structlog

from keyplane.venue.balances import CoinBalance, wallet_account_wire
from keyplane.venue.instruments import fmt
from keyplane.venue.orders import Order
from keyplane.venue.positions import Position

__all__ = [
    "ExecutionEvent",
    "OrderEvent",
    "PositionEvent",
    "VenueEvent",
    "VenueEvents",
    "VenueListener",
    "WalletEvent",
]

log = structlog.get_logger("keyplane.venue")

_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class OrderEvent:
    """An order was placed, filled or cancelled; order is a copy taken under the venue lock."""

    order: Order

    topic = "order"

    @property
    def category(self) -> str:
        """spot or linear."""
        return self.order.category

    def to_wire(self) -> dict[str, Any]:
        """One item of the `order` push's data (the REST order item plus `category`)."""
        return {"category": self.order.category, **self.order.to_wire()}


@dataclass(frozen=True, slots=True)
class ExecutionEvent:
    """A fill of order: qty (base coin) at price (quote per base) at time_ms (ms since epoch)."""

    order: Order
    exec_id: str
    qty: Decimal
    price: Decimal
    time_ms: int

    topic = "execution"

    @property
    def category(self) -> str:
        """spot or linear."""
        return self.order.category

    def to_wire(self) -> dict[str, Any]:
        """One item of the `execution` push's data (fees are 0 on the demo venue)."""
        o = self.order
        return {
            "category": o.category,
            "symbol": o.symbol,
            "isLeverage": "0" if o.category == "spot" else "",
            "orderId": o.order_id,
            "orderLinkId": o.order_link_id,
            "side": o.side,
            "orderPrice": fmt(o.price),
            "orderQty": fmt(o.qty),
            "leavesQty": fmt(o.qty - o.cum_exec_qty if o.is_open else _ZERO),
            "createType": "CreateByUser",
            "orderType": o.order_type,
            "stopOrderType": "",
            "execFee": "0",
            "execId": self.exec_id,
            "execPrice": fmt(self.price),
            "execQty": fmt(self.qty),
            "execType": "Trade",
            "execValue": fmt(self.qty * self.price),
            "execTime": str(self.time_ms),
            "isMaker": False,
            "feeRate": "0",
            "tradeIv": "",
            "markIv": "",
            "markPrice": fmt(self.price),
            "indexPrice": "",
            "underlyingPrice": "",
            "blockTradeId": "",
            "closedSize": "",
            "seq": 0,
        }


@dataclass(frozen=True, slots=True)
class WalletEvent:
    """The account's UNIFIED wallet after a change (every coin held)."""

    balances: tuple[CoinBalance, ...]

    topic = "wallet"
    category = ""

    def to_wire(self) -> dict[str, Any]:
        """One item of the `wallet` push's data: the account entry as in
        `/v5/account/wallet-balance` (USD totals, coin[])."""

        return wallet_account_wire(self.balances)


@dataclass(frozen=True, slots=True)
class PositionEvent:
    """A linear position after a fill; mark is the mark price, leverage the venue's."""

    position: Position
    mark: Decimal
    leverage: Decimal

    topic = "position"
    category = "linear"

    def to_wire(self) -> dict[str, Any]:
        """One item of the `position` push's data (the REST position item plus `category`)."""
        return {"category": "linear", **self.position.to_wire(self.mark, self.leverage)}


VenueEvent = OrderEvent | ExecutionEvent | WalletEvent | PositionEvent
#: listener(uid, events): called after the venue lock is released; must not block or raise.
VenueListener = Callable[[int, Sequence[VenueEvent]], None]


class VenueEvents:
    """The listeners of one venue; publish() calls each, logging (never raising) faults."""

    def __init__(self) -> None:
        self._listeners: list[VenueListener] = []

    def add_listener(self, listener: VenueListener) -> None:
        """Call listener(uid, events) after each change of an account."""
        self._listeners.append(listener)

    def publish(self, uid: int, events: Sequence[VenueEvent]) -> None:
        """Hand events of uid to every listener; a failing listener is logged and skipped."""
        if not events:
            return
        for listener in self._listeners:
            try:
                listener(uid, events)
            except Exception:
                log.warning("venue event listener failed", exc_info=True)
