"""WS /v5/private: Bybit-shaped replies to auth, subscribe, ping; failures that keep the
connection usable; the per-connection topic cap and the per-key connection cap."""

from __future__ import annotations

import base64
import time

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from keyplane.signing import sign_hmac, ws_string_to_sign
from tests.ws.conftest import Client, WsServer


def _authed(server: WsServer, **key_args: str) -> Client:
    api_key, secret = server.new_key(**key_args)
    client = server.connect()
    assert client.auth(api_key, secret)["success"] is True
    return client


def _still_usable(client: Client) -> None:
    reply = client.ask({"op": "ping", "req_id": "alive"})
    assert reply["op"] == "pong"
    assert reply["req_id"] == "alive"


class TestAuth:
    def test_auth_success_is_bybit_shaped(self, server: WsServer) -> None:
        """{"success": true, "ret_msg": "", "op": "auth", "conn_id": <str>}."""
        api_key, secret = server.new_key()
        client = server.connect()
        reply = client.auth(api_key, secret)
        assert set(reply) == {"success", "ret_msg", "op", "conn_id"}
        assert (reply["success"], reply["ret_msg"], reply["op"]) == (True, "", "auth")
        assert isinstance(reply["conn_id"], str)
        assert reply["conn_id"]

    def test_expires_as_string_is_accepted(self, server: WsServer) -> None:
        """ccxt sends expires as a digit string ~10 s ahead."""
        api_key, secret = server.new_key()
        expires = str(int(time.time() * 1000) + 10_000)
        assert server.connect().auth(api_key, secret, expires=expires)["success"] is True

    def test_req_id_is_echoed(self, server: WsServer) -> None:
        """An auth frame's req_id comes back in the reply."""
        api_key, secret = server.new_key()
        expires = int(time.time() * 1000) + 5000
        sig = sign_hmac(secret, ws_string_to_sign(expires))
        reply = server.connect().ask(
            {"req_id": "a1", "op": "auth", "args": [api_key, expires, sig]}
        )
        assert reply["req_id"] == "a1"
        assert reply["success"] is True

    def test_unknown_key_fails(self, server: WsServer) -> None:
        """Unknown api key: success false with Bybit's 10003 message; connection stays open."""
        client = server.connect()
        reply = client.auth("NOSUCHKEY000000000", "whatever")
        assert (reply["success"], reply["op"]) == (False, "auth")
        assert reply["ret_msg"] == "API key is invalid."
        _still_usable(client)

    def test_wrong_signature_fails(self, server: WsServer) -> None:
        """A signature under another secret fails with the 10004 message."""
        api_key, _ = server.new_key()
        client = server.connect()
        reply = client.auth(api_key, "not-the-secret")
        assert reply["success"] is False
        assert reply["ret_msg"].startswith("Error sign")
        _still_usable(client)

    def test_expired_expires_fails(self, server: WsServer) -> None:
        """An expires in the past is rejected (Bybit rejects expired auth frames)."""
        api_key, secret = server.new_key()
        reply = server.connect().auth(api_key, secret, expires=int(time.time() * 1000) - 1)
        assert reply["success"] is False
        assert "expires" in reply["ret_msg"]

    def test_malformed_args_fail(self, server: WsServer) -> None:
        """Wrong arity, a bool or float expires, a non-string key: Params Error, no crash."""
        client = server.connect()
        for args in ([], ["k", 1], ["k", True, "s"], ["k", 1.5, "s"], [1, 2, 3], "x"):
            reply = client.ask({"op": "auth", "args": args})
            assert reply["success"] is False, args
            assert reply["ret_msg"].startswith(("Params Error", "error:")), reply
        _still_usable(client)

    def test_repeat_auth_fails(self, server: WsServer) -> None:
        """A second auth on an authenticated connection fails; the first one holds."""
        api_key, secret = server.new_key()
        client = server.connect()
        client.auth(api_key, secret)
        assert client.auth(api_key, secret)["success"] is False
        assert client.ask({"op": "subscribe", "args": ["order"]})["success"] is True

    def test_suspended_key_and_ip_binding_fail(self, server: WsServer) -> None:
        """Bound keys admit only their IPs: 10010's message for another client."""
        api_key, secret = server.new_key(ips="10.9.8.7")
        reply = server.connect().auth(api_key, secret)
        assert reply["success"] is False
        assert reply["ret_msg"].startswith("Unmatched IP")

    def test_rsa_key_authenticates(self, server: WsServer) -> None:
        """RSA keys sign GET/realtime{expires} with PKCS#1 v1.5 SHA-256, base64."""
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public_pem = (
            private.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )
        api_key, _ = server.new_key(rsa_public_key=public_pem)
        expires = int(time.time() * 1000) + 5000
        raw = private.sign(ws_string_to_sign(expires), padding.PKCS1v15(), hashes.SHA256())
        sig = base64.b64encode(raw).decode()
        client = server.connect()
        reply = client.ask({"op": "auth", "args": [api_key, expires, sig]})
        assert reply["success"] is True
        bad = server.connect().ask({"op": "auth", "args": [api_key, expires, sig[:-4] + "AAA="]})
        assert bad["success"] is False

    def test_per_key_connection_cap(self, make_server) -> None:  # type: ignore[no-untyped-def]
        """Beyond ws_max_connections_per_key auth fails clearly; a freed slot can be reused."""
        server = make_server(ws_max_connections_per_key=2)
        api_key, secret = server.new_key()
        first, second, third = server.connect(), server.connect(), server.connect()
        assert first.auth(api_key, secret)["success"] is True
        assert second.auth(api_key, secret)["success"] is True
        reply = third.auth(api_key, secret)
        assert reply["success"] is False
        assert "too many connections" in reply["ret_msg"]
        assert "2" in reply["ret_msg"]
        first.close()
        deadline = time.monotonic() + 2
        while third.auth(api_key, secret)["success"] is not True:
            assert time.monotonic() < deadline, "slot not freed after a close"
            time.sleep(0.05)


