"""VenueState used directly: configuration, decimal rendering and thread safety."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest

from keyplane.errors import InsufficientBalanceError, ParameterError
from keyplane.venue import OrderRequest, VenueConfig, VenueState
from keyplane.venue.instruments import fmt, parse_decimal

NOW = 1_700_000_000_000


class TestVenueConfig:
    def test_starting_balances_are_configurable(self) -> None:
        """A config with other starting balances funds new accounts with them."""
        state = VenueState(VenueConfig(starting_balances={"USDT": Decimal("5")}))
        (usdt,) = state.wallet(1, NOW)
        assert (usdt.coin, usdt.wallet) == ("USDT", Decimal("5"))

    def test_accounts_do_not_share_balances(self) -> None:
        """Spending in one account leaves another untouched."""
        state = VenueState()
        state.place_order(1, OrderRequest("spot", "BTCUSDT", "Sell", "Market", Decimal("1")), NOW)
        assert state.wallet(1, NOW)[1].wallet == 0
        assert state.wallet(2, NOW)[1].wallet == 1


class TestDecimalRendering:
    @pytest.mark.parametrize(
        ("value", "text"),
        [("100000", "100000"), ("1E+5", "100000"), ("0.000001", "0.000001"), ("1.50", "1.5"),
         ("-0", "0"), ("0E-8", "0"), ("1e-7", "0.0000001")],
    )  # fmt: skip
    def test_fmt_has_no_exponent(self, value: str, text: str) -> None:
        """fmt renders plain digits without exponent or trailing zeros."""
        assert fmt(Decimal(value)) == text

    @pytest.mark.parametrize("raw", ["", "abc", "inf", "NaN", "1e30", "1e-30", True, None, [1]])
    def test_parse_decimal_rejects_non_numbers(self, raw: object) -> None:
        """Non-numbers, infinities and absurd exponents are 10001."""
        with pytest.raises(ParameterError):
            parse_decimal(raw, "qty")

    def test_parse_decimal_accepts_floats_exactly_as_printed(self) -> None:
        """A JSON float 0.1 is Decimal("0.1"), not its binary expansion."""
        assert parse_decimal(0.1, "qty") == Decimal("0.1")


class TestThreadSafety:
    def test_concurrent_orders_never_overspend(self) -> None:
        """Many threads buying at once fill exactly as many orders as the balance allows."""
        state = VenueState(VenueConfig(starting_balances={"USDT": Decimal("6000")}))
        order = OrderRequest("spot", "BTCUSDT", "Buy", "Market", Decimal("0.01"),
                             market_unit="baseCoin")  # fmt: skip

        def buy(_: int) -> bool:
            try:
                state.place_order(7, order, NOW)
            except InsufficientBalanceError:
                return False
            return True

        with ThreadPoolExecutor(max_workers=16) as pool:
            filled = sum(pool.map(buy, range(50)))
        assert filled == 10
        usdt, btc = state.wallet(7, NOW)
        assert (usdt.wallet, btc.wallet) == (Decimal(0), Decimal("0.1"))
