"""Malformed requests get the V5 envelope with the right retCode, and the server keeps serving."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from keyplane.signing import sign_hmac, string_to_sign

from .conftest import Server


def signed_headers(server: Server, payload: bytes, *, ts: int | None = None) -> dict[str, str]:
    import time

    timestamp = str(ts if ts is not None else int(time.time() * 1000))
    sig = sign_hmac(server.secret, string_to_sign(timestamp, server.api_key, "5000", payload))
    return {
        "X-BAPI-API-KEY": server.api_key,
        "X-BAPI-TIMESTAMP": timestamp,
        "X-BAPI-SIGN": sig,
        "X-BAPI-RECV-WINDOW": "5000",
        "Content-Type": "application/json",
    }


def envelope(response: httpx.Response) -> dict[str, object]:
    body = response.json()
    assert set(body) == {"retCode", "retMsg", "result", "retExtInfo", "time"}
    assert "Traceback" not in response.text
    return body


@pytest.fixture
def client(server: Server) -> httpx.Client:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


class TestBadInput:
    def test_missing_headers(self, server: Server, client: httpx.Client) -> None:
        """No auth headers -> 10003; key without timestamp -> 10001."""
        r = client.get("/v5/account/wallet-balance?accountType=UNIFIED")
        assert (r.status_code, envelope(r)["retCode"]) == (200, 10003)
        r = client.get("/v5/account/info", headers={"X-BAPI-API-KEY": server.api_key})
        assert envelope(r)["retCode"] == 10001

    def test_duplicated_header(self, server: Server, client: httpx.Client) -> None:
        """Two X-BAPI-SIGN headers -> 10001."""
        h = [*list(signed_headers(server, b"").items()), ("X-BAPI-SIGN", "00")]
        r = client.get("/v5/account/info", headers=h)
        assert envelope(r)["retCode"] == 10001

    def test_non_numeric_timestamp(self, server: Server, client: httpx.Client) -> None:
        """A timestamp that is not an integer -> 10001."""
        h = signed_headers(server, b"") | {"X-BAPI-TIMESTAMP": "soon"}
        assert envelope(client.get("/v5/account/info", headers=h))["retCode"] == 10001

    def test_stale_timestamp_names_both_times(self, server: Server, client: httpx.Client) -> None:
        """A 1-minute-old timestamp -> 10002 with both timestamps in retMsg."""
        import time

        old = int(time.time() * 1000) - 60_000
        body = envelope(client.get("/v5/account/info", headers=signed_headers(server, b"", ts=old)))
        assert body["retCode"] == 10002
        assert f"req_timestamp[{old}]" in str(body["retMsg"])
        assert "server_timestamp[" in str(body["retMsg"])

    @pytest.mark.parametrize(
        ("payload", "needle"),
        [(b"{not json", "JSON"), (b"\xff\xfe{}", "UTF-8"), (b"[1,2]", "object")],
    )
    def test_bad_bodies_are_10001(
        self, server: Server, client: httpx.Client, payload: bytes, needle: str
    ) -> None:
        """Invalid JSON, non-UTF-8 bytes and non-object JSON -> 10001 with a clear message."""
        r = client.post(
            "/v5/order/create", content=payload, headers=signed_headers(server, payload)
        )
        body = envelope(r)
        assert body["retCode"] == 10001
        assert needle in str(body["retMsg"])

    def test_body_over_one_mib_is_refused(self, server: Server, client: httpx.Client) -> None:
        """A body over 1 MiB -> HTTP 413 with the envelope (10001), before it is read whole."""
        payload = json.dumps({"note": "x" * (1024 * 1024)}).encode()
        r = client.post("/v5/order/create", content=payload, headers=signed_headers(server, b""))
        assert r.status_code == 413
        assert envelope(r)["retCode"] == 10001

    def test_chunked_body_over_one_mib_is_refused(
        self, server: Server, client: httpx.Client
    ) -> None:
        """A chunked body with no Content-Length is cut off at 1 MiB: HTTP 413, 10001."""

        def chunks() -> Iterator[bytes]:
            for _ in range(24):
                yield b"x" * 65_536

        r = client.post("/v5/order/create", content=chunks(), headers=signed_headers(server, b""))
        assert r.status_code == 413
        assert envelope(r)["retCode"] == 10001

    def test_forwarded_for_cannot_spoof_a_bound_ip(self, server: Server) -> None:
        """X-Forwarded-For from an untrusted peer is ignored: a bound key still gets 10010."""
        api_key, secret = server.new_key(ips="192.0.2.10")
        bound = Server(**{**server.__dict__, "api_key": api_key, "secret": secret})
        with httpx.Client(base_url=server.url) as c:
            h = signed_headers(bound, b"") | {"X-Forwarded-For": "192.0.2.10"}
            assert envelope(c.get("/v5/account/info", headers=h))["retCode"] == 10010

    def test_unknown_route_is_404_10017(self, client: httpx.Client) -> None:
        """Unknown paths -> HTTP 404, retCode 10017."""
        r = client.get("/v5/nope")
        assert (r.status_code, envelope(r)["retCode"]) == (404, 10017)

    @pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
    def test_other_methods_are_400(self, client: httpx.Client, method: str) -> None:
        """Methods other than GET/POST -> HTTP 400 with the envelope."""
        r = client.request(method, "/v5/order/create")
        assert r.status_code == 400
        assert envelope(r)["retCode"] == 10001

    def test_server_keeps_serving(self, server: Server, client: httpx.Client) -> None:
        """After a burst of garbage the server still answers a valid request."""
        for raw in (b"\x00", b"{", b"\xff" * 10):
            client.post("/v5/order/create", content=raw)
        client.get("/v5/account/info", headers={"X-BAPI-API-KEY": b"\xc3\xa9\xff"})
        r = client.get("/v5/account/info", headers=signed_headers(server, b""))
        assert envelope(r)["retCode"] == 0

    def test_percent_encoded_query_verifies(self, server: Server, client: httpx.Client) -> None:
        """A value with a space signed unencoded and sent encoded is accepted."""
        query = "category=spot&orderLinkId=a b"
        h = signed_headers(server, query.encode())
        r = client.get("/v5/order/realtime?category=spot&orderLinkId=a%20b", headers=h)
        assert envelope(r)["retCode"] == 0
