"""Account reads of the demo venue: wallet-balance, account/info, coin/query-info."""

from __future__ import annotations

from typing import Any

from tests.venue.conftest import NOW_MS, Api

ACCOUNT_FIELDS = {
    "accountType", "accountLTV", "accountIMRate", "accountMMRate", "totalEquity",
    "totalWalletBalance", "totalMarginBalance", "totalAvailableBalance", "totalPerpUPL",
    "totalInitialMargin", "totalMaintenanceMargin",
}  # fmt: skip
COIN_STRING_FIELDS = {
    "coin", "equity", "usdValue", "walletBalance", "free", "locked", "spotHedgingQty",
    "borrowAmount", "availableToWithdraw", "availableToBorrow", "accruedInterest", "totalOrderIM",
    "totalPositionIM", "totalPositionMM", "unrealisedPnl", "cumRealisedPnl", "bonus", "spotBorrow",
}  # fmt: skip
COIN_BOOL_FIELDS = {"marginCollateral", "collateralSwitch"}


def wallet(api: Api, **params: str) -> dict[str, Any]:
    result = api.ok("GET", "/v5/account/wallet-balance", accountType="UNIFIED", **params)
    account: dict[str, Any] = result["list"][0]
    return account


class TestWalletBalance:
    def test_new_account_is_funded_on_first_sight(self, api: Api) -> None:
        """A never-seen uid starts with 100000 USDT and 1 BTC."""
        coins = api.as_uid(777).coins()
        assert coins["USDT"]["walletBalance"] == "100000"
        assert coins["BTC"]["walletBalance"] == "1"
        assert list(coins) == ["USDT", "BTC"]

    def test_account_shape_has_every_field(self, api: Api) -> None:
        """list[0] carries every account field as a string plus coin[]."""
        account = wallet(api)
        assert set(account) >= ACCOUNT_FIELDS | {"coin"}
        assert account["accountType"] == "UNIFIED"
        for name in ACCOUNT_FIELDS:
            assert isinstance(account[name], str), name

    def test_coin_shape_has_every_field(self, api: Api) -> None:
        """Each coin carries Bybit's fields: numbers as strings, bools as bools."""
        for coin in wallet(api)["coin"]:
            assert set(coin) >= COIN_STRING_FIELDS | COIN_BOOL_FIELDS
            for name in COIN_STRING_FIELDS:
                assert isinstance(coin[name], str), name
            for name in COIN_BOOL_FIELDS:
                assert coin[name] is True, name

    def test_usd_values_use_the_spot_price(self, api: Api) -> None:
        """usdValue is equity x spot price (USDT = 1) and totals add them up."""
        account = wallet(api)
        coins = {c["coin"]: c for c in account["coin"]}
        assert coins["BTC"]["usdValue"] == "60000"
        assert coins["USDT"]["usdValue"] == "100000"
        assert account["totalEquity"] == "160000"
        assert account["totalWalletBalance"] == "160000"
        assert account["totalAvailableBalance"] == "160000"
        assert account["accountIMRate"] == "0"

    def test_coin_filter(self, api: Api) -> None:
        """coin=BTC lists only BTC; a coin not held is listed with zeros."""
        assert list(api.coins(coin="BTC")) == ["BTC"]
        coins = api.coins(coin="SOL,USDT")
        assert list(coins) == ["USDT", "SOL"]
        assert coins["SOL"]["walletBalance"] == "0"

    def test_missing_account_type_is_10001(self, api: Api) -> None:
        """accountType is required."""
        env = api.get("/v5/account/wallet-balance")
        assert env["retCode"] == 10001
        assert "accountType" in env["retMsg"]

    def test_other_account_type_is_10001(self, api: Api) -> None:
        """Only UNIFIED is supported."""
        env = api.get("/v5/account/wallet-balance", accountType="SPOT")
        assert (env["retCode"], env["retMsg"]) == (10001, "accountType only support UNIFIED")


class TestAccountInfo:
    def test_reports_a_unified_account(self, api: Api) -> None:
        """unifiedMarginStatus 4 and the documented fields with their types."""
        result = api.ok("GET", "/v5/account/info")
        assert result == {
            "unifiedMarginStatus": 4,
            "marginMode": "REGULAR_MARGIN",
            "isMasterTrader": False,
            "spotHedgingStatus": "OFF",
            "updatedTime": str(NOW_MS),
            "dcpStatus": "OFF",
            "timeWindow": 10,
            "smpGroup": 0,
        }


class TestCoinInfo:
    def test_lists_coins_with_chains(self, api: Api) -> None:
        """rows cover USDT, BTC, ETH and SOL, each with chains in Bybit's shape."""
        rows = api.ok("GET", "/v5/asset/coin/query-info")["rows"]
        assert [r["coin"] for r in rows] == ["USDT", "BTC", "ETH", "SOL"]
        chain = rows[1]["chains"][0]
        assert chain["chain"] == "BTC"
        assert chain["chainDeposit"] == chain["chainWithdraw"] == "1"
        assert chain["withdrawPercentageFee"] == "0"
        assert chain["contractAddress"] == ""
        for name in ("chainType", "confirmation", "withdrawFee", "depositMin", "withdrawMin",
                     "minAccuracy"):  # fmt: skip
            assert isinstance(chain[name], str)

    def test_coin_filter(self, api: Api) -> None:
        """coin=eth lists only ETH."""
        rows = api.ok("GET", "/v5/asset/coin/query-info", coin="eth")["rows"]
        assert [r["coin"] for r in rows] == ["ETH"]
