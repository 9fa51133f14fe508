"""Orders on the demo venue: spot market and limit orders, validation, listing, linear orders."""

from __future__ import annotations

from typing import Any

import pytest

from tests.venue.conftest import Api

SPOT = {"category": "spot", "symbol": "BTCUSDT"}
LINEAR = {"category": "linear", "symbol": "BTCUSDT"}


def place(api: Api, **body: Any) -> dict[str, Any]:
    env = api.order(**body)
    assert env["retCode"] == 0, env
    result: dict[str, Any] = env["result"]
    return result


def open_orders(api: Api, category: str = "spot", **params: str) -> list[dict[str, Any]]:
    result = api.ok("GET", "/v5/order/realtime", category=category, **params)
    orders: list[dict[str, Any]] = result["list"]
    return orders


class TestSpotMarketOrders:
    def test_buy_without_market_unit_is_in_quote_coin(self, api: Api) -> None:
        """qty "600" buys 600 USDT worth: 0.01 BTC at 60000."""
        place(api, **SPOT, side="Buy", orderType="Market", qty="600")
        coins = api.coins()
        assert coins["USDT"]["walletBalance"] == "99400"
        assert coins["BTC"]["walletBalance"] == "1.01"

    def test_quote_buy_rounds_base_down_to_base_precision(self, api: Api) -> None:
        """qty "100" USDT buys floor(100/60000, 0.000001) BTC and pays exactly that much."""
        result = place(api, **SPOT, side="Buy", orderType="Market", qty="100")
        coins = api.coins()
        assert coins["BTC"]["walletBalance"] == "1.001666"
        assert coins["USDT"]["walletBalance"] == "99900.04"
        (order,) = open_orders(api, orderId=result["orderId"])
        assert order["marketUnit"] == "quoteCoin"
        assert (order["qty"], order["cumExecQty"], order["cumExecValue"]) == (
            "100", "0.001666", "99.96",
        )  # fmt: skip

    def test_buy_in_base_coin(self, api: Api) -> None:
        """marketUnit baseCoin: qty 0.5 ETH costs 1500 USDT."""
        place(api, category="spot", symbol="ETHUSDT", side="Buy", orderType="Market",
              qty="0.5", marketUnit="baseCoin")  # fmt: skip
        coins = api.coins()
        assert coins["USDT"]["walletBalance"] == "98500"
        assert coins["ETH"]["walletBalance"] == "0.5"

    def test_sell_is_in_base_coin(self, api: Api) -> None:
        """A market sell without marketUnit sells qty BTC for qty x 60000 USDT."""
        place(api, **SPOT, side="Sell", orderType="Market", qty="0.25")
        coins = api.coins()
        assert coins["BTC"]["walletBalance"] == "0.75"
        assert coins["USDT"]["walletBalance"] == "115000"

    def test_sell_in_quote_coin(self, api: Api) -> None:
        """marketUnit quoteCoin on a sell: qty is the USDT to receive."""
        place(api, **SPOT, side="Sell", orderType="Market", qty="6000", marketUnit="quoteCoin")
        coins = api.coins()
        assert coins["BTC"]["walletBalance"] == "0.9"
        assert coins["USDT"]["walletBalance"] == "106000"

    def test_filled_order_is_listed_as_closed(self, api: Api) -> None:
        """A filled market order is not open; it shows up with openOnly=1 as Filled."""
        result = place(api, **SPOT, side="Buy", orderType="Market", qty="600")
        assert open_orders(api) == []
        (order,) = open_orders(api, openOnly="1")
        assert order["orderId"] == result["orderId"]
        assert order["orderStatus"] == "Filled"
        assert order["avgPrice"] == "60000"
        assert order["leavesQty"] == "0"

    def test_insufficient_quote_is_110007(self, api: Api) -> None:
        """Buying more than the USDT balance fails with 110007 and moves nothing."""
        env = api.order(**SPOT, side="Buy", orderType="Market", qty="2", marketUnit="baseCoin")
        assert env["retCode"] == 110007
        assert api.coins()["USDT"]["walletBalance"] == "100000"

    def test_insufficient_base_is_110007(self, api: Api) -> None:
        """Selling more BTC than held fails with 110007."""
        env = api.order(**SPOT, side="Sell", orderType="Market", qty="1.5")
        assert env["retCode"] == 110007
        assert api.coins()["BTC"]["walletBalance"] == "1"


