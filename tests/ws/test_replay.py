"""The replay guard on WebSocket auth: with replay_guard on, an auth frame whose signature was
already accepted before its `expires` is refused (10014) on /v5/private and /v5/trade, in each
channel's reply shape; without the guard (the default, like Bybit) it is accepted again."""

from __future__ import annotations

import time
from typing import Any

from keyplane.signing import sign_hmac, ws_string_to_sign
from tests.ws.conftest import WsServer

DUPLICATE = "Invalid duplicate request."


def _guarded_key(server: WsServer, *, guard: bool = True) -> tuple[str, str]:
    api_key, secret = server.new_key()
    if guard:
        server.service.update_key(api_key, replay_guard=True)
    return api_key, secret


def _auth_frame(api_key: str, secret: str, expires: int, req_id: str = "a1") -> dict[str, Any]:
    signature = sign_hmac(secret, ws_string_to_sign(expires))
    return {"req_id": req_id, "op": "auth", "args": [api_key, expires, signature]}


class TestPrivateChannel:
    def test_replayed_auth_frame_is_refused(self, server: WsServer) -> None:
        """The captured auth frame of one connection, sent again on a new connection before
        its expires: success false with the 10014 message; the connection stays usable and a
        freshly signed frame then authenticates it."""
        api_key, secret = _guarded_key(server)
        frame = _auth_frame(api_key, secret, int(time.time() * 1000) + 10_000)
        assert server.connect().ask(frame)["success"] is True

        thief = server.connect()
        reply = thief.ask(frame)
        assert (reply["success"], reply["op"], reply["ret_msg"]) == (False, "auth", DUPLICATE)
        assert reply["req_id"] == "a1"
        assert thief.ask({"op": "subscribe", "args": ["order"]})["success"] is False  # not authed
        fresh = _auth_frame(api_key, secret, int(time.time() * 1000) + 10_001, "a2")
        assert thief.ask(fresh)["success"] is True
        assert thief.ask({"op": "subscribe", "args": ["order"]})["success"] is True

    def test_without_the_guard_a_repeat_is_accepted(self, server: WsServer) -> None:
        """Default (Bybit's behaviour): the same auth frame authenticates two connections."""
        api_key, secret = _guarded_key(server, guard=False)
        frame = _auth_frame(api_key, secret, int(time.time() * 1000) + 10_000)
        assert server.connect().ask(frame)["success"] is True
        assert server.connect().ask(frame)["success"] is True

    def test_uppercase_signature_is_the_same_signature(self, server: WsServer) -> None:
        """The HMAC verifier accepts upper-case hex; that spelling is no way around the guard."""
        api_key, secret = _guarded_key(server)
        frame = _auth_frame(api_key, secret, int(time.time() * 1000) + 10_000)
        assert server.connect().ask(frame)["success"] is True
        frame["args"][2] = frame["args"][2].upper()
        assert server.connect().ask(frame)["ret_msg"] == DUPLICATE

    def test_refusals_are_counted(self, server: WsServer) -> None:
        """keyplane_replay_checks_total counts the passed and the refused auth."""
        api_key, secret = _guarded_key(server)
        frame = _auth_frame(api_key, secret, int(time.time() * 1000) + 10_000)
        server.connect().ask(frame)
        server.connect().ask(frame)
        assert server.app.state.replay.outcomes == {"passed": 1, "refused": 1}


class TestTradeChannel:
    def test_replayed_auth_frame_gets_10014(self, server: WsServer) -> None:
        """/v5/trade answers a replayed auth frame with retCode 10014 in its own shape."""
        api_key, secret = _guarded_key(server)
        frame = _auth_frame(api_key, secret, int(time.time() * 1000) + 10_000)
        assert server.connect("/v5/trade").ask(frame)["retCode"] == 0
        reply = server.connect("/v5/trade").ask(frame)
        assert (reply["retCode"], reply["retMsg"], reply["op"]) == (10014, DUPLICATE, "auth")
