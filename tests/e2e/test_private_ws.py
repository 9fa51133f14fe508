"""Real pybit against a real server: the private WebSocket authenticates (HMAC and RSA keys),
receives order/execution/wallet pushes for orders placed over pybit HTTP, and pybit's
WebSocketTrading places an order over /v5/trade."""

from __future__ import annotations

import queue
import time
from typing import Any

import pytest
from pybit.unified_trading import HTTP, WebSocket, WebSocketTrading

from tests.e2e.conftest import Server


class LocalWebSocket(WebSocket):
    """pybit's WebSocket pointed at a local server: pybit formats its wss:// template in
    `_connect(url)`, so the override hands it the local URL instead (reconnects included).

    pybit 5.17's subscribe() sends the frame and only then records its req_id; on loopback the
    reply can arrive in between, pybit's receive thread raises KeyError on the unknown req_id,
    drops the connection and the next subscribe() waits forever for it. Over a real network
    the reply never wins that race. The override records first, then sends the very frame
    pybit builds (nothing on the wire changes).
    """

    def __init__(self, url: str, **kwargs: Any) -> None:
        self._local_url = url
        kwargs.setdefault("testnet", False)  # pybit requires it; the URL is ours anyway
        super().__init__(**kwargs)

    def _connect(self, url: str) -> None:
        super()._connect(self._local_url)

    def subscribe(self, topic: Any, callback: Any, symbol: Any = False) -> None:
        while not self.is_connected():
            time.sleep(0.05)
        send = self.ws.send
        frames: list[str] = []
        self.ws.send = frames.append  # capture pybit's frame instead of sending it
        try:
            super().subscribe(topic, callback, symbol)
        finally:
            self.ws.send = send
        send(frames[0])  # the req_id is recorded by now


class LocalWebSocketTrading(WebSocketTrading):
    """pybit's WebSocketTrading pointed at a local /v5/trade.

    pybit 5.17 sends an order frame and only then registers the reply's callback; on loopback
    the reply can arrive in between and is dropped as "unregistered reqId". The override
    registers first, then sends the very frame pybit builds (nothing on the wire changes).
    """

    def __init__(self, url: str, **kwargs: Any) -> None:
        self._local_url = url
        kwargs.setdefault("testnet", False)  # pybit requires it; the URL is ours anyway
        super().__init__(**kwargs)

    def _connect(self, url: str) -> None:
        super()._connect(self._local_url)

    def _send_order_operation(
        self, operation: str, callback: Any, request: Any, error_callback: Any = None
    ) -> None:
        send = self.ws.send
        frames: list[str] = []
        self.ws.send = frames.append  # capture pybit's frame instead of sending it
        try:
            super()._send_order_operation(operation, callback, request, error_callback)
        finally:
            self.ws.send = send
        send(frames[0])  # the callback is registered by now


def _ws_url(server: Server, path: str) -> str:
    return server.url.replace("http://", "ws://") + path


def _wait_for(messages: queue.Queue[dict[str, Any]], topic: str) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while True:
        message = messages.get(timeout=max(0.01, deadline - time.monotonic()))
        if message["topic"] == topic:
            return message


def _wait_authed(ws: WebSocket) -> None:
    deadline = time.monotonic() + 5
    while not ws.auth:
        assert time.monotonic() < deadline, "pybit never saw a successful auth reply"
        time.sleep(0.02)