class TestSpotLimitOrders:
    def test_buy_rests_and_locks_quote(self, api: Api) -> None:
        """A limit buy below the price rests as New and locks qty x price USDT."""
        result = place(api, **SPOT, side="Buy", orderType="Limit", qty="0.1", price="50000")
        (order,) = open_orders(api)
        assert order["orderId"] == result["orderId"]
        assert order["orderStatus"] == "New"
        assert (order["price"], order["qty"], order["leavesQty"]) == ("50000", "0.1", "0.1")
        usdt = api.coins()["USDT"]
        assert (usdt["walletBalance"], usdt["locked"], usdt["free"]) == ("100000", "5000", "95000")

    def test_sell_rests_and_locks_base(self, api: Api) -> None:
        """A limit sell above the price locks the BTC being sold."""
        place(api, **SPOT, side="Sell", orderType="Limit", qty="0.4", price="70000")
        btc = api.coins()["BTC"]
        assert (btc["locked"], btc["availableToWithdraw"]) == ("0.4", "0.6")

    def test_cancel_unlocks(self, api: Api) -> None:
        """Cancelling a resting order returns its ids, releases the lock and closes it."""
        result = place(api, **SPOT, side="Buy", orderType="Limit", qty="0.1", price="50000",
                       orderLinkId="my-order-1")  # fmt: skip
        cancelled = api.ok("POST", "/v5/order/cancel", {**SPOT, "orderId": result["orderId"]})
        assert cancelled == {"orderId": result["orderId"], "orderLinkId": "my-order-1"}
        usdt = api.coins()["USDT"]
        assert (usdt["locked"], usdt["free"]) == ("0", "100000")
        assert open_orders(api) == []
        (order,) = open_orders(api, orderLinkId="my-order-1")
        assert order["orderStatus"] == "Cancelled"

    def test_cancel_by_order_link_id(self, api: Api) -> None:
        """orderLinkId identifies the order to cancel."""
        place(api, **SPOT, side="Sell", orderType="Limit", qty="0.1", price="70000",
              orderLinkId="abc")  # fmt: skip
        api.ok("POST", "/v5/order/cancel", {**SPOT, "orderLinkId": "abc"})
        assert api.coins()["BTC"]["locked"] == "0"

    def test_locked_funds_cannot_be_spent_twice(self, api: Api) -> None:
        """A second order needing the locked USDT fails with 110007."""
        place(api, **SPOT, side="Buy", orderType="Limit", qty="1.5", price="50000")
        env = api.order(**SPOT, side="Buy", orderType="Limit", qty="1", price="50000")
        assert env["retCode"] == 110007

    def test_crossing_buy_fills_at_the_limit_price(self, api: Api) -> None:
        """A limit buy at or above the venue price fills at once at its own price."""
        place(api, **SPOT, side="Buy", orderType="Limit", qty="0.1", price="61000")
        coins = api.coins()
        assert (coins["USDT"]["walletBalance"], coins["BTC"]["walletBalance"]) == ("93900", "1.1")
        assert open_orders(api) == []

    def test_crossing_sell_fills_at_the_limit_price(self, api: Api) -> None:
        """A limit sell at or below the venue price fills at once."""
        place(api, **SPOT, side="Sell", orderType="Limit", qty="0.5", price="60000")
        assert api.coins()["USDT"]["walletBalance"] == "130000"

    def test_crossing_post_only_is_cancelled(self, api: Api) -> None:
        """A PostOnly order that would take liquidity is cancelled without moving funds."""
        result = place(api, **SPOT, side="Buy", orderType="Limit", qty="0.1", price="61000",
                       timeInForce="PostOnly")  # fmt: skip
        (order,) = open_orders(api, orderId=result["orderId"])
        assert order["orderStatus"] == "Cancelled"
        assert api.coins()["USDT"]["walletBalance"] == "100000"

    def test_cancel_unknown_order_is_110001(self, api: Api) -> None:
        """An unknown orderId cannot be cancelled."""
        env = api.post("/v5/order/cancel", {**SPOT, "orderId": "no-such-order"})
        assert (env["retCode"], env["retMsg"]) == (110001, "Order does not exist.")

    def test_cancel_filled_order_is_110001(self, api: Api) -> None:
        """A filled order cannot be cancelled."""
        result = place(api, **SPOT, side="Buy", orderType="Market", qty="600")
        env = api.post("/v5/order/cancel", {**SPOT, "orderId": result["orderId"]})
        assert env["retCode"] == 110001

    def test_cancel_twice_is_110001(self, api: Api) -> None:
        """An order already cancelled cannot be cancelled again."""
        result = place(api, **SPOT, side="Buy", orderType="Limit", qty="0.1", price="50000")
        api.ok("POST", "/v5/order/cancel", {**SPOT, "orderId": result["orderId"]})
        env = api.post("/v5/order/cancel", {**SPOT, "orderId": result["orderId"]})
        assert env["retCode"] == 110001

    def test_cannot_cancel_another_accounts_order(self, api: Api) -> None:
        """Another account's orderId is 110001 and the order stays open."""
        result = place(api, **SPOT, side="Buy", orderType="Limit", qty="0.1", price="50000")
        env = api.as_uid(2002).post("/v5/order/cancel", {**SPOT, "orderId": result["orderId"]})
        assert env["retCode"] == 110001
        assert len(open_orders(api)) == 1


