"""Public market routes of the demo venue: time, instruments-info, tickers."""

from __future__ import annotations

import pytest

from tests.venue.conftest import NOW_MS, Api


class TestMarketTime:
    def test_time_comes_from_the_clock(self, api: Api) -> None:
        """timeSecond and timeNano are the frozen clock in s and ns, as strings."""
        result = api.ok("GET", "/v5/market/time")
        assert result == {"timeSecond": str(NOW_MS // 1000), "timeNano": str(NOW_MS * 10**6)}


class TestInstrumentsInfo:
    def test_spot_lists_every_spot_symbol(self, api: Api) -> None:
        """category=spot lists BTCUSDT, ETHUSDT and SOLUSDT with an empty nextPageCursor."""
        result = api.ok("GET", "/v5/market/instruments-info", category="spot")
        assert result["category"] == "spot"
        assert [i["symbol"] for i in result["list"]] == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
        assert result["nextPageCursor"] == ""

    def test_spot_item_has_bybit_fields(self, api: Api) -> None:
        """A spot item carries Bybit's fields with numbers as strings."""
        result = api.ok("GET", "/v5/market/instruments-info", category="spot", symbol="BTCUSDT")
        (item,) = result["list"]
        assert item["baseCoin"] == "BTC"
        assert item["quoteCoin"] == "USDT"
        assert item["innovation"] == "0"
        assert item["status"] == "Trading"
        assert item["marginTrading"] in ("utaOnly", "both", "none")
        assert set(item["lotSizeFilter"]) >= {
            "basePrecision", "quotePrecision", "minOrderQty", "maxOrderQty",
            "minOrderAmt", "maxOrderAmt",
        }  # fmt: skip
        assert all(isinstance(v, str) for v in item["lotSizeFilter"].values())
        assert item["priceFilter"] == {"tickSize": "0.01"}

    def test_linear_item_has_contract_fields(self, api: Api) -> None:
        """A linear item adds contractType, settleCoin, leverageFilter and lotSizeFilter.qtyStep."""
        result = api.ok("GET", "/v5/market/instruments-info", category="linear")
        assert [i["symbol"] for i in result["list"]] == ["BTCUSDT", "ETHUSDT"]
        item = result["list"][0]
        assert item["contractType"] == "LinearPerpetual"
        assert item["settleCoin"] == "USDT"
        assert item["deliveryTime"] == "0"
        assert item["deliveryFeeRate"] == ""
        assert item["unifiedMarginTrade"] is True
        assert item["isPreListing"] is False
        assert set(item["leverageFilter"]) == {"minLeverage", "maxLeverage", "leverageStep"}
        assert set(item["priceFilter"]) == {"minPrice", "maxPrice", "tickSize"}
        assert item["lotSizeFilter"]["qtyStep"] == "0.001"
        for name in ("postOnlyMaxOrderQty", "maxMktOrderQty", "minNotionalValue"):
            assert isinstance(item["lotSizeFilter"][name], str)
        for name in ("launchTime", "priceScale", "upperFundingRate", "lowerFundingRate"):
            assert isinstance(item[name], str)

    @pytest.mark.parametrize("category", ["inverse", "option", "futures"])
    def test_other_categories_answer_an_empty_list(self, api: Api, category: str) -> None:
        """inverse, option and unknown categories answer an empty list, not an error."""
        result = api.ok("GET", "/v5/market/instruments-info", category=category)
        assert result == {"category": category, "list": [], "nextPageCursor": ""}

    def test_symbol_filters(self, api: Api) -> None:
        """symbol narrows the list to that symbol; an unknown symbol gives an empty list."""
        one = api.ok("GET", "/v5/market/instruments-info", category="spot", symbol="ETHUSDT")
        assert [i["symbol"] for i in one["list"]] == ["ETHUSDT"]
        none = api.ok("GET", "/v5/market/instruments-info", category="spot", symbol="DOGEUSDT")
        assert none["list"] == []

    def test_base_coin_and_status_filter(self, api: Api) -> None:
        """baseCoin narrows the list; a status other than Trading (PreLaunch) matches nothing."""
        sol = api.ok("GET", "/v5/market/instruments-info", category="spot", baseCoin="SOL")
        assert [i["symbol"] for i in sol["list"]] == ["SOLUSDT"]
        pre = api.ok("GET", "/v5/market/instruments-info", category="linear", status="PreLaunch")
        assert pre["list"] == []

    def test_limit_and_cursor_page_through(self, api: Api) -> None:
        """limit pages the list and nextPageCursor leads to the rest."""
        first = api.ok("GET", "/v5/market/instruments-info", category="spot", limit="2")
        assert len(first["list"]) == 2
        rest = api.ok(
            "GET", "/v5/market/instruments-info", category="spot", limit="2",
            cursor=first["nextPageCursor"],
        )  # fmt: skip
        assert [i["symbol"] for i in rest["list"]] == ["SOLUSDT"]
        assert rest["nextPageCursor"] == ""

    def test_missing_category_is_10001(self, api: Api) -> None:
        """category is required."""
        env = api.get("/v5/market/instruments-info")
        assert env["retCode"] == 10001
        assert "category" in env["retMsg"]


class TestTickers:
    def test_prices_are_the_configured_price(self, api: Api) -> None:
        """lastPrice, bid1Price and ask1Price are the instrument's fixed price."""
        result = api.ok("GET", "/v5/market/tickers", category="spot", symbol="BTCUSDT")
        (ticker,) = result["list"]
        assert ticker["lastPrice"] == ticker["bid1Price"] == ticker["ask1Price"] == "60000"

    def test_linear_tickers_carry_mark_price(self, api: Api) -> None:
        """Linear tickers add markPrice and indexPrice."""
        result = api.ok("GET", "/v5/market/tickers", category="linear")
        eth = next(t for t in result["list"] if t["symbol"] == "ETHUSDT")
        assert eth["markPrice"] == eth["indexPrice"] == "3000"

    def test_unknown_symbol_is_10001(self, api: Api) -> None:
        """An unknown symbol of a traded category is a parameter error."""
        env = api.get("/v5/market/tickers", category="spot", symbol="NOPEUSDT")
        assert env["retCode"] == 10001