def test_pybit_private_stream_receives_order_updates(server: Server) -> None:
    """pybit authenticates, subscribes to order/execution/wallet and gets the order it placed."""
    api_key, secret = server.new_key()
    ws = LocalWebSocket(
        _ws_url(server, "/v5/private"), channel_type="private", api_key=api_key, api_secret=secret
    )
    try:
        _wait_authed(ws)
        orders: queue.Queue[dict[str, Any]] = queue.Queue()
        ws.order_stream(orders.put)
        ws.execution_stream(orders.put)
        ws.wallet_stream(orders.put)
        time.sleep(0.2)  # let the subscribe frames land before the order
        http = HTTP(api_key=api_key, api_secret=secret)
        http.endpoint = server.url
        placed = http.place_order(
            category="spot",
            symbol="BTCUSDT",
            side="Buy",
            orderType="Market",
            qty="0.001",
            marketUnit="baseCoin",
            orderLinkId="pybit-ws-1",
        )
        order = _wait_for(orders, "order")["data"][0]
        assert order["orderId"] == placed["result"]["orderId"]
        assert (order["orderLinkId"], order["orderStatus"]) == ("pybit-ws-1", "Filled")
        assert order["cumExecQty"] == "0.001"
        fill = _wait_for(orders, "execution")["data"][0]
        assert fill["orderId"] == order["orderId"]
        wallet = _wait_for(orders, "wallet")["data"][0]
        assert wallet["accountType"] == "UNIFIED"
    finally:
        ws.exit()


def test_pybit_rsa_key_authenticates(server: Server, rsa_private_pem: tuple[str, str]) -> None:
    """An RSA key authenticates with pybit's rsa_authentication=True."""
    private_pem, public_pem = rsa_private_pem
    api_key, _ = server.new_key(rsa_public_key=public_pem)
    ws = LocalWebSocket(
        _ws_url(server, "/v5/private"),
        channel_type="private",
        api_key=api_key,
        api_secret=private_pem,
        rsa_authentication=True,
    )
    try:
        _wait_authed(ws)
    finally:
        ws.exit()


def test_pybit_wrong_secret_is_refused(server: Server) -> None:
    """A wrong secret never authenticates: pybit sees success false (and raises in its reader)."""
    api_key, _ = server.new_key()
    ws = LocalWebSocket(
        _ws_url(server, "/v5/private"),
        channel_type="private",
        api_key=api_key,
        api_secret="0" * 36,
        restart_on_error=False,
    )
    try:
        time.sleep(0.5)
        assert ws.auth is False
    finally:
        ws.exit()


def test_pybit_websocket_trading_places_an_order(server: Server) -> None:
    """pybit's WebSocketTrading authenticates (retCode 0) and place_order answers orderId."""
    api_key, secret = server.new_key()
    ws = LocalWebSocketTrading(_ws_url(server, "/v5/trade"), api_key=api_key, api_secret=secret)
    try:
        _wait_authed(ws)  # type: ignore[arg-type]
        replies: queue.Queue[dict[str, Any]] = queue.Queue()
        ws.place_order(
            replies.put,
            error_callback=replies.put,
            category="spot",
            symbol="BTCUSDT",
            side="Buy",
            orderType="Limit",
            qty="0.001",
            price="1000",
        )
        reply = replies.get(timeout=5)
        assert reply["retCode"] == 0, reply
        assert reply["op"] == "order.create"
        assert reply["data"]["orderId"]
    finally:
        ws.exit()


@pytest.mark.parametrize("path", ["/v5/private", "/v5/trade"])
def test_pybit_sees_a_revoked_key_disconnect(server: Server, path: str) -> None:
    """Revoking the key (out of band, as the CLI does) drops pybit's connection within 1 s."""
    api_key, secret = server.new_key()
    if path == "/v5/private":
        ws: Any = LocalWebSocket(
            _ws_url(server, path),
            channel_type="private",
            api_key=api_key,
            api_secret=secret,
            restart_on_error=False,
        )
    else:
        ws = LocalWebSocketTrading(
            _ws_url(server, path), api_key=api_key, api_secret=secret, restart_on_error=False
        )
    try:
        _wait_authed(ws)
        server.service.revoke_key(api_key)
        deadline = time.monotonic() + 1.0
        while ws.is_connected():
            assert time.monotonic() < deadline, "still connected 1 s after revocation"
            time.sleep(0.02)
    finally:
        ws.exit()