class TestOrderValidation:
    @pytest.mark.parametrize(
        ("body", "needle"),
        [
            ({"symbol": "BTCUSDT", "side": "Buy", "orderType": "Market", "qty": "1"}, "category"),
            ({**SPOT, "category": "inverse", "side": "Buy", "orderType": "Market", "qty": "1"},
             "category"),
            ({**SPOT, "category": "nope", "side": "Buy", "orderType": "Market", "qty": "1"},
             "category"),
            ({"category": "spot", "side": "Buy", "orderType": "Market", "qty": "1"}, "symbol"),
            ({**SPOT, "symbol": "DOGEUSDT", "side": "Buy", "orderType": "Market", "qty": "10"},
             "DOGEUSDT"),
            ({**SPOT, "orderType": "Market", "qty": "10"}, "side"),
            ({**SPOT, "side": "buy", "orderType": "Market", "qty": "10"}, "side"),
            ({**SPOT, "side": "Buy", "qty": "10"}, "orderType"),
            ({**SPOT, "side": "Buy", "orderType": "Stop", "qty": "10"}, "orderType"),
            ({**SPOT, "side": "Buy", "orderType": "Market"}, "qty"),
            ({**SPOT, "side": "Buy", "orderType": "Market", "qty": "abc"}, "qty"),
            ({**SPOT, "side": "Buy", "orderType": "Market", "qty": "0"}, "qty"),
            ({**SPOT, "side": "Buy", "orderType": "Market", "qty": "-5"}, "qty"),
            ({**SPOT, "side": "Buy", "orderType": "Market", "qty": "NaN"}, "qty"),
            ({**SPOT, "side": "Buy", "orderType": "Market", "qty": True}, "qty"),
            ({**SPOT, "side": "Buy", "orderType": "Market", "qty": "1e999999"}, "qty"),
            ({**SPOT, "side": "Sell", "orderType": "Market", "qty": "0.00001"}, "minOrderQty"),
            ({**SPOT, "side": "Sell", "orderType": "Market", "qty": "0.0010005"},
             "basePrecision"),
            ({**SPOT, "side": "Buy", "orderType": "Market", "qty": "0.5"}, "minOrderAmt"),
            ({**SPOT, "side": "Buy", "orderType": "Limit", "qty": "0.1"}, "price"),
            ({**SPOT, "side": "Buy", "orderType": "Limit", "qty": "0.1", "price": "-1"}, "price"),
            ({**SPOT, "side": "Buy", "orderType": "Limit", "qty": "0.1", "price": "50000.001"},
             "tickSize"),
            ({**SPOT, "side": "Buy", "orderType": "Market", "qty": "10", "marketUnit": "usd"},
             "marketUnit"),
            ({**SPOT, "side": "Buy", "orderType": "Limit", "qty": "0.1", "price": "50000",
              "timeInForce": "GTD"}, "timeInForce"),
            ({**SPOT, "side": "Buy", "orderType": "Market", "qty": "10",
              "orderLinkId": "x" * 37}, "orderLinkId"),
            ({**LINEAR, "side": "Buy", "orderType": "Market", "qty": "0.0005"}, "minOrderQty"),
            ({**LINEAR, "side": "Buy", "orderType": "Market", "qty": "200"}, "maxMktOrderQty"),
            ({**LINEAR, "side": "Sell", "orderType": "Market", "qty": "0.01",
              "reduceOnly": True}, "reduceOnly"),
            ({**LINEAR, "side": "Buy", "orderType": "Market", "qty": "0.01",
              "positionIdx": 1}, "positionIdx"),
        ],
    )  # fmt: skip
    def test_bad_order_is_10001_naming_the_parameter(
        self, api: Api, body: dict[str, Any], needle: str
    ) -> None:
        """Every malformed order is 10001 and retMsg names what is wrong."""
        env = api.order(**body)
        assert env["retCode"] == 10001, env
        assert needle in env["retMsg"]
        assert env["result"] == {}

    def test_duplicate_order_link_id_is_10001(self, api: Api) -> None:
        """Reusing an orderLinkId of the same account is refused; other accounts may use it."""
        body = {**SPOT, "side": "Buy", "orderType": "Market", "qty": "600", "orderLinkId": "dup"}
        place(api, **body)
        env = api.order(**body)
        assert (env["retCode"], env["retMsg"]) == (10001, "OrderLinkedID is duplicate")
        place(api.as_uid(2002), **body)

    def test_numbers_may_be_sent_as_json_numbers(self, api: Api) -> None:
        """qty and price as JSON numbers are accepted like strings."""
        place(api, **SPOT, side="Buy", orderType="Limit", qty=0.1, price=50000)
        assert api.coins()["USDT"]["locked"] == "5000"

    def test_cancel_needs_an_order_id(self, api: Api) -> None:
        """Cancel without orderId or orderLinkId is 10001."""
        env = api.post("/v5/order/cancel", SPOT)
        assert env["retCode"] == 10001
        assert "orderId" in env["retMsg"]


