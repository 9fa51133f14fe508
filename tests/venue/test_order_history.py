"""GET /v5/order/history on the demo venue: the caller's closed orders, newest first."""

from __future__ import annotations

from typing import Any

import pytest

from tests.venue.conftest import Api

SPOT = {"category": "spot", "symbol": "BTCUSDT"}
LINEAR = {"category": "linear", "symbol": "BTCUSDT"}
RESTING = {**SPOT, "side": "Buy", "orderType": "Limit", "qty": "0.1", "price": "50000"}
FILLING = {**SPOT, "side": "Buy", "orderType": "Market", "qty": "600"}


def place(api: Api, body: dict[str, Any]) -> str:
    """Place an order; its orderId."""
    env = api.order(**body)
    assert env["retCode"] == 0, env
    order_id: str = env["result"]["orderId"]
    return order_id


def cancel(api: Api, order_id: str, where: dict[str, str] = SPOT) -> None:
    api.ok("POST", "/v5/order/cancel", {**where, "orderId": order_id})


def history(api: Api, category: str = "spot", **params: str) -> dict[str, Any]:
    return api.ok("GET", "/v5/order/history", category=category, **params)


def ids(api: Api, category: str = "spot", **params: str) -> list[str]:
    return [o["orderId"] for o in history(api, category, **params)["list"]]


@pytest.fixture
def three(api: Api) -> tuple[str, str, str]:
    """(filled, cancelled, still open) orderIds, placed in that order."""
    filled = place(api, FILLING)
    cancelled = place(api, RESTING)
    cancel(api, cancelled)
    resting = place(api, {**RESTING, "price": "40000"})
    return filled, cancelled, resting


class TestOrderHistory:
    def test_lists_closed_orders_newest_first(self, api: Api, three: tuple[str, ...]) -> None:
        """Filled and cancelled orders are listed, newest first; the resting one is not."""
        filled, cancelled, _ = three
        result = history(api)
        assert [o["orderId"] for o in result["list"]] == [cancelled, filled]
        assert [o["orderStatus"] for o in result["list"]] == ["Cancelled", "Filled"]
        assert (result["category"], result["nextPageCursor"]) == ("spot", "")

    def test_order_status_narrows(self, api: Api, three: tuple[str, ...]) -> None:
        """orderStatus=Filled / Cancelled keep only those; an open status lists nothing."""
        filled, cancelled, _ = three
        assert ids(api, orderStatus="Filled") == [filled]
        assert ids(api, orderStatus="Cancelled") == [cancelled]
        assert ids(api, orderStatus="Rejected") == []
        assert ids(api, orderStatus="New") == []

    def test_unknown_order_status_is_10001(self, api: Api) -> None:
        """An orderStatus Bybit does not have is a parameter error naming it."""
        env = api.get("/v5/order/history", category="spot", orderStatus="Done")
        assert env["retCode"] == 10001
        assert "orderStatus" in env["retMsg"]

    def test_missing_category_is_10001(self, api: Api) -> None:
        """category is required."""
        assert api.get("/v5/order/history")["retCode"] == 10001

    def test_by_id_finds_closed_orders_only(self, api: Api, three: tuple[str, ...]) -> None:
        """orderId / orderLinkId find a closed order; a resting order is not history."""
        filled, _, resting = three
        assert ids(api, orderId=filled) == [filled]
        assert ids(api, orderId=resting) == []
        linked = place(api, {**FILLING, "orderLinkId": "hist-1"})
        assert ids(api, orderLinkId="hist-1") == [linked]

    def test_items_match_the_realtime_rendering(self, api: Api, three: tuple[str, ...]) -> None:
        """Each item carries the same fields and values as /v5/order/realtime's."""
        filled, cancelled, _ = three
        for order_id in (filled, cancelled):
            (item,) = history(api, orderId=order_id)["list"]
            realtime = api.ok("GET", "/v5/order/realtime", category="spot", orderId=order_id)
            assert item == realtime["list"][0]

    def test_only_own_orders_and_own_category(self, api: Api, three: tuple[str, ...]) -> None:
        """Another account sees none of them; linear history is separate from spot."""
        other = api.as_uid(2002)
        assert ids(other) == []
        assert ids(api, "linear") == []
        linear = place(api, {**LINEAR, "side": "Buy", "orderType": "Market", "qty": "0.01"})
        assert ids(api, "linear") == [linear]
        assert ids(api, "option") == []
        assert three[0] in ids(api, symbol="BTCUSDT")
        assert ids(api, symbol="ETHUSDT") == []

    def test_pages_with_limit_and_cursor(self, api: Api) -> None:
        """limit pages the list; nextPageCursor continues it and is "" on the last page."""
        placed = [place(api, FILLING) for _ in range(5)]
        first = history(api, limit="2")
        second = history(api, limit="2", cursor=first["nextPageCursor"])
        third = history(api, limit="2", cursor=second["nextPageCursor"])
        pages = [first, second, third]
        assert [o["orderId"] for p in pages for o in p["list"]] == placed[::-1]
        assert third["nextPageCursor"] == ""
        assert api.get("/v5/order/history", category="spot", limit="51")["retCode"] == 10001
