"""Gateway mode, generic upstream: what crosses the gateway, and what never does."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from keyplane.keys import Permissions
from keyplane.testing import free_port

from .conftest import EchoUpstream, envelope, gateway_on, signed_get, signed_post

SPOOFED = {
    "Cookie": "session=stolen",
    "Authorization": "Bearer client-token",
    "X-Keyplane-Uid": "1",
    "X-Keyplane-Permissions": '{"Wallet":["Withdraw"]}',
    "X-Forwarded-For": "6.6.6.6",
    "X-Bapi-Extra": "client",
    "Connection": "keep-alive, X-Hop",
    "X-Hop": "per-connection",
    "X-Trace": "kept-123",
}


class TestIdentityHeaders:
    def test_client_identity_is_replaced_by_trusted_headers(
        self, tmp_path: Path, echo: tuple[EchoUpstream, str]
    ) -> None:
        """X-BAPI-*, Cookie, Authorization, spoofed X-Keyplane-*, hop-by-hop are stripped; the
        upstream gets the verified uid, api key, permissions, read-only flag and client IP."""
        upstream, upstream_url = echo
        with gateway_on(tmp_path, upstream_url) as gw:
            api_key, secret = gw.new_key(permissions="Spot:SpotTrade,ContractTrade:Order")
            reply = signed_get(
                gw.url,
                "/v5/account/wallet-balance",
                "accountType=UNIFIED",
                api_key,
                secret,
                extra=SPOOFED,
            )
        assert reply.status_code == 200
        assert envelope(reply)["result"] == {
            "method": "GET",
            "path": "/v5/account/wallet-balance",
        }
        (seen,) = upstream.seen
        assert seen.query == b"accountType=UNIFIED"
        assert not any(n.startswith("x-bapi-") for n in seen.names())
        assert not {"cookie", "authorization", "x-forwarded-for", "x-hop"} & seen.names()
        assert seen.header("x-keyplane-uid") == str(gw.uid)
        assert seen.header("x-keyplane-key-id") == api_key
        wire = json.loads(seen.header("x-keyplane-permissions") or "")
        assert wire == Permissions.parse("Spot:SpotTrade,ContractTrade:Order").to_wire()
        assert wire["Spot"] == ["SpotTrade"]
        assert wire["Wallet"] == []
        assert seen.header("x-keyplane-read-only") == "0"
        assert seen.header("x-keyplane-client-ip") == "127.0.0.1"
        assert seen.header("x-trace") == "kept-123"
        assert secret not in json.dumps(seen.headers)

    def test_read_only_key_is_flagged(self, tmp_path: Path, echo: tuple[EchoUpstream, str]) -> None:
        """A read-only key reaches read routes with X-Keyplane-Read-Only: 1."""
        upstream, upstream_url = echo
        with gateway_on(tmp_path, upstream_url) as gw:
            api_key, secret = gw.new_key(permissions="", read_only=True)
            reply = signed_get(gw.url, "/v5/order/realtime", "category=spot", api_key, secret)
        assert envelope(reply)["retCode"] == 0
        assert upstream.seen[0].header("x-keyplane-read-only") == "1"

    def test_public_route_carries_no_identity(
        self, tmp_path: Path, echo: tuple[EchoUpstream, str]
    ) -> None:
        """Public market routes are forwarded without any X-Keyplane-* or X-BAPI-* header."""
        upstream, upstream_url = echo
        with gateway_on(tmp_path, upstream_url) as gw:
            reply = httpx.get(
                f"{gw.url}/v5/market/tickers?category=spot&symbol=BTCUSDT",
                headers={"X-Keyplane-Uid": "1"},
            )
        assert envelope(reply)["retCode"] == 0
        (seen,) = upstream.seen
        assert seen.path == "/v5/market/tickers"
        assert seen.query == b"category=spot&symbol=BTCUSDT"
        assert not any(n.startswith(("x-keyplane-", "x-bapi-")) for n in seen.names())


class TestForwarding:
    def test_post_body_bytes_arrive_unchanged(
        self, tmp_path: Path, echo: tuple[EchoUpstream, str]
    ) -> None:
        """The raw body (pybit's spacing, \\u escapes) reaches the upstream byte for byte."""
        upstream, upstream_url = echo
        body = (
            b'{"category": "spot", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Market", '
            b'"qty": "0.001", "orderLinkId": "caf\\u00e9"}'
        )
        with gateway_on(tmp_path, upstream_url) as gw:
            api_key, secret = gw.new_key(permissions="Spot:SpotTrade")
            reply = signed_post(gw.url, "/v5/order/create", body, api_key, secret)
        assert envelope(reply)["retCode"] == 0
        (seen,) = upstream.seen
        assert (seen.method, seen.path, seen.body) == ("POST", "/v5/order/create", body)
        assert seen.header("content-type") == "application/json"

    def test_upstream_status_headers_and_limits_come_back(
        self, tmp_path: Path, echo: tuple[EchoUpstream, str]
    ) -> None:
        """The upstream's own headers, X-Bapi-Limit* included, win over keyplane's."""
        upstream, upstream_url = echo
        upstream.extra_headers = {
            "X-Upstream": "yes",
            "X-Bapi-Limit": "7",
            "X-Bapi-Limit-Status": "6",
            "X-Bapi-Limit-Reset-Timestamp": "1700000000000",
        }
        with gateway_on(tmp_path, upstream_url) as gw:
            api_key, secret = gw.new_key(permissions="")
            reply = signed_get(gw.url, "/v5/position/list", "category=linear", api_key, secret)
        assert reply.headers["x-upstream"] == "yes"
        assert reply.headers.get_list("x-bapi-limit") == ["7"]
        assert reply.headers.get_list("x-bapi-limit-status") == ["6"]
        assert reply.headers.get_list("x-bapi-limit-reset-timestamp") == ["1700000000000"]

    def test_keyplane_limit_headers_when_the_upstream_sends_none(
        self, tmp_path: Path, echo: tuple[EchoUpstream, str]
    ) -> None:
        """Without upstream limit headers the reply carries keyplane's own (50/s queries)."""
        _, upstream_url = echo
        with gateway_on(tmp_path, upstream_url) as gw:
            api_key, secret = gw.new_key(permissions="")
            reply = signed_get(gw.url, "/v5/position/list", "category=linear", api_key, secret)
        assert reply.headers.get_list("x-bapi-limit") == ["50"]

    def test_a_4xx_answer_passes_through(
        self, tmp_path: Path, echo: tuple[EchoUpstream, str]
    ) -> None:
        """An upstream 403 (Bybit's IP ban) reaches the client with its status and body."""
        upstream, upstream_url = echo
        upstream.status, upstream.raw_body = 403, b"403 Forbidden"
        with gateway_on(tmp_path, upstream_url) as gw:
            reply = httpx.get(f"{gw.url}/v5/market/time")
        assert (reply.status_code, reply.content) == (403, b"403 Forbidden")

    def test_user_routes_stay_local(self, tmp_path: Path, echo: tuple[EchoUpstream, str]) -> None:
        """/v5/user/query-api is answered by keyplane about its own key; nothing goes upstream."""
        upstream, upstream_url = echo
        with gateway_on(tmp_path, upstream_url) as gw:
            reply = signed_get(gw.url, "/v5/user/query-api", "", gw.api_key, gw.secret)
        assert envelope(reply)["result"]["apiKey"] == gw.api_key
        assert upstream.seen == []

    def test_refused_requests_never_reach_the_upstream(
        self, tmp_path: Path, echo: tuple[EchoUpstream, str]
    ) -> None:
        """Bad signature (10004), read-only key on order/create (10005), unknown route (10017)."""
        upstream, upstream_url = echo
        with gateway_on(tmp_path, upstream_url) as gw:
            api_key, secret = gw.new_key(permissions="Spot:SpotTrade", read_only=True)
            forged = signed_get(
                gw.url, "/v5/account/wallet-balance", "accountType=UNIFIED", api_key, "x" * 36
            )
            body = b'{"category":"spot","symbol":"BTCUSDT","side":"Buy","orderType":"Market"}'
            denied = signed_post(gw.url, "/v5/order/create", body, api_key, secret)
            unknown = httpx.get(f"{gw.url}/v5/market/unknown")
        assert envelope(forged)["retCode"] == 10004
        assert envelope(denied)["retCode"] == 10005
        assert (unknown.status_code, envelope(unknown)["retCode"]) == (404, 10017)
        assert upstream.seen == []


class TestUpstreamFailures:
    def test_upstream_down_is_10016_and_keyplane_keeps_serving(self, tmp_path: Path) -> None:
        """A closed port answers retCode 10016 (HTTP 200); local routes keep working."""
        with gateway_on(tmp_path, f"http://127.0.0.1:{free_port()}") as gw:
            reply = signed_get(
                gw.url, "/v5/account/wallet-balance", "accountType=UNIFIED", gw.api_key, gw.secret
            )
            public = httpx.get(f"{gw.url}/v5/market/time")
            local = signed_get(gw.url, "/v5/user/query-api", "", gw.api_key, gw.secret)
            metrics = httpx.get(f"{gw.url}/metrics").text
        assert "keyplane_gateway_upstream_requests_total 2.0" in metrics
        assert "keyplane_gateway_upstream_failures_total 2.0" in metrics
        assert reply.status_code == 200
        assert envelope(reply)["retCode"] == 10016
        assert envelope(reply)["retMsg"] == "Server error: upstream unavailable."
        assert envelope(reply)["result"] == {}
        assert envelope(public)["retCode"] == 10016
        assert envelope(local)["retCode"] == 0

    def test_upstream_timeout_is_10016(
        self, tmp_path: Path, echo: tuple[EchoUpstream, str]
    ) -> None:
        """An upstream slower than --upstream-timeout answers 10016 'timed out' in time."""
        upstream, upstream_url = echo
        upstream.delay_s = 3.0
        with gateway_on(tmp_path, upstream_url, timeout_s=0.3) as gw:
            reply = httpx.get(f"{gw.url}/v5/market/time", timeout=10)
            assert reply.elapsed.total_seconds() < 2.5
        assert envelope(reply)["retCode"] == 10016
        assert envelope(reply)["retMsg"] == "Server error: upstream timed out."

    def test_non_json_answer_is_10016(self, tmp_path: Path, echo: tuple[EchoUpstream, str]) -> None:
        """HTTP 200 with HTML, or a 502 page, becomes a clean 10016 envelope."""
        upstream, upstream_url = echo
        with gateway_on(tmp_path, upstream_url) as gw:
            upstream.raw_body = b"<html>oops</html>"
            html = httpx.get(f"{gw.url}/v5/market/time")
            upstream.status, upstream.raw_body = 502, b"Bad Gateway"
            bad_gateway = httpx.get(f"{gw.url}/v5/market/time")
            upstream.status, upstream.raw_body = 200, b"[1, 2]"
            not_object = httpx.get(f"{gw.url}/v5/market/time")
        for reply in (html, bad_gateway, not_object):
            assert reply.status_code == 200
            assert envelope(reply)["retCode"] == 10016
            assert envelope(reply)["retMsg"] == "Server error: upstream answered garbage."