class TestOrderList:
    def test_only_own_orders_are_listed(self, api: Api) -> None:
        """Each account sees its own orders only, even by orderId."""
        mine = place(api, **SPOT, side="Buy", orderType="Limit", qty="0.1", price="50000")
        other = api.as_uid(2002)
        theirs = place(other, **SPOT, side="Buy", orderType="Limit", qty="0.2", price="40000")
        assert [o["orderId"] for o in open_orders(api)] == [mine["orderId"]]
        assert [o["orderId"] for o in open_orders(other)] == [theirs["orderId"]]
        assert open_orders(api, orderId=theirs["orderId"]) == []

    def test_newest_first_and_filtered_by_symbol(self, api: Api) -> None:
        """Open orders come newest first; symbol narrows them."""
        first = place(api, **SPOT, side="Buy", orderType="Limit", qty="0.1", price="50000")
        second = place(api, category="spot", symbol="ETHUSDT", side="Buy", orderType="Limit",
                       qty="1", price="2000")  # fmt: skip
        assert [o["orderId"] for o in open_orders(api)] == [second["orderId"], first["orderId"]]
        assert [o["symbol"] for o in open_orders(api, symbol="ETHUSDT")] == ["ETHUSDT"]

    def test_order_has_bybit_fields(self, api: Api) -> None:
        """An order item carries Bybit's fields with times as ms strings."""
        place(api, **SPOT, side="Buy", orderType="Limit", qty="0.1", price="50000",
              orderLinkId="fields")  # fmt: skip
        (order,) = open_orders(api)
        for name in (
            "orderId",
            "orderLinkId",
            "symbol",
            "price",
            "qty",
            "side",
            "orderStatus",
            "orderType",
            "timeInForce",
            "avgPrice",
            "cumExecQty",
            "cumExecValue",
            "cumExecFee",
            "leavesQty",
            "createdTime",
            "updatedTime",
            "marketUnit",
        ):
            assert isinstance(order[name], str), name  # fmt: skip
        assert order["createdTime"] == "1700000000000"
        assert order["timeInForce"] == "GTC"
        assert order["orderLinkId"] == "fields"

    def test_categories_are_separate(self, api: Api) -> None:
        """A spot order is not listed under linear; unknown categories list nothing."""
        place(api, **SPOT, side="Buy", orderType="Limit", qty="0.1", price="50000")
        assert open_orders(api, "linear") == []
        assert open_orders(api, "option") == []

    def test_missing_category_is_10001(self, api: Api) -> None:
        """category is required."""
        assert api.get("/v5/order/realtime")["retCode"] == 10001


