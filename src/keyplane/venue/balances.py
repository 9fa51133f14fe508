"""Per-account coin balances of the demo venue: wallets, funding on first sight, holds.

Each account (uid) has a UNIFIED and a FUND wallet mapping coin -> amount (Decimal, in the coin).
The first time an account is seen its UNIFIED wallet is funded with the configured starting
balances, like Bybit's demo trading. What the account's resting orders and open positions hold
of a coin comes from a `holds` callback, so this module knows nothing of orders or positions.
Not thread-safe on its own: VenueState holds its lock around every call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from keyplane.errors import InsufficientBalanceError
from keyplane.venue.instruments import fmt

__all__ = ["FUND", "UNIFIED", "CoinBalance", "Holds", "HoldsFn", "Wallets"]

UNIFIED = "UNIFIED"
FUND = "FUND"
_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Holds:
    """What one account's resting orders and open positions hold of one coin (amounts in it).

    locked: held by resting spot orders; order_im / position_im: initial margin of resting
    linear orders / open positions; position_mm: maintenance margin of the positions;
    unrealised_pnl: the positions' PnL at the mark price."""

    locked: Decimal = _ZERO
    order_im: Decimal = _ZERO
    position_im: Decimal = _ZERO
    position_mm: Decimal = _ZERO
    unrealised_pnl: Decimal = _ZERO

    def __add__(self, other: Holds) -> Holds:
        """Field-wise sum."""
        return Holds(
            self.locked + other.locked,
            self.order_im + other.order_im,
            self.position_im + other.position_im,
            self.position_mm + other.position_mm,
            self.unrealised_pnl + other.unrealised_pnl,
        )


#: holds(uid, coin) -> what uid's resting orders and open positions hold of coin.
HoldsFn = Callable[[int, str], Holds]


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


@dataclass(slots=True)
class _Wallet:
    created_ms: int
    books: dict[str, dict[str, Decimal]]
    realised: dict[str, Decimal] = field(default_factory=dict)


class Wallets:
    """Every account's UNIFIED and FUND wallets and cumulative realised PnL per coin.

    starting: coin -> amount credited to a new account's UNIFIED wallet (read when the account
    is first seen); usd_price(coin) -> USD per coin; holds: see HoldsFn. Methods other than
    open() and wallet() expect an account that open() has already seen.
    """

    def __init__(
        self,
        starting: Mapping[str, Decimal],
        usd_price: Callable[[str], Decimal],
        holds: HoldsFn,
    ) -> None:
        self._starting = starting
        self._usd_price = usd_price
        self._holds = holds
        self._wallets: dict[int, _Wallet] = {}

    def open(self, uid: int, now_ms: int) -> int:
        """Fund uid with the starting balances if it is new (now_ms: ms since epoch); returns
        when the account was first seen, ms since epoch."""
        wallet = self._wallets.get(uid)
        if wallet is None:
            wallet = _Wallet(now_ms, {UNIFIED: dict(self._starting), FUND: {}})
            self._wallets[uid] = wallet
        return wallet.created_ms

    def balance(self, uid: int, coin: str) -> CoinBalance:
        """uid's UNIFIED balance of coin, with what its orders and positions hold."""
        wallet = self._wallets[uid]
        holds = self._holds(uid, coin)
        return CoinBalance(
            coin=coin,
            wallet=wallet.books[UNIFIED].get(coin, _ZERO),
            locked=holds.locked,
            order_im=holds.order_im,
            position_im=holds.position_im,
            position_mm=holds.position_mm,
            unrealised_pnl=holds.unrealised_pnl,
            cum_realised_pnl=wallet.realised.get(coin, _ZERO),
            usd_price=self._usd_price(coin),
        )

    def wallet(self, uid: int, now_ms: int, coins: list[str] | None = None) -> list[CoinBalance]:
        """uid's UNIFIED balances in the order the coins were first held, then a zero-filled
        entry per coin in coins not held; opens the account first."""
        self.open(uid, now_ms)
        names = list(self._wallets[uid].books[UNIFIED])
        names += [c for c in dict.fromkeys(coins or ()) if c not in names]
        return [self.balance(uid, c) for c in names]

    def available(self, uid: int, account_type: str, coin: str) -> Decimal:
        """Free amount of coin in uid's UNIFIED (net of holds) or FUND wallet."""
        if account_type == UNIFIED:
            return self.balance(uid, coin).available
        return self._wallets[uid].books[account_type].get(coin, _ZERO)

    def require(self, uid: int, coin: str, amount: Decimal, what: str = "") -> None:
        """Raise InsufficientBalanceError (110007) unless uid's UNIFIED wallet has amount of
        coin available; what prefixes the amount in the message (e.g. "initial margin ")."""
        available = self.available(uid, UNIFIED, coin)
        if amount > available:
            raise InsufficientBalanceError(
                f"Insufficient available balance: {what}{fmt(amount)} {coin} needed, "
                f"{fmt(available)} {coin} available."
            )

    def move(self, uid: int, account_type: str, coin: str, delta: Decimal) -> None:
        """Add delta (signed, in coin) to uid's account_type wallet; no balance check."""
        book = self._wallets[uid].books[account_type]
        book[coin] = book.get(coin, _ZERO) + delta

    def realise(self, uid: int, coin: str, pnl: Decimal) -> None:
        """Credit realised PnL (signed, in coin) to uid's UNIFIED wallet and its running total."""
        realised = self._wallets[uid].realised
        realised[coin] = realised.get(coin, _ZERO) + pnl
        self.move(uid, UNIFIED, coin, pnl)