class TestFrames:
    def test_ping_pong_shape(self, server: WsServer) -> None:
        """{"req_id", "op": "pong", "args": ["<ms>"], "conn_id"} as Bybit's private pong."""
        client = server.connect()
        before = int(time.time() * 1000)
        reply = client.ask({"op": "ping", "req_id": "p1"})
        assert list(reply) == ["req_id", "op", "args", "conn_id"]
        assert reply["op"] == "pong"
        assert reply["req_id"] == "p1"
        assert isinstance(reply["args"][0], str)
        assert int(reply["args"][0]) >= before
        assert "req_id" not in client.ask({"op": "ping"})

    def test_malformed_json_unknown_op_keep_connection(self, server: WsServer) -> None:
        """Bad JSON, non-objects, no op and unknown ops each get a failure reply."""
        client = server.connect()
        for frame in ("{not json", "[1,2]", '"text"', "{}", '{"op": 5}', '{"op":"x","args":3}'):
            reply = client.ask(frame)
            assert reply["success"] is False, frame
            assert reply["ret_msg"].startswith("error:"), frame
        reply = client.ask({"op": "launch", "req_id": 7})
        assert (reply["success"], reply["op"], reply["req_id"]) == (False, "launch", 7)
        assert "unknown op" in reply["ret_msg"]
        client.ws.send(b"\xff\xfe")
        assert client.recv()["success"] is False
        client.send("x" * 70_000)
        assert "longer than" in client.recv()["ret_msg"]
        _still_usable(client)


class TestSubscribe:
    def test_subscribe_before_auth_fails(self, server: WsServer) -> None:
        """Private topics need an authenticated connection."""
        reply = server.connect().ask({"op": "subscribe", "req_id": "s", "args": ["order"]})
        assert (reply["success"], reply["op"], reply["req_id"]) == (False, "subscribe", "s")
        assert "auth" in reply["ret_msg"]

    def test_subscribe_reply_shape(self, server: WsServer) -> None:
        """success true, ret_msg "", op, conn_id, req_id echoed; category forms accepted."""
        client = _authed(server)
        reply = client.ask(
            {"op": "subscribe", "req_id": "r1", "args": ["order", "execution.spot", "wallet"]}
        )
        assert reply == {
            "success": True,
            "ret_msg": "",
            "op": "subscribe",
            "conn_id": reply["conn_id"],
            "req_id": "r1",
        }
        reply = client.ask({"op": "unsubscribe", "req_id": "r1", "args": ["order"]})
        assert reply["success"] is True
        assert reply["op"] == "unsubscribe"

    def test_unknown_topic_fails(self, server: WsServer) -> None:
        """Bybit's "error:handler not found,topic:<t>"; nothing of that frame is subscribed."""
        client = _authed(server)
        reply = client.ask({"op": "subscribe", "args": ["order", "orderbook.1.BTCUSDT"]})
        assert reply["success"] is False
        assert reply["ret_msg"] == "error:handler not found,topic:orderbook.1.BTCUSDT"
        assert client.ask({"op": "subscribe", "args": []})["success"] is False
        assert client.ask({"op": "subscribe", "args": [5]})["success"] is False

    def test_topic_cap(self, server: WsServer) -> None:
        """More than 100 topics in a connection: a clear failure; the connection stays open."""
        client = _authed(server)
        reply = client.ask({"op": "subscribe", "args": ["order"] * 101})
        assert reply["success"] is False
        assert "at most 100" in reply["ret_msg"]
        assert client.ask({"op": "subscribe", "args": ["order"] * 100})["success"] is True
        _still_usable(client)


def test_metrics_count_open_connections(server: WsServer) -> None:
    """keyplane_websocket_connections follows the open connections."""
    import httpx

    clients = [server.connect() for _ in range(3)]
    _still_usable(clients[-1])
    text = httpx.get(server.http_url + "/metrics").text
    assert "keyplane_websocket_connections 3.0" in text
