"""The demo venue's instruments and coins, their Bybit V5 wire shapes, and decimal helpers.

Every instrument trades at one configured fixed price. Wire shapes follow Bybit V5
"Get Instruments Info" (`GET /v5/market/instruments-info`), "Get Tickers"
(`GET /v5/market/tickers`) and "Get Coin Info" (`GET /v5/asset/coin/query-info`);
numbers are rendered as strings without exponent, as Bybit does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Any

from keyplane.errors import ParameterError

__all__ = [
    "COINS",
    "Chain",
    "CoinInfo",
    "Instrument",
    "InstrumentBook",
    "check_range",
    "check_step",
    "default_instruments",
    "fmt",
    "parse_decimal",
    "round_down",
]

_MAX_DIGITS = 40


def fmt(value: Decimal) -> str:
    """Render a Decimal as Bybit does: plain digits, no exponent, no trailing zeros; 0 -> "0"."""
    if value == 0:
        return "0"
    return format(value.normalize(), "f")


def parse_decimal(value: object, name: str) -> Decimal:
    """Parse a wire number (str, int or float; never bool) into a finite Decimal.

    Raises ParameterError (10001) naming the parameter when the value is not a plain decimal
    number or is absurdly large or precise (guards the arithmetic against "1e999999").
    """
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ParameterError(f"{name} must be a decimal number")
    text = str(value).strip()
    if not text or len(text) > _MAX_DIGITS:
        raise ParameterError(f"{name} must be a decimal number, got {text[:_MAX_DIGITS]!r}")
    try:
        number = Decimal(text)
    except InvalidOperation as exc:
        raise ParameterError(f"{name} must be a decimal number, got {text!r}") from exc
    exponent = number.as_tuple().exponent
    if not isinstance(exponent, int) or exponent < -18 or number.adjusted() > 15:
        raise ParameterError(f"{name} is out of range: {text!r}")
    return number


def round_down(value: Decimal, step: Decimal) -> Decimal:
    """value rounded down to a multiple of step (step > 0)."""
    return (value / step).to_integral_value(rounding=ROUND_DOWN) * step


def check_step(value: Decimal, step: Decimal, name: str, rule: str) -> None:
    """Raise ParameterError (10001) unless value is a whole multiple of step (same unit);
    name is the parameter and rule the filter (e.g. "tickSize") named in the message."""
    if value % step != 0:
        raise ParameterError(f"{name} {fmt(value)} has too many decimals: {rule} is {fmt(step)}")


def check_range(value: Decimal, low: Decimal, high: Decimal, name: str, rules: str) -> None:
    """Raise ParameterError (10001) unless low <= value <= high (same unit); rules is
    "minRule/maxRule", the instrument fields named in the message."""
    low_rule, _, high_rule = rules.partition("/")
    if value < low:
        raise ParameterError(f"{name} {fmt(value)} is below the minimum {low_rule} {fmt(low)}")
    if value > high:
        raise ParameterError(f"{name} {fmt(value)} is above the maximum {high_rule} {fmt(high)}")


@dataclass(frozen=True, slots=True)
class Instrument:
    """One tradable instrument at a fixed price.

    category: "spot" | "linear". price, tick_size: quote coin per base coin. qty_step: spot
    basePrecision / linear qtyStep (base coin). min/max_order_qty: base coin. min_order_amt /
    max_order_amt: quote coin (spot minOrderAmt/maxOrderAmt; linear minNotionalValue).
    launch_time_ms: ms since epoch.
    """

    category: str
    symbol: str
    base_coin: str
    quote_coin: str
    price: Decimal
    tick_size: Decimal
    qty_step: Decimal
    min_order_qty: Decimal
    max_order_qty: Decimal
    min_order_amt: Decimal
    max_order_amt: Decimal = Decimal("2000000")
    quote_precision: Decimal = Decimal("0.00000001")
    max_mkt_order_qty: Decimal = Decimal("0")
    max_leverage: Decimal = Decimal("100")
    launch_time_ms: int = 1_584_230_400_000

    @property
    def settle_coin(self) -> str:
        """The coin margin and PnL are settled in (the quote coin for linear contracts)."""
        return self.quote_coin

    @property
    def price_scale(self) -> int:
        """Decimal places of tick_size (Bybit's priceScale)."""
        return max(0, -int(self.tick_size.normalize().as_tuple().exponent))

    def to_wire(self) -> dict[str, Any]:
        """The item of `GET /v5/market/instruments-info` list for this instrument's category."""
        if self.category == "spot":
            return {
                "symbol": self.symbol,
                "baseCoin": self.base_coin,
                "quoteCoin": self.quote_coin,
                "innovation": "0",
                "status": "Trading",
                "marginTrading": "utaOnly",
                "stTag": "0",
                "lotSizeFilter": {
                    "basePrecision": fmt(self.qty_step),
                    "quotePrecision": fmt(self.quote_precision),
                    "minOrderQty": fmt(self.min_order_qty),
                    "maxOrderQty": fmt(self.max_order_qty),
                    "minOrderAmt": fmt(self.min_order_amt),
                    "maxOrderAmt": fmt(self.max_order_amt),
                },
                "priceFilter": {"tickSize": fmt(self.tick_size)},
                "riskParameters": {"priceLimitRatioX": "0.05", "priceLimitRatioY": "0.05"},
            }
        return {
            "symbol": self.symbol,
            "contractType": "LinearPerpetual",
            "status": "Trading",
            "baseCoin": self.base_coin,
            "quoteCoin": self.quote_coin,
            "launchTime": str(self.launch_time_ms),
            "deliveryTime": "0",
            "deliveryFeeRate": "",
            "priceScale": str(self.price_scale),
            "leverageFilter": {
                "minLeverage": "1",
                "maxLeverage": fmt(self.max_leverage),
                "leverageStep": "0.01",
            },
            "priceFilter": {
                "minPrice": fmt(self.tick_size),
                "maxPrice": fmt(self.price * 100),
                "tickSize": fmt(self.tick_size),
            },
            "lotSizeFilter": {
                "maxOrderQty": fmt(self.max_order_qty),
                "minOrderQty": fmt(self.min_order_qty),
                "qtyStep": fmt(self.qty_step),
                "postOnlyMaxOrderQty": fmt(self.max_order_qty),
                "maxMktOrderQty": fmt(self.max_mkt_order_qty or self.max_order_qty),
                "minNotionalValue": fmt(self.min_order_amt),
            },
            "unifiedMarginTrade": True,
            "fundingInterval": 480,
            "settleCoin": self.settle_coin,
            "copyTrading": "both",
            "upperFundingRate": "0.005",
            "lowerFundingRate": "-0.005",
            "isPreListing": False,
            "preListingInfo": None,
        }

    def ticker(self) -> dict[str, Any]:
        """The item of `GET /v5/market/tickers` list: every price is the configured price."""
        price = fmt(self.price)
        common: dict[str, Any] = {
            "symbol": self.symbol,
            "lastPrice": price,
            "bid1Price": price,
            "bid1Size": "1",
            "ask1Price": price,
            "ask1Size": "1",
            "prevPrice24h": price,
            "price24hPcnt": "0",
            "highPrice24h": price,
            "lowPrice24h": price,
            "turnover24h": "0",
            "volume24h": "0",
        }
        if self.category == "spot":
            return {**common, "usdIndexPrice": price}
        return {
            **common,
            "indexPrice": price,
            "markPrice": price,
            "prevPrice1h": price,
            "openInterest": "0",
            "openInterestValue": "0",
            "fundingRate": "0.0001",
            "nextFundingTime": "0",
            "predictedDeliveryPrice": "",
            "basisRate": "",
            "basis": "",
            "deliveryFeeRate": "",
            "deliveryTime": "0",
        }


def default_instruments() -> tuple[Instrument, ...]:
    """Spot BTCUSDT 60000, ETHUSDT 3000, SOLUSDT 150; linear perpetuals BTCUSDT and ETHUSDT."""
    d = Decimal
    return (
        Instrument("spot", "BTCUSDT", "BTC", "USDT", d("60000"), d("0.01"), d("0.000001"),
                   d("0.000048"), d("100"), d("1")),
        Instrument("spot", "ETHUSDT", "ETH", "USDT", d("3000"), d("0.01"), d("0.00001"),
                   d("0.00062"), d("2000"), d("1"), quote_precision=d("0.0000001")),
        Instrument("spot", "SOLUSDT", "SOL", "USDT", d("150"), d("0.01"), d("0.001"),
                   d("0.011"), d("50000"), d("1"), quote_precision=d("0.000001")),
        Instrument("linear", "BTCUSDT", "BTC", "USDT", d("60000"), d("0.1"), d("0.001"),
                   d("0.001"), d("1190"), d("5"), max_mkt_order_qty=d("119")),
        Instrument("linear", "ETHUSDT", "ETH", "USDT", d("3000"), d("0.01"), d("0.01"),
                   d("0.01"), d("7240"), d("5"), max_mkt_order_qty=d("724"),
                   launch_time_ms=1_615_766_400_000),
    )  # fmt: skip


class InstrumentBook:
    """The configured instruments, looked up by (category, symbol)."""

    def __init__(self, instruments: Iterable[Instrument]) -> None:
        self._all = tuple(instruments)
        self._by_key = {(i.category, i.symbol): i for i in self._all}

    def find(self, category: str, symbol: str) -> Instrument | None:
        """The instrument, or None when (category, symbol) is not listed."""
        return self._by_key.get((category, symbol))

    def in_category(self, category: str) -> list[Instrument]:
        """Instruments of one category in configured order ([] for an unknown category)."""
        return [i for i in self._all if i.category == category]

    def usd_price(self, coin: str) -> Decimal:
        """USD value of one coin: 1 for USDT/USDC, else the spot <coin>USDT price, else 0."""
        if coin in ("USDT", "USDC"):
            return Decimal(1)
        spot = self._by_key.get(("spot", f"{coin}USDT"))
        return spot.price if spot is not None else Decimal(0)


@dataclass(frozen=True, slots=True)
class Chain:
    """One withdrawal network of a coin; fees and minimums in the coin, min_accuracy: decimals."""

    chain: str
    chain_type: str
    confirmation: int
    withdraw_fee: Decimal
    withdraw_min: Decimal
    min_accuracy: int

    def to_wire(self) -> dict[str, Any]:
        """One item of a `GET /v5/asset/coin/query-info` row's `chains`."""
        return {
            "chainType": self.chain_type,
            "confirmation": str(self.confirmation),
            "withdrawFee": fmt(self.withdraw_fee),
            "depositMin": "0",
            "withdrawMin": fmt(self.withdraw_min),
            "chain": self.chain,
            "chainDeposit": "1",
            "chainWithdraw": "1",
            "minAccuracy": str(self.min_accuracy),
            "withdrawPercentageFee": "0",
            "contractAddress": "",
            "safeConfirmNumber": str(self.confirmation),
        }


@dataclass(frozen=True, slots=True)
class CoinInfo:
    """A coin the venue knows; remain_amount: daily withdrawal allowance, in the coin."""

    coin: str
    name: str
    remain_amount: Decimal
    chains: tuple[Chain, ...]

    def find_chain(self, chain: str) -> Chain | None:
        """The chain by name (case-insensitive), or None."""
        return next((c for c in self.chains if c.chain == chain.upper()), None)

    def to_wire(self) -> dict[str, Any]:
        """One row of `GET /v5/asset/coin/query-info`."""
        return {
            "name": self.name,
            "coin": self.coin,
            "remainAmount": fmt(self.remain_amount),
            "chains": [c.to_wire() for c in self.chains],
        }


_D = Decimal
#: coin -> CoinInfo for the coins the venue lists.
COINS: dict[str, CoinInfo] = {
    "USDT": CoinInfo("USDT", "USDT", _D("5000000"), (
        Chain("ETH", "ERC20", 6, _D("3"), _D("10"), 4),
        Chain("TRX", "TRC20", 20, _D("1"), _D("10"), 4),
    )),
    "BTC": CoinInfo("BTC", "BTC", _D("100"), (
        Chain("BTC", "BTC", 1, _D("0.0002"), _D("0.001"), 8),
    )),
    "ETH": CoinInfo("ETH", "ETH", _D("2000"), (
        Chain("ETH", "ETH", 6, _D("0.0012"), _D("0.002"), 8),
    )),
    "SOL": CoinInfo("SOL", "SOL", _D("50000"), (
        Chain("SOL", "SOL", 1, _D("0.008"), _D("0.1"), 8),
    )),
}  # fmt: skip