class TestLinearOrders:
    def test_market_buy_opens_a_long_position(self, api: Api) -> None:
        """A linear market buy fills at the price and opens a long of that size."""
        place(api, **LINEAR, side="Buy", orderType="Market", qty="0.5")
        result = api.ok("GET", "/v5/position/list", category="linear")
        (pos,) = result["list"]
        assert (pos["symbol"], pos["side"], pos["size"], pos["avgPrice"]) == (
            "BTCUSDT", "Buy", "0.5", "60000",
        )  # fmt: skip
        assert pos["positionValue"] == "30000"
        assert pos["unrealisedPnl"] == "0"
        usdt = api.coins()["USDT"]
        assert (usdt["walletBalance"], usdt["totalPositionIM"]) == ("100000", "3000")
        assert usdt["availableToWithdraw"] == "97000"

    def test_opposite_order_reduces_and_closes(self, api: Api) -> None:
        """Selling the same size closes the position; the list is empty again."""
        place(api, **LINEAR, side="Buy", orderType="Market", qty="0.5")
        place(api, **LINEAR, side="Sell", orderType="Market", qty="0.2", reduceOnly=True)
        (pos,) = api.ok("GET", "/v5/position/list", category="linear")["list"]
        assert pos["size"] == "0.3"
        place(api, **LINEAR, side="Sell", orderType="Market", qty="0.3")
        assert api.ok("GET", "/v5/position/list", category="linear")["list"] == []

    def test_short_position(self, api: Api) -> None:
        """A market sell from flat opens a short (side Sell)."""
        place(api, category="linear", symbol="ETHUSDT", side="Sell", orderType="Market", qty="2")
        result = api.ok("GET", "/v5/position/list", category="linear", symbol="ETHUSDT")
        (pos,) = result["list"]
        assert (pos["side"], pos["size"]) == ("Sell", "2")

    def test_flat_symbol_lists_an_empty_position(self, api: Api) -> None:
        """Asking for a symbol without a position gives one flat entry, like Bybit."""
        (pos,) = api.ok("GET", "/v5/position/list", category="linear", symbol="BTCUSDT")["list"]
        assert (pos["side"], pos["size"]) == ("", "0")

    def test_limit_rests_and_cancels(self, api: Api) -> None:
        """A linear limit order rests with order margin and is released by cancel."""
        result = place(api, **LINEAR, side="Buy", orderType="Limit", qty="1", price="50000")
        (order,) = open_orders(api, "linear")
        assert order["orderStatus"] == "New"
        assert api.coins()["USDT"]["totalOrderIM"] == "5000"
        api.ok("POST", "/v5/order/cancel", {**LINEAR, "orderId": result["orderId"]})
        assert api.coins()["USDT"]["totalOrderIM"] == "0"

    def test_margin_beyond_balance_is_110007(self, api: Api) -> None:
        """A position whose margin (value / 10) exceeds the USDT balance is refused."""
        env = api.order(**LINEAR, side="Buy", orderType="Market", qty="17")
        assert env["retCode"] == 110007

    def test_spot_category_positions_are_empty(self, api: Api) -> None:
        """position/list for a category other than linear is an empty list."""
        result = api.ok("GET", "/v5/position/list", category="spot")
        assert result == {"category": "spot", "list": [], "nextPageCursor": ""}
