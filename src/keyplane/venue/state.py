"""The demo venue's state: one thread-safe facade over balances, orders, positions and movements.

Everything is in memory and guarded by one lock; amounts are Decimal throughout. An account
(uid) is funded with VenueConfig.starting_balances the first time it is seen, like Bybit's demo
trading. Prices are the instruments' fixed prices, so a market order always fills in full.
The parts: `balances` (Wallets), `orders` (OrderBook), `positions` (Positions), `matching`
(placement) and `movements` (transfers, withdrawals); only VenueState takes the lock.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Unpack

from keyplane.venue.balances import CoinBalance, Holds, Wallets
from keyplane.venue.events import (
    ExecutionEvent,
    OrderEvent,
    PositionEvent,
    VenueEvent,
    VenueEvents,
    WalletEvent,
)
from keyplane.venue.instruments import COINS, Instrument, InstrumentBook, default_instruments
from keyplane.venue.matching import MatchingEngine
from keyplane.venue.movements import Movements, Transfer, Withdrawal, WithdrawRequest
from keyplane.venue.orders import Order, OrderBook, OrderFilters, OrderRequest
from keyplane.venue.positions import Position, Positions

__all__ = ["VenueConfig", "VenueState"]


def _default_balances() -> dict[str, Decimal]:
    return {"USDT": Decimal("100000"), "BTC": Decimal("1")}


@dataclass
class VenueConfig:
    """Venue setup: starting_balances (coin -> amount) funds each new account's UNIFIED wallet;
    instruments are the tradable symbols; leverage is the fixed linear leverage (IM = value/it)."""

    starting_balances: dict[str, Decimal] = field(default_factory=_default_balances)
    instruments: tuple[Instrument, ...] = field(default_factory=default_instruments)
    leverage: Decimal = Decimal(10)


class VenueState:
    """The whole paper venue in memory; every public method is thread-safe.

    uid: int, the account; now_ms: int, ms since epoch (from the app's clock). Methods return
    copies, never live records. Raises ParameterError (10001), InsufficientBalanceError
    (110007) or OrderNotFoundError (110001) as documented per method.
    """

    def __init__(self, config: VenueConfig | None = None) -> None:
        self.config = config or VenueConfig()
        self.book = InstrumentBook(self.config.instruments)
        coins = set(COINS) | set(self.config.starting_balances)
        for inst in self.config.instruments:
            coins.update((inst.base_coin, inst.quote_coin))
        self.known_coins = frozenset(coins)
        self._lock = threading.RLock()
        leverage = self.config.leverage
        self._wallets = Wallets(self.config.starting_balances, self.book.usd_price, self._holds)
        self._orders = OrderBook(self.book)
        self._positions = Positions(self.book, leverage)
        self._matching = MatchingEngine(
            self.book, leverage, self._wallets, self._orders, self._positions
        )
        self._movements = Movements(self._wallets, self.known_coins)
        #: account events for the private WebSocket (keyplane.venue.events)
        self.events = VenueEvents()

    def _holds(self, uid: int, coin: str) -> Holds:
        return self._orders.holds(uid, coin) + self._positions.holds(uid, coin)

    # -- accounts and balances ---------------------------------------------------------------

    def account_created_ms(self, uid: int, now_ms: int) -> int:
        """When the account was first seen (and funded), ms since epoch."""
        with self._lock:
            return self._wallets.open(uid, now_ms)

    def wallet(self, uid: int, now_ms: int, coins: list[str] | None = None) -> list[CoinBalance]:
        """The UNIFIED wallet: one CoinBalance per coin the account holds, in the order the
        coins were first held, then one zero-filled entry per coin in coins not held."""
        with self._lock:
            return self._wallets.wallet(uid, now_ms, coins)

    # -- orders and positions ----------------------------------------------------------------

    def place_order(self, uid: int, req: OrderRequest, now_ms: int) -> Order:
        """Validate and place an order (Bybit V5 "Place Order"), filling it at once when it
        can; returns the order. Raises ParameterError (unknown symbol, qty/price outside the
        instrument's filters, duplicate orderLinkId: "OrderLinkedID is duplicate") or
        InsufficientBalanceError."""
        with self._lock:
            order = self._matching.place(uid, req, now_ms)
            events = self._order_events(order, now_ms)
        self.events.publish(uid, events)
        return order

    def _order_events(self, order: Order, now_ms: int) -> list[VenueEvent]:
        """The private-stream events of a placed or cancelled order (call under the lock)."""
        events: list[VenueEvent] = [OrderEvent(order)]
        if order.status == "Filled":
            fill = ExecutionEvent(
                order, str(uuid.uuid4()), order.cum_exec_qty, order.avg_price, now_ms
            )
            events.append(fill)
            inst = self.book.find("linear", order.symbol) if order.category == "linear" else None
            if inst is not None:
                lev = self.config.leverage
                pos = self._positions.select(order.uid, now_ms, order.symbol)
                events += [PositionEvent(p, inst.price, lev) for p in pos]
        if order.status != "New" or order.lock_amount or order.order_im:
            wallet = self._wallets.wallet(order.uid, now_ms)
            events.append(WalletEvent(tuple(wallet)))
        return events

    def cancel_order(
        self,
        uid: int,
        category: str,
        symbol: str,
        now_ms: int,
        *,
        order_id: str | None = None,
        order_link_id: str | None = None,
    ) -> Order:
        """Cancel a resting order of uid by orderId or orderLinkId and release what it held.

        Raises OrderNotFoundError (110001) when no such open order of this account, category
        and symbol exists (unknown, another account's, already filled or cancelled)."""
        with self._lock:
            self._wallets.open(uid, now_ms)
            filters: OrderFilters = {
                "symbol": symbol,
                "order_id": order_id,
                "order_link_id": order_link_id,
            }
            order = self._orders.cancel(uid, category, now_ms, filters)
            events = self._order_events(order, now_ms)
        self.events.publish(uid, events)
        return order

    def orders(
        self,
        uid: int,
        category: str,
        now_ms: int,
        *,
        open_only: bool = True,
        **filters: Unpack[OrderFilters],
    ) -> list[Order]:
        """uid's orders of one category, newest first; filters: symbol, order_id,
        order_link_id. With order_id or order_link_id: that order whatever its status; else
        open orders (open_only) or closed ones."""
        by_id = bool(filters.get("order_id") or filters.get("order_link_id"))
        return self._select(uid, category, now_ms, filters, None if by_id else open_only)

    def order_history(
        self,
        uid: int,
        category: str,
        now_ms: int,
        *,
        status: str | None = None,
        **filters: Unpack[OrderFilters],
    ) -> list[Order]:
        """uid's closed orders of one category (Filled, Cancelled, Rejected), newest first
        (Bybit V5 "Get Order History"); filters (symbol, order_id, order_link_id) and status
        (an exact orderStatus) narrow them. An open order is never listed, even by id."""
        return self._select(uid, category, now_ms, filters, False, status)

    def _select(
        self,
        uid: int,
        category: str,
        now_ms: int,
        filters: OrderFilters,
        open_only: bool | None,
        status: str | None = None,
    ) -> list[Order]:
        with self._lock:
            self._wallets.open(uid, now_ms)
            return self._orders.select(uid, category, filters, open_only=open_only, status=status)

    def positions(self, uid: int, now_ms: int, symbol: str | None = None) -> list[Position]:
        """uid's open linear positions (or, with symbol, that symbol's, flat when none)."""
        with self._lock:
            self._wallets.open(uid, now_ms)
            return self._positions.select(uid, now_ms, symbol)

    # -- money movement ----------------------------------------------------------------------

    def transfer(
        self,
        uid: int,
        now_ms: int,
        *,
        transfer_id: str,
        coin: str,
        amount: Decimal,
        from_account_type: str,
        to_account_type: str,
    ) -> Transfer:
        """Move amount of coin between the UNIFIED and FUND wallets of uid (paper).

        Raises ParameterError (unknown account type or coin, same account, amount <= 0,
        duplicate transferId) or InsufficientBalanceError."""
        record = Transfer(
            transfer_id, uid, coin, amount, from_account_type, to_account_type, now_ms
        )
        with self._lock:
            return self._movements.transfer(record)

    def withdraw(
        self,
        uid: int,
        now_ms: int,
        *,
        coin: str,
        chain: str | None,
        address: str,
        amount: Decimal,
        account_type: str | None = None,
        fee_included: bool = False,
    ) -> Withdrawal:
        """Record a paper withdrawal and debit it (Bybit V5 "Withdraw").

        amount: coin received by the address; the chain's withdrawFee is debited on top unless
        fee_included (feeType 1). account_type: "FUND", "FUND,UTA", or UNIFIED for None / "UTA" /
        "UNIFIED" / "SPOT". Raises ParameterError (unknown coin or chain, amount below withdrawMin
        or finer than minAccuracy) or InsufficientBalanceError."""
        req = WithdrawRequest(coin, chain, address, amount, account_type, fee_included)
        with self._lock:
            return self._movements.withdraw(uid, now_ms, req)

    def withdrawals(self, uid: int) -> list[Withdrawal]:
        """uid's paper withdrawals, oldest first."""
        with self._lock:
            return self._movements.withdrawals(uid)

    def transfers(self, uid: int) -> list[Transfer]:
        """uid's paper transfers, oldest first."""
        with self._lock:
            return self._movements.transfers(uid)