_RATE = Decimal("0.0001")


def _rate(part: Decimal, whole: Decimal) -> str:
    return fmt((part / whole).quantize(_RATE)) if whole > 0 else "0"


def coin_wire(b: CoinBalance) -> dict[str, Any]:
    """One coin[] entry of a UNIFIED account (Bybit V5 /v5/account/wallet-balance; amounts as
    strings)."""
    available = fmt(b.available)
    return {
        "coin": b.coin,
        "equity": fmt(b.equity),
        "usdValue": fmt(b.equity * b.usd_price),
        "walletBalance": fmt(b.wallet),
        "free": available,
        "locked": fmt(b.locked),
        "spotHedgingQty": "0",
        "borrowAmount": "0",
        "availableToWithdraw": available,
        "availableToBorrow": "",
        "accruedInterest": "0",
        "totalOrderIM": fmt(b.order_im),
        "totalPositionIM": fmt(b.position_im),
        "totalPositionMM": fmt(b.position_mm),
        "unrealisedPnl": fmt(b.unrealised_pnl),
        "cumRealisedPnl": fmt(b.cum_realised_pnl),
        "bonus": "0",
        "marginCollateral": True,
        "collateralSwitch": True,
        "spotBorrow": "0",
    }


def wallet_account_wire(
    balances: Sequence[CoinBalance], coins: Sequence[str] | None = None
) -> dict[str, Any]:
    """The UNIFIED account entry of /v5/account/wallet-balance (and of the private `wallet`
    push): USD totals over every coin in balances, coin[] limited to `coins` when given."""

    def usd(attr: str) -> Decimal:
        return sum((getattr(b, attr) * b.usd_price for b in balances), _ZERO)

    wallet_usd, upl_usd, locked_usd = usd("wallet"), usd("unrealised_pnl"), usd("locked")
    im_usd = usd("order_im") + usd("position_im")
    mm_usd = usd("position_mm")
    margin_usd = wallet_usd + upl_usd
    return {
        "accountType": UNIFIED,
        "accountLTV": "0",
        "accountIMRate": _rate(im_usd, margin_usd),
        "accountMMRate": _rate(mm_usd, margin_usd),
        "accountIMRateByMp": _rate(im_usd, margin_usd),
        "accountMMRateByMp": _rate(mm_usd, margin_usd),
        "totalEquity": fmt(usd("equity")),
        "totalWalletBalance": fmt(wallet_usd),
        "totalMarginBalance": fmt(margin_usd),
        "totalAvailableBalance": fmt(max(_ZERO, margin_usd - im_usd - locked_usd)),
        "totalPerpUPL": fmt(upl_usd),
        "totalInitialMargin": fmt(im_usd),
        "totalInitialMarginByMp": fmt(im_usd),
        "totalMaintenanceMargin": fmt(mm_usd),
        "totalMaintenanceMarginByMp": fmt(mm_usd),
        "coin": [coin_wire(b) for b in balances if coins is None or b.coin in coins],
    }
