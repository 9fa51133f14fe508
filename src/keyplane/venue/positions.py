"""Linear positions of the demo venue: one one-way position per account and symbol.

Sizes are signed base-coin amounts (> 0 long, < 0 short); prices, margin and PnL are in the
settle coin. Marks are the instruments' fixed prices. The wire rendering follows Bybit V5
"Get Position Info". Not thread-safe on its own: VenueState holds its lock around every call.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from keyplane.venue.balances import Holds
from keyplane.venue.instruments import Instrument, InstrumentBook, fmt

__all__ = ["Position", "Positions"]

_ZERO = Decimal(0)
_MM_RATE = Decimal("0.005")
_AVG_QUANTUM = Decimal("0.00000001")


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


class Positions:
    """Every account's linear positions by symbol.

    book gives the mark prices; leverage is the fixed linear leverage (IM = value / leverage).
    seq numbers position changes venue-wide, as Bybit's `seq` does.
    """

    def __init__(self, book: InstrumentBook, leverage: Decimal) -> None:
        self._book = book
        self._leverage = leverage
        self._by_uid: dict[int, dict[str, Position]] = {}
        self._seq = 0

    def _of(self, uid: int) -> dict[str, Position]:
        return self._by_uid.setdefault(uid, {})

    def closing(self, uid: int, symbol: str, signed: Decimal) -> Decimal:
        """How much of a fill of signed base coin (> 0 buy, < 0 sell) would close uid's position
        in symbol, in base coin (0 when the fill opens or adds)."""
        pos = self._of(uid).get(symbol)
        size = pos.size if pos is not None else _ZERO
        return min(abs(size), abs(signed)) if size and (size > 0) != (signed > 0) else _ZERO

    def fill(
        self, uid: int, inst: Instrument, signed: Decimal, price: Decimal, now_ms: int
    ) -> Decimal | None:
        """Apply a fill of signed base coin at price (settle coin per base coin) to uid's
        position in inst, opening it when new. Returns the PnL realised (settle coin) when the
        fill closed some of the position, else None; the caller books it."""
        pos = self._of(uid).get(inst.symbol)
        if pos is None:
            pos = Position(inst.symbol, inst.settle_coin, now_ms, now_ms)
            self._of(uid)[inst.symbol] = pos
        size, pnl = pos.size, None
        new_size = size + signed
        if size == 0 or (size > 0) == (signed > 0):
            pos.avg_price = (
                (abs(size) * pos.avg_price + abs(signed) * price) / abs(new_size)
            ).quantize(_AVG_QUANTUM)
        else:
            closing = min(abs(size), abs(signed))
            pnl = (price - pos.avg_price) * closing * (1 if size > 0 else -1)
            pos.cum_realised_pnl += pnl
            if new_size == 0:
                pos.avg_price = _ZERO
            elif (new_size > 0) != (size > 0):
                pos.avg_price = price
        pos.size = new_size
        self._seq += 1
        pos.seq, pos.updated_ms = self._seq, now_ms
        return pnl

    def holds(self, uid: int, coin: str) -> Holds:
        """Margin and unrealised PnL of uid's positions settled in coin, at the marks."""
        position_im = position_mm = upl = _ZERO
        for pos in self._of(uid).values():
            inst = self._book.find("linear", pos.symbol)
            if pos.settle_coin == coin and inst is not None:
                position_im += pos.value() / self._leverage
                position_mm += pos.value() * _MM_RATE
                upl += pos.unrealised_pnl(inst.price)
        return Holds(position_im=position_im, position_mm=position_mm, unrealised_pnl=upl)

    def select(self, uid: int, now_ms: int, symbol: str | None = None) -> list[Position]:
        """Copies of uid's open positions, or with symbol that symbol's (a flat one at now_ms
        when none; [] when symbol is not a linear instrument)."""
        positions = self._of(uid)
        if symbol is not None:
            pos = positions.get(symbol)
            inst = self._book.find("linear", symbol)
            if pos is None and inst is not None:
                return [Position(symbol, inst.settle_coin, now_ms, now_ms)]
            return [replace(pos)] if pos is not None else []
        return [replace(p) for p in positions.values() if p.size]
