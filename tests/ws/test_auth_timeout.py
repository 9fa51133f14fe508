"""A /v5/private or /v5/trade connection that has not authenticated within ws_auth_timeout_s
gets a failure reply for op "auth" and is closed (1008); an authenticated one stays open."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from websockets.exceptions import ConnectionClosed

from keyplane.settings import Settings
from keyplane.ws.hub import CLOSE_POLICY
from tests.ws.conftest import Client, WsServer

TIMEOUT_S = 0.5


@pytest.fixture
def server(make_server: Callable[..., WsServer]) -> WsServer:
    """A server whose connections must authenticate within TIMEOUT_S."""
    return make_server(ws_auth_timeout_s=TIMEOUT_S)


def _close_reason(client: Client, within_s: float) -> tuple[int | None, str]:
    """(close code, close reason) of the server's close frame; fails after within_s."""
    try:
        while True:
            client.ws.recv(timeout=within_s)
    except ConnectionClosed as exc:
        received = exc.rcvd
    except TimeoutError:
        raise AssertionError(f"connection still open after {within_s} s") from None
    assert received is not None, "closed without a close frame from the server"
    return received.code, received.reason


class TestUnauthenticated:
    def test_private_gets_a_failure_frame_then_closes(self, server: WsServer) -> None:
        """A silent client: {"success": false, "op": "auth", "ret_msg": "error:auth timeout
        ..."} after about TIMEOUT_S, then a 1008 close frame naming the reason."""
        started = time.monotonic()
        client = server.connect()
        reply = client.recv(timeout=TIMEOUT_S + 2)
        waited = time.monotonic() - started
        assert set(reply) == {"success", "ret_msg", "op", "conn_id"}
        assert (reply["success"], reply["op"]) == (False, "auth")
        assert reply["ret_msg"].startswith("error:auth timeout:")
        assert "0.5 s" in reply["ret_msg"]
        assert TIMEOUT_S - 0.05 <= waited < TIMEOUT_S + 1.5
        code, reason = _close_reason(client, within_s=2.0)
        assert code == CLOSE_POLICY
        assert reason.startswith("auth timeout")

    def test_trade_gets_a_retcode_frame_then_closes(self, server: WsServer) -> None:
        """/v5/trade answers in its own shape: retCode 10007, op auth, connId."""
        client = server.connect("/v5/trade")
        reply = client.recv(timeout=TIMEOUT_S + 2)
        assert set(reply) == {"retCode", "retMsg", "op", "connId"}
        assert (reply["retCode"], reply["op"]) == (10007, "auth")
        assert reply["retMsg"].startswith("error:auth timeout:")
        assert _close_reason(client, within_s=2.0)[0] == CLOSE_POLICY

    def test_pings_and_failed_auths_do_not_extend_the_deadline(self, server: WsServer) -> None:
        """Traffic is not authentication: a client that pings and fails auth is still closed
        on time."""
        api_key, _ = server.new_key()
        started = time.monotonic()
        client = server.connect()
        assert client.ask({"op": "ping"})["op"] == "pong"
        failed = client.auth(api_key, "not-the-secret")
        assert failed["success"] is False
        assert failed["ret_msg"].startswith("Error sign")
        reply = client.recv(timeout=TIMEOUT_S + 2)
        assert reply["ret_msg"].startswith("error:auth timeout:")
        code, _ = client.wait_closed(within_s=2.0)
        assert code == CLOSE_POLICY
        assert time.monotonic() - started < TIMEOUT_S + 2


class TestAuthenticated:
    def test_private_connection_outlives_the_timeout(self, server: WsServer) -> None:
        """Authenticated before the deadline: no failure frame, no close, still usable well
        after TIMEOUT_S."""
        api_key, secret = server.new_key()
        client = server.connect()
        assert client.auth(api_key, secret)["success"] is True
        with pytest.raises(TimeoutError):
            client.ws.recv(timeout=TIMEOUT_S * 3)  # nothing arrives: no reply, no close
        reply = client.ask({"op": "ping", "req_id": "alive"})
        assert (reply["op"], reply["req_id"]) == ("pong", "alive")
        assert client.ask({"op": "subscribe", "args": ["order"]})["success"] is True

    def test_trade_connection_outlives_the_timeout(self, server: WsServer) -> None:
        """The same on /v5/trade."""
        api_key, secret = server.new_key()
        client = server.connect("/v5/trade")
        assert client.auth(api_key, secret)["retCode"] == 0
        with pytest.raises(TimeoutError):
            client.ws.recv(timeout=TIMEOUT_S * 3)
        assert client.ask({"op": "ping", "req_id": "alive"})["op"] == "pong"

    def test_auth_after_a_failed_attempt_stops_the_timer(self, server: WsServer) -> None:
        """A failed auth followed by a good one inside the deadline keeps the connection."""
        api_key, secret = server.new_key()
        client = server.connect()
        assert client.auth(api_key, "not-the-secret")["success"] is False
        assert client.auth(api_key, secret)["success"] is True
        with pytest.raises(TimeoutError):
            client.ws.recv(timeout=TIMEOUT_S * 3)
        assert client.ask({"op": "ping"})["op"] == "pong"


def test_setting_default_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """30 s by default; KEYPLANE_WS_AUTH_TIMEOUT_S sets it; zero or negative is refused."""
    monkeypatch.delenv("KEYPLANE_WS_AUTH_TIMEOUT_S", raising=False)
    assert Settings().ws_auth_timeout_s == 30.0
    monkeypatch.setenv("KEYPLANE_WS_AUTH_TIMEOUT_S", "2.5")
    assert Settings().ws_auth_timeout_s == 2.5
    monkeypatch.setenv("KEYPLANE_WS_AUTH_TIMEOUT_S", "0")
    with pytest.raises(ValueError, match="ws_auth_timeout_s"):
        Settings()
