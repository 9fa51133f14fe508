"""Venue events reach subscribed private connections of the same account, shaped as Bybit's
pushes; /v5/trade authenticates and places orders through the REST permission checks."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from keyplane.venue import OrderRequest
from tests.ws.conftest import Client, WsServer


def _subscribed(server: WsServer, topics: list[str], **key_args: Any) -> Client:
    api_key, secret = server.new_key(**key_args)
    client = server.connect()
    assert client.auth(api_key, secret)["success"] is True
    assert client.ask({"op": "subscribe", "args": topics})["success"] is True
    return client


def _place(server: WsServer, uid: int, **fields: Any) -> str:
    """Place an order on the venue from this (non-loop) thread, as a worker thread would."""
    req = OrderRequest(**{"category": "spot", "symbol": "BTCUSDT", "side": "Buy", **fields})
    return server.app.state.venue.place_order(uid, req, int(time.time() * 1000)).order_id


def _pushes(client: Client, count: int) -> dict[str, dict[str, Any]]:
    got = [client.recv() for _ in range(count)]
    return {m["topic"]: m for m in got}


class TestPush:
    def test_filled_spot_order_pushes_order_execution_wallet(self, server: WsServer) -> None:
        """A market fill: order (Filled), execution and wallet pushes, Bybit-shaped."""
        client = _subscribed(server, ["order", "execution", "wallet"])
        order_id = _place(
            server, server.uid, order_type="Market", qty=Decimal("0.01"), market_unit="baseCoin"
        )
        pushes = _pushes(client, 3)
        assert set(pushes) == {"order", "execution", "wallet"}
        order = pushes["order"]
        assert set(order) == {"id", "topic", "creationTime", "data"}
        assert isinstance(order["creationTime"], int)
        item = order["data"][0]
        assert item["orderId"] == order_id
        assert (item["category"], item["symbol"], item["side"]) == ("spot", "BTCUSDT", "Buy")
        assert (item["orderStatus"], item["cumExecQty"], item["qty"]) == ("Filled", "0.01", "0.01")
        for name in ("price", "avgPrice", "cumExecValue", "createdTime", "updatedTime"):
            assert isinstance(item[name], str), name
        fill = pushes["execution"]["data"][0]
        assert (fill["orderId"], fill["execQty"], fill["execType"]) == (order_id, "0.01", "Trade")
        wallet = pushes["wallet"]["data"][0]
        assert wallet["accountType"] == "UNIFIED"
        coins = {c["coin"]: c for c in wallet["coin"]}
        assert Decimal(coins["BTC"]["walletBalance"]) == Decimal("1.01")

    def test_category_topic_and_unsubscribed_topics(self, server: WsServer) -> None:
        """order.spot gets spot orders under its own topic; unsubscribed topics send nothing."""
        client = _subscribed(server, ["order.spot"])
        _place(server, server.uid, order_type="Limit", qty=Decimal("0.01"), price=Decimal("1000"))
        message = client.recv()
        assert message["topic"] == "order.spot"
        assert message["data"][0]["orderStatus"] == "New"
        assert client.ask({"op": "ping"})["op"] == "pong"  # no execution/wallet push queued

    def test_cancel_pushes_cancelled_order(self, server: WsServer) -> None:
        """Cancelling a resting order pushes it with orderStatus Cancelled."""
        client = _subscribed(server, ["order"])
        order_id = _place(
            server, server.uid, order_type="Limit", qty=Decimal("0.01"), price=Decimal("1000")
        )
        assert client.recv()["data"][0]["orderStatus"] == "New"
        now = int(time.time() * 1000)
        server.app.state.venue.cancel_order(server.uid, "spot", "BTCUSDT", now, order_id=order_id)
        item = client.recv()["data"][0]
        assert (item["orderId"], item["orderStatus"]) == (order_id, "Cancelled")

    def test_other_accounts_receive_nothing(self, server: WsServer) -> None:
        """Another account's orders are never pushed to this connection."""
        client = _subscribed(server, ["order"])
        _place(server, server.uid + 999, order_type="Market", qty=Decimal("100"))
        assert client.ask({"op": "ping"})["op"] == "pong"

    def test_linear_fill_pushes_position(self, server: WsServer) -> None:
        """A linear market fill pushes the position (position and position.linear)."""
        client = _subscribed(server, ["position", "position.linear"])
        _place(server, server.uid, category="linear", order_type="Market", qty=Decimal("0.01"))
        pushes = _pushes(client, 2)
        assert set(pushes) == {"position", "position.linear"}
        pos = pushes["position"]["data"][0]
        assert (pos["category"], pos["symbol"], pos["side"], pos["size"]) == (
            "linear",
            "BTCUSDT",
            "Buy",
            "0.01",
        )


def _trade_client(server: WsServer, **key_args: Any) -> Client:
    api_key, secret = server.new_key(**key_args)
    client = server.connect("/v5/trade")
    reply = client.auth(api_key, secret)
    assert set(reply) == {"retCode", "retMsg", "op", "connId"}
    assert (reply["retCode"], reply["retMsg"], reply["op"]) == (0, "OK", "auth")
    return client


def _order_op(op: str, args: dict[str, Any], req_id: str = "q1") -> dict[str, Any]:
    header = {"X-BAPI-TIMESTAMP": str(int(time.time() * 1000)), "X-BAPI-RECV-WINDOW": "5000"}
    return {"reqId": req_id, "header": header, "op": op, "args": [args]}


_ORDER = {"category": "spot", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Limit"}


class TestTrade:
    def test_order_create_and_cancel(self, server: WsServer) -> None:
        """order.create answers data.orderId; order.cancel cancels it; reqId echoed."""
        client = _trade_client(server)
        order = {**_ORDER, "qty": "0.01", "price": "1000", "orderLinkId": "ws-1"}
        reply = client.ask(_order_op("order.create", order))
        assert (reply["reqId"], reply["retCode"], reply["op"]) == ("q1", 0, "order.create")
        assert reply["data"]["orderLinkId"] == "ws-1"
        assert {"retExtInfo", "header", "connId"} <= set(reply)
        cancel = {"category": "spot", "symbol": "BTCUSDT", "orderId": reply["data"]["orderId"]}
        reply = client.ask(_order_op("order.cancel", cancel, "q2"))
        assert (reply["reqId"], reply["retCode"]) == ("q2", 0)

    def test_permissions_and_venue_errors(self, server: WsServer) -> None:
        """A read-only key gets 10005; a venue error keeps its retCode; the socket stays up."""
        client = _trade_client(server, read_only=True)
        reply = client.ask(_order_op("order.create", {**_ORDER, "qty": "0.01"}))
        assert reply["retCode"] == 10005
        client = _trade_client(server)
        reply = client.ask(_order_op("order.create", {**_ORDER, "symbol": "NOPE", "qty": "1"}))
        assert reply["retCode"] == 10001
        assert client.ask({"op": "ping"})["op"] == "pong"

    def test_unauthenticated_stale_and_unsupported(self, server: WsServer) -> None:
        """Before auth: failure; stale timestamp: 10002; order.amend: not supported."""
        client = server.connect("/v5/trade")
        reply = client.ask(_order_op("order.create", {**_ORDER, "qty": "0.01"}))
        assert reply["retCode"] != 0
        client = _trade_client(server)
        stale = _order_op("order.create", {**_ORDER, "qty": "0.01"})
        stale["header"]["X-BAPI-TIMESTAMP"] = "1000"
        assert client.ask(stale)["retCode"] == 10002
        reply = client.ask(_order_op("order.amend", {}))
        assert reply["retCode"] == 10001
        assert "not supported" in reply["retMsg"]
