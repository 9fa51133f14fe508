"""The demo venue's state: per-account balances, orders, linear positions, transfers, withdrawals.

Everything is in memory and guarded by one lock; amounts are Decimal throughout. An account
(uid) is funded with VenueConfig.starting_balances the first time it is seen, like Bybit's demo
trading. Prices are the instruments' fixed prices, so a market order always fills in full.
Wire renderings of orders and positions follow Bybit V5 "Get Open & Closed Orders" and
"Get Position Info".
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from keyplane.errors import InsufficientBalanceError, KeyplaneError, ParameterError
from keyplane.venue.instruments import (
    COINS,
    Instrument,
    InstrumentBook,
    default_instruments,
    fmt,
    round_down,
)

__all__ = [
    "UNIFIED",
    "CoinBalance",
    "Order",
    "OrderNotFoundError",
    "OrderRequest",
    "Position",
    "Transfer",
    "VenueConfig",
    "VenueState",
    "Withdrawal",
]

UNIFIED = "UNIFIED"
FUND = "FUND"
_ZERO = Decimal(0)
_MM_RATE = Decimal("0.005")


class OrderNotFoundError(KeyplaneError):
    """Unknown, foreign, filled or cancelled order id (retCode 110001, as Bybit's order API)."""

    ret_code = 110001
    default_msg = "Order does not exist."


def _default_balances() -> dict[str, Decimal]:
    return {"USDT": Decimal("100000"), "BTC": Decimal("1")}


@dataclass
class VenueConfig:
    """Venue setup: starting_balances (coin -> amount) funds each new account's UNIFIED wallet;
    instruments are the tradable symbols; leverage is the fixed linear leverage (IM = value/it)."""

    starting_balances: dict[str, Decimal] = field(default_factory=_default_balances)
    instruments: tuple[Instrument, ...] = field(default_factory=default_instruments)
    leverage: Decimal = Decimal(10)


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
        """One item of `GET /v5/order/realtime` (numbers as strings, times as ms strings)."""
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


@dataclass(slots=True)
class Position:
    """A one-way linear position: size signed (> 0 long, < 0 short) in base coin; avg_price in
    the settle coin per base coin; realised PnL in the settle coin; times in ms since epoch."""

    symbol: str
    settle_coin: str
    created_ms: int
    updated_ms: int
    size: Decimal = _ZERO
    avg_price: Decimal = _ZERO
    cum_realised_pnl: Decimal = _ZERO
    seq: int = 0

    def value(self) -> Decimal:
        """Position value at the entry price (settle coin)."""
        return abs(self.size) * self.avg_price

    def unrealised_pnl(self, mark: Decimal) -> Decimal:
        """(mark - entry) x signed size, in the settle coin."""
        return (mark - self.avg_price) * self.size

    def to_wire(self, mark: Decimal, leverage: Decimal) -> dict[str, Any]:
        """One item of `GET /v5/position/list?category=linear`."""
        value = self.value()
        side = "Buy" if self.size > 0 else "Sell" if self.size < 0 else ""
        return {
            "positionIdx": 0,
            "riskId": 1,
            "riskLimitValue": "2000000",
            "symbol": self.symbol,
            "side": side,
            "size": fmt(abs(self.size)),
            "avgPrice": fmt(self.avg_price),
            "positionValue": fmt(value),
            "tradeMode": 0,
            "positionStatus": "Normal",
            "autoAddMargin": 0,
            "adlRankIndicator": 2 if self.size else 0,
            "leverage": fmt(leverage),
            "positionBalance": fmt(value / leverage),
            "markPrice": fmt(mark),
            "liqPrice": "",
            "bustPrice": "",
            "positionIM": fmt(value / leverage),
            "positionMM": fmt(value * _MM_RATE),
            "tpslMode": "Full",
            "takeProfit": "0",
            "stopLoss": "0",
            "trailingStop": "0",
            "sessionAvgPrice": "",
            "unrealisedPnl": fmt(self.unrealised_pnl(mark)),
            "curRealisedPnl": fmt(self.cum_realised_pnl),
            "cumRealisedPnl": fmt(self.cum_realised_pnl),
            "seq": self.seq,
            "isReduceOnly": False,
            "mmrSysUpdatedTime": "",
            "leverageSysUpdatedTime": "",
            "createdTime": str(self.created_ms),
            "updatedTime": str(self.updated_ms),
        }


@dataclass(frozen=True, slots=True)
class CoinBalance:
    """One coin of an account's UNIFIED wallet; amounts in the coin, usd_price in USD per coin."""

    coin: str
    wallet: Decimal
    locked: Decimal
    order_im: Decimal
    position_im: Decimal
    position_mm: Decimal
    unrealised_pnl: Decimal
    cum_realised_pnl: Decimal
    usd_price: Decimal

    @property
    def equity(self) -> Decimal:
        """Wallet balance plus unrealised PnL."""
        return self.wallet + self.unrealised_pnl

    @property
    def available(self) -> Decimal:
        """What new orders, transfers and withdrawals may use (never below 0)."""
        return max(_ZERO, self.wallet - self.locked - self.order_im - self.position_im)


@dataclass(frozen=True, slots=True)
class Transfer:
    """A paper inter-account transfer; amount in coin; created_ms: ms since epoch."""

    transfer_id: str
    uid: int
    coin: str
    amount: Decimal
    from_account_type: str
    to_account_type: str
    created_ms: int


@dataclass(frozen=True, slots=True)
class Withdrawal:
    """A paper withdrawal; amount and fee in coin; created_ms: ms since epoch."""

    id: str
    uid: int
    coin: str
    chain: str
    address: str
    amount: Decimal
    fee: Decimal
    account_type: str
    created_ms: int


@dataclass(slots=True)
class _Account:
    created_ms: int
    balances: dict[str, dict[str, Decimal]]
    order_ids: list[str] = field(default_factory=list)
    open_ids: dict[str, None] = field(default_factory=dict)
    link_ids: set[str] = field(default_factory=set)
    positions: dict[str, Position] = field(default_factory=dict)
    realised: dict[str, Decimal] = field(default_factory=dict)
    withdrawals: list[Withdrawal] = field(default_factory=list)


def _check_step(value: Decimal, step: Decimal, name: str, rule: str) -> None:
    if value % step != 0:
        raise ParameterError(f"{name} {fmt(value)} has too many decimals: {rule} is {fmt(step)}")


def _check_range(value: Decimal, low: Decimal, high: Decimal, name: str, rules: str) -> None:
    """rules: "minRule/maxRule", the instrument fields named in the message."""
    low_rule, _, high_rule = rules.partition("/")
    if value < low:
        raise ParameterError(f"{name} {fmt(value)} is below the minimum {low_rule} {fmt(low)}")
    if value > high:
        raise ParameterError(f"{name} {fmt(value)} is above the maximum {high_rule} {fmt(high)}")


class VenueState:
    """The whole paper venue in memory; every public method is thread-safe.

    uid: int, the account; now_ms: int, ms since epoch (from the app's clock). Methods return
    copies, never live records. Raises ParameterError (10001), InsufficientBalanceError
    (110007) or OrderNotFoundError (110001) as documented per method.
    """

    def __init__(self, config: VenueConfig | None = None) -> None:
        self.config = config or VenueConfig()
        self.book = InstrumentBook(self.config.instruments)
        self._lock = threading.RLock()
        self._accounts: dict[int, _Account] = {}
        self._orders: dict[str, Order] = {}
        self._transfers: dict[str, Transfer] = {}
        self._next_withdrawal_id = 10_000_000
        self._seq = 0
        coins = set(COINS) | set(self.config.starting_balances)
        for inst in self.config.instruments:
            coins.update((inst.base_coin, inst.quote_coin))
        self.known_coins = frozenset(coins)

    # -- accounts and balances ---------------------------------------------------------------

    def _account(self, uid: int, now_ms: int) -> _Account:
        acct = self._accounts.get(uid)
        if acct is None:
            start = dict(self.config.starting_balances)
            acct = _Account(now_ms, {UNIFIED: start, FUND: {}})
            self._accounts[uid] = acct
        return acct

    def account_created_ms(self, uid: int, now_ms: int) -> int:
        """When the account was first seen (and funded), ms since epoch."""
        with self._lock:
            return self._account(uid, now_ms).created_ms

    def _coin_balance(self, acct: _Account, coin: str) -> CoinBalance:
        locked = order_im = _ZERO
        for oid in acct.open_ids:
            order = self._orders[oid]
            if order.lock_coin == coin:
                locked += order.lock_amount
            inst = self.book.find(order.category, order.symbol)
            if order.order_im and inst is not None and inst.settle_coin == coin:
                order_im += order.order_im
        position_im = position_mm = upl = _ZERO
        for pos in acct.positions.values():
            inst = self.book.find("linear", pos.symbol)
            if pos.settle_coin == coin and inst is not None:
                position_im += pos.value() / self.config.leverage
                position_mm += pos.value() * _MM_RATE
                upl += pos.unrealised_pnl(inst.price)
        return CoinBalance(
            coin=coin,
            wallet=acct.balances[UNIFIED].get(coin, _ZERO),
            locked=locked,
            order_im=order_im,
            position_im=position_im,
            position_mm=position_mm,
            unrealised_pnl=upl,
            cum_realised_pnl=acct.realised.get(coin, _ZERO),
            usd_price=self.book.usd_price(coin),
        )

    def wallet(self, uid: int, now_ms: int, coins: list[str] | None = None) -> list[CoinBalance]:
        """The UNIFIED wallet: one CoinBalance per coin the account holds, in the order the
        coins were first held, then one zero-filled entry per coin in coins not held."""
        with self._lock:
            acct = self._account(uid, now_ms)
            names = list(acct.balances[UNIFIED])
            names += [c for c in dict.fromkeys(coins or ()) if c not in names]
            return [self._coin_balance(acct, c) for c in names]

    def _available(self, acct: _Account, account_type: str, coin: str) -> Decimal:
        if account_type == UNIFIED:
            return self._coin_balance(acct, coin).available
        return acct.balances[account_type].get(coin, _ZERO)

    def _move(self, acct: _Account, account_type: str, coin: str, delta: Decimal) -> None:
        book = acct.balances[account_type]
        book[coin] = book.get(coin, _ZERO) + delta

    def _require(self, acct: _Account, coin: str, amount: Decimal, what: str = "") -> None:
        available = self._available(acct, UNIFIED, coin)
        if amount > available:
            raise InsufficientBalanceError(
                f"Insufficient available balance: {what}{fmt(amount)} {coin} needed, "
                f"{fmt(available)} {coin} available."
            )

    # -- orders ------------------------------------------------------------------------------

    def place_order(self, uid: int, req: OrderRequest, now_ms: int) -> Order:
        """Validate and place an order (Bybit V5 "Place Order"), filling it at once when it
        can; returns the order. Raises ParameterError (unknown symbol, qty/price outside the
        instrument's filters, duplicate orderLinkId: "OrderLinkedID is duplicate") or
        InsufficientBalanceError."""
        inst = self.book.find(req.category, req.symbol)
        if inst is None:
            raise ParameterError(f"symbol {req.symbol} is not a {req.category} instrument")
        if req.order_type == "Limit":
            if req.price is None:
                raise ParameterError("price is required for Limit orders")
            if req.price <= 0:
                raise ParameterError(f"price {fmt(req.price)} must be positive")
            _check_step(req.price, inst.tick_size, "price", "tickSize")
        with self._lock:
            acct = self._account(uid, now_ms)
            if req.order_link_id and req.order_link_id in acct.link_ids:
                raise ParameterError("OrderLinkedID is duplicate")
            order = Order(
                order_id=str(uuid.uuid4()),
                order_link_id=req.order_link_id,
                uid=uid,
                category=req.category,
                symbol=req.symbol,
                side=req.side,
                order_type=req.order_type,
                qty=req.qty,
                price=req.price if req.order_type == "Limit" and req.price else _ZERO,
                time_in_force="IOC" if req.order_type == "Market" else req.time_in_force or "GTC",
                market_unit="",
                created_ms=now_ms,
                updated_ms=now_ms,
                reduce_only=req.reduce_only,
            )
            if inst.category == "spot":
                self._place_spot(acct, inst, req, order, now_ms)
            else:
                self._place_linear(acct, inst, req, order, now_ms)
            self._orders[order.order_id] = order
            acct.order_ids.append(order.order_id)
            if order.order_link_id:
                acct.link_ids.add(order.order_link_id)
            if order.is_open:
                acct.open_ids[order.order_id] = None
            return replace(order)

    def _place_spot(
        self, acct: _Account, inst: Instrument, req: OrderRequest, order: Order, now_ms: int
    ) -> None:
        base, quote = inst.base_coin, inst.quote_coin
        if req.order_type == "Market":
            unit = req.market_unit or ("quoteCoin" if req.side == "Buy" else "baseCoin")
            order.market_unit = unit
            if unit == "quoteCoin":
                _check_step(req.qty, inst.quote_precision, "qty", "quotePrecision")
                _check_range(
                    req.qty,
                    inst.min_order_amt,
                    inst.max_order_amt,
                    f"qty (in {quote}, marketUnit quoteCoin)",
                    "minOrderAmt/maxOrderAmt",
                )
                base_qty = round_down(req.qty / inst.price, inst.qty_step)
                if base_qty <= 0:
                    raise ParameterError(f"qty {fmt(req.qty)} {quote} buys less than one lot")
            else:
                self._check_base_qty(inst, req.qty)
                base_qty = req.qty
            price = inst.price
        else:
            assert req.price is not None
            self._check_base_qty(inst, req.qty)
            base_qty, price = req.qty, req.price
        value = base_qty * price
        if req.order_type == "Limit" or order.market_unit == "baseCoin":
            _check_range(
                value,
                inst.min_order_amt,
                inst.max_order_amt,
                "order value",
                "minOrderAmt/maxOrderAmt",
            )
        if req.side == "Buy":
            pay, pay_amount, get, get_amount = quote, value, base, base_qty
        else:
            pay, pay_amount, get, get_amount = base, base_qty, quote, value
        crosses = price >= inst.price if req.side == "Buy" else price <= inst.price
        self._require(acct, pay, pay_amount)
        if req.order_type == "Limit" and (not crosses or order.time_in_force == "PostOnly"):
            if crosses:
                order.cancel(now_ms, "CancelByUser", "EC_PostOnlyWillTakeLiquidity")
            elif order.time_in_force in ("IOC", "FOK"):
                order.cancel(now_ms, "CancelByUser", "EC_NoImmediateQtyToFill")
            else:
                order.lock_coin, order.lock_amount = pay, pay_amount
            return
        self._move(acct, UNIFIED, pay, -pay_amount)
        self._move(acct, UNIFIED, get, get_amount)
        order.fill(base_qty, price, now_ms)

    def _check_base_qty(self, inst: Instrument, qty: Decimal) -> None:
        rule = "basePrecision" if inst.category == "spot" else "qtyStep"
        _check_range(qty, inst.min_order_qty, inst.max_order_qty, "qty", "minOrderQty/maxOrderQty")
        _check_step(qty, inst.qty_step, "qty", rule)

    def _place_linear(
        self, acct: _Account, inst: Instrument, req: OrderRequest, order: Order, now_ms: int
    ) -> None:
        self._check_base_qty(inst, req.qty)
        if (
            req.order_type == "Market"
            and inst.max_mkt_order_qty
            and req.qty > inst.max_mkt_order_qty
        ):
            limit = fmt(inst.max_mkt_order_qty)
            raise ParameterError(f"qty {fmt(req.qty)} is above the maximum maxMktOrderQty {limit}")
        price = inst.price if req.order_type == "Market" else (req.price or _ZERO)
        if price > inst.price * 100:
            raise ParameterError(f"price {fmt(price)} is above the maximum maxPrice")
        notional = req.qty * price
        if notional < inst.min_order_amt:
            raise ParameterError(
                f"order value {fmt(notional)} is below the minimum minNotionalValue "
                f"{fmt(inst.min_order_amt)}"
            )
        pos = acct.positions.get(inst.symbol)
        size = pos.size if pos is not None else _ZERO
        signed = req.qty if req.side == "Buy" else -req.qty
        closing = min(abs(size), req.qty) if size and (size > 0) != (signed > 0) else _ZERO
        if req.reduce_only and closing < req.qty:
            raise ParameterError(
                f"reduceOnly order qty {fmt(req.qty)} exceeds the closable position {fmt(closing)}"
            )
        margin = (req.qty - closing) * price / self.config.leverage
        self._require(acct, inst.settle_coin, margin, "initial margin ")
        if req.order_type == "Limit":
            if order.time_in_force in ("IOC", "FOK"):
                order.cancel(now_ms, "CancelByUser", "EC_NoImmediateQtyToFill")
            else:
                order.order_im = margin
            return
        if pos is None:
            pos = Position(inst.symbol, inst.settle_coin, now_ms, now_ms)
            acct.positions[inst.symbol] = pos
        self._apply_fill(acct, pos, signed, price, now_ms)
        order.fill(req.qty, price, now_ms)

    def _apply_fill(
        self, acct: _Account, pos: Position, signed: Decimal, price: Decimal, now_ms: int
    ) -> None:
        size = pos.size
        if size == 0 or (size > 0) == (signed > 0):
            new_size = size + signed
            pos.avg_price = (
                (abs(size) * pos.avg_price + abs(signed) * price) / abs(new_size)
            ).quantize(Decimal("0.00000001"))
        else:
            closing = min(abs(size), abs(signed))
            pnl = (price - pos.avg_price) * closing * (1 if size > 0 else -1)
            pos.cum_realised_pnl += pnl
            acct.realised[pos.settle_coin] = acct.realised.get(pos.settle_coin, _ZERO) + pnl
            self._move(acct, UNIFIED, pos.settle_coin, pnl)
            new_size = size + signed
            if new_size == 0:
                pos.avg_price = _ZERO
            elif (new_size > 0) != (size > 0):
                pos.avg_price = price
        pos.size = new_size
        self._seq += 1
        pos.seq, pos.updated_ms = self._seq, now_ms

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
            acct = self._account(uid, now_ms)
            for oid in acct.open_ids:
                order = self._orders[oid]
                if order_id and oid != order_id:
                    continue
                if order_link_id and order.order_link_id != order_link_id:
                    continue
                if order.category == category and order.symbol == symbol:
                    order.cancel(now_ms, "CancelByUser")
                    del acct.open_ids[oid]
                    return replace(order)
            raise OrderNotFoundError()

    def orders(
        self,
        uid: int,
        category: str,
        now_ms: int,
        *,
        symbol: str | None = None,
        order_id: str | None = None,
        order_link_id: str | None = None,
        open_only: bool = True,
    ) -> list[Order]:
        """uid's orders of one category, newest first. With order_id or order_link_id: that
        order whatever its status; else open orders (open_only) or closed ones."""
        with self._lock:
            acct = self._account(uid, now_ms)
            found: list[Order] = []
            for oid in reversed(acct.order_ids):
                order = self._orders[oid]
                if order.category != category or (symbol and order.symbol != symbol):
                    continue
                if order_id or order_link_id:
                    if (order_id and oid != order_id) or (
                        order_link_id and order.order_link_id != order_link_id
                    ):
                        continue
                elif order.is_open != open_only:
                    continue
                found.append(replace(order))
            return found

    def positions(self, uid: int, now_ms: int, symbol: str | None = None) -> list[Position]:
        """uid's open linear positions (or, with symbol, that symbol's, flat when none)."""
        with self._lock:
            acct = self._account(uid, now_ms)
            if symbol is not None:
                pos = acct.positions.get(symbol)
                settle = self.book.find("linear", symbol)
                if pos is None and settle is not None:
                    return [Position(symbol, settle.settle_coin, now_ms, now_ms)]
                return [replace(pos)] if pos is not None else []
            return [replace(p) for p in acct.positions.values() if p.size]

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
        for name, kind in (
            ("fromAccountType", from_account_type),
            ("toAccountType", to_account_type),
        ):
            if kind not in (UNIFIED, FUND):
                raise ParameterError(f"{name} {kind} is not supported: use UNIFIED or FUND")
        if from_account_type == to_account_type:
            raise ParameterError("fromAccountType and toAccountType must differ")
        if coin not in self.known_coins:
            raise ParameterError(f"coin {coin} is not supported")
        if amount <= 0:
            raise ParameterError("amount must be greater than 0")
        with self._lock:
            if transfer_id in self._transfers:
                raise ParameterError("transferId is duplicate")
            acct = self._account(uid, now_ms)
            available = self._available(acct, from_account_type, coin)
            if amount > available:
                raise InsufficientBalanceError(
                    f"Insufficient balance in {from_account_type}: "
                    f"{fmt(available)} {coin} available."
                )
            self._move(acct, from_account_type, coin, -amount)
            self._move(acct, to_account_type, coin, amount)
            record = Transfer(
                transfer_id, uid, coin, amount, from_account_type, to_account_type, now_ms
            )
            self._transfers[transfer_id] = record
            return record

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
        info = COINS.get(coin)
        if info is None:
            raise ParameterError(f"coin {coin} is not supported for withdrawal")
        chosen = info.find_chain(chain) if chain else info.chains[0]
        if chosen is None:
            raise ParameterError(f"chain {chain} is not supported for {coin}")
        _check_step(amount, Decimal(1).scaleb(-chosen.min_accuracy), "amount", "minAccuracy step")
        if amount < chosen.withdraw_min:
            raise ParameterError(
                f"amount {fmt(amount)} is below the minimum withdrawMin {fmt(chosen.withdraw_min)}"
            )
        debit = amount if fee_included else amount + chosen.withdraw_fee
        if fee_included and amount <= chosen.withdraw_fee:
            raise ParameterError("amount must exceed the withdrawFee when feeType is 1")
        sources = {"FUND": (FUND,), "FUND,UTA": (FUND, UNIFIED)}.get(account_type or "")
        if sources is None:
            if account_type not in (None, "", "UTA", "UNIFIED", "SPOT"):
                raise ParameterError(f"accountType {account_type} is not supported")
            sources = (UNIFIED,)
        with self._lock:
            acct = self._account(uid, now_ms)
            held = [(s, self._available(acct, s, coin)) for s in sources]
            if debit > sum(a for _, a in held):
                raise InsufficientBalanceError(
                    f"Insufficient available balance: {fmt(debit)} {coin} needed."
                )
            left = debit
            for source, available in held:
                take = min(left, available)
                self._move(acct, source, coin, -take)
                left -= take
            self._next_withdrawal_id += 1
            record = Withdrawal(
                str(self._next_withdrawal_id), uid, coin, chosen.chain, address, amount,
                debit - amount, account_type or UNIFIED, now_ms,
            )  # fmt: skip
            acct.withdrawals.append(record)
            return record

    def withdrawals(self, uid: int) -> list[Withdrawal]:
        """uid's paper withdrawals, oldest first."""
        with self._lock:
            acct = self._accounts.get(uid)
            return list(acct.withdrawals) if acct is not None else []

    def transfers(self, uid: int) -> list[Transfer]:
        """uid's paper transfers, oldest first."""
        with self._lock:
            return [t for t in self._transfers.values() if t.uid == uid]
