"""Order placement on the demo venue (Bybit V5 "Place Order").

An OrderRequest is checked against its instrument's filters, then either fills in full at once
at the instrument's fixed price (market orders, crossing limit orders) or rests, holding what it
may spend: spot orders lock the coin they pay with, linear orders hold initial margin (value /
leverage). Fills move wallet balances (spot) or positions and realised PnL (linear). Not
thread-safe on its own: VenueState holds its lock around every call.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from decimal import Decimal

from keyplane.errors import ParameterError
from keyplane.venue.balances import UNIFIED, Wallets
from keyplane.venue.instruments import (
    Instrument,
    InstrumentBook,
    check_range,
    check_step,
    fmt,
    round_down,
)
from keyplane.venue.orders import Order, OrderBook, OrderRequest
from keyplane.venue.positions import Positions

__all__ = ["MatchingEngine"]

_ZERO = Decimal(0)
_AMOUNT_RULES = "minOrderAmt/maxOrderAmt"


class MatchingEngine:
    """Places orders for accounts: validates, fills or rests them, and records them in orders.

    leverage: the fixed linear leverage; wallets, orders and positions are the venue's parts
    that placement reads and changes.
    """

    def __init__(
        self,
        book: InstrumentBook,
        leverage: Decimal,
        wallets: Wallets,
        orders: OrderBook,
        positions: Positions,
    ) -> None:
        self._book = book
        self._leverage = leverage
        self._wallets = wallets
        self._orders = orders
        self._positions = positions

    def place(self, uid: int, req: OrderRequest, now_ms: int) -> Order:
        """Validate and place req for uid at now_ms (ms since epoch), opening the account after
        the request checks pass; returns a copy of the order. Raises ParameterError or
        InsufficientBalanceError as VenueState.place_order documents."""
        inst = self._book.find(req.category, req.symbol)
        if inst is None:
            raise ParameterError(f"symbol {req.symbol} is not a {req.category} instrument")
        if req.order_type == "Limit":
            if req.price is None:
                raise ParameterError("price is required for Limit orders")
            if req.price <= 0:
                raise ParameterError(f"price {fmt(req.price)} must be positive")
            check_step(req.price, inst.tick_size, "price", "tickSize")
        self._wallets.open(uid, now_ms)
        if req.order_link_id and self._orders.link_id_taken(uid, req.order_link_id):
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
            self._place_spot(inst, req, order, now_ms)
        else:
            self._place_linear(inst, req, order, now_ms)
        self._orders.add(order)
        return replace(order)

    def _place_spot(self, inst: Instrument, req: OrderRequest, order: Order, now_ms: int) -> None:
        base, quote = inst.base_coin, inst.quote_coin
        if req.order_type == "Market":
            unit = req.market_unit or ("quoteCoin" if req.side == "Buy" else "baseCoin")
            order.market_unit = unit
            if unit == "quoteCoin":
                check_step(req.qty, inst.quote_precision, "qty", "quotePrecision")
                check_range(
                    req.qty,
                    inst.min_order_amt,
                    inst.max_order_amt,
                    f"qty (in {quote}, marketUnit quoteCoin)",
                    _AMOUNT_RULES,
                )
                base_qty = round_down(req.qty / inst.price, inst.qty_step)
                if base_qty <= 0:
                    raise ParameterError(f"qty {fmt(req.qty)} {quote} buys less than one lot")
            else:
                _check_base_qty(inst, req.qty)
                base_qty = req.qty
            price = inst.price
        else:
            assert req.price is not None
            _check_base_qty(inst, req.qty)
            base_qty, price = req.qty, req.price
        value = base_qty * price
        if req.order_type == "Limit" or order.market_unit == "baseCoin":
            check_range(value, inst.min_order_amt, inst.max_order_amt, "order value", _AMOUNT_RULES)
        if req.side == "Buy":
            pay, pay_amount, get, get_amount = quote, value, base, base_qty
        else:
            pay, pay_amount, get, get_amount = base, base_qty, quote, value
        crosses = price >= inst.price if req.side == "Buy" else price <= inst.price
        self._wallets.require(order.uid, pay, pay_amount)
        if req.order_type == "Limit" and (not crosses or order.time_in_force == "PostOnly"):
            if crosses:
                order.cancel(now_ms, "CancelByUser", "EC_PostOnlyWillTakeLiquidity")
            elif order.time_in_force in ("IOC", "FOK"):
                order.cancel(now_ms, "CancelByUser", "EC_NoImmediateQtyToFill")
            else:
                order.lock_coin, order.lock_amount = pay, pay_amount
            return
        self._wallets.move(order.uid, UNIFIED, pay, -pay_amount)
        self._wallets.move(order.uid, UNIFIED, get, get_amount)
        order.fill(base_qty, price, now_ms)

    def _place_linear(self, inst: Instrument, req: OrderRequest, order: Order, now_ms: int) -> None:
        _check_base_qty(inst, req.qty)
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
        signed = req.qty if req.side == "Buy" else -req.qty
        closing = self._positions.closing(order.uid, inst.symbol, signed)
        if req.reduce_only and closing < req.qty:
            raise ParameterError(
                f"reduceOnly order qty {fmt(req.qty)} exceeds the closable position {fmt(closing)}"
            )
        margin = (req.qty - closing) * price / self._leverage
        self._wallets.require(order.uid, inst.settle_coin, margin, "initial margin ")
        if req.order_type == "Limit":
            if order.time_in_force in ("IOC", "FOK"):
                order.cancel(now_ms, "CancelByUser", "EC_NoImmediateQtyToFill")
            else:
                order.order_im = margin
            return
        pnl = self._positions.fill(order.uid, inst, signed, price, now_ms)
        if pnl is not None:
            self._wallets.realise(order.uid, inst.settle_coin, pnl)
        order.fill(req.qty, price, now_ms)


def _check_base_qty(inst: Instrument, qty: Decimal) -> None:
    rule = "basePrecision" if inst.category == "spot" else "qtyStep"
    check_range(qty, inst.min_order_qty, inst.max_order_qty, "qty", "minOrderQty/maxOrderQty")
    check_step(qty, inst.qty_step, "qty", rule)
