"""Gateway mode, kind bybit: each forwarded request is re-signed with the stored exchange key."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from keyplane.gateway import clear_upstream_credentials, save_upstream_credentials
from keyplane.keys import KeyEncryptionKey
from keyplane.secret import Secret
from keyplane.signing import string_to_sign, verify_hmac, verify_rsa
from keyplane.store import SqlStore, open_store

from .conftest import (
    UPSTREAM_KEY,
    UPSTREAM_SECRET,
    EchoUpstream,
    Seen,
    envelope,
    gateway_on,
    signed_get,
    signed_post,
)


def store_hmac(store: SqlStore, kek: KeyEncryptionKey) -> None:
    save_upstream_credentials(
        store,
        kek,
        api_key=UPSTREAM_KEY,
        secret=Secret(UPSTREAM_SECRET),
        key_type="hmac",
        now_ms=int(time.time() * 1000),
    )


def upstream_message(seen: Seen, payload: bytes) -> bytes:
    """The string to sign the upstream rebuilds from the headers it received."""
    return string_to_sign(
        seen.header("x-bapi-timestamp") or "",
        seen.header("x-bapi-api-key") or "",
        seen.header("x-bapi-recv-window") or "",
        payload,
    )


class TestResigning:
    def test_get_is_signed_over_the_query_with_the_upstream_secret(
        self, tmp_path: Path, echo: tuple[EchoUpstream, str]
    ) -> None:
        """The upstream sees its own api key and an HMAC over ts+key+recv_window+query that
        verifies with the upstream secret; the client's recv_window is kept."""
        upstream, upstream_url = echo
        with gateway_on(tmp_path, upstream_url, kind="bybit", before_start=store_hmac) as gw:
            api_key, secret = gw.new_key(permissions="")
            reply = signed_get(
                gw.url,
                "/v5/account/wallet-balance",
                "accountType=UNIFIED&coin=BTC",
                api_key,
                secret,
                recv_window="7500",
                extra={"Cookie": "a=b", "X-Keyplane-Uid": "1"},
            )
        assert envelope(reply)["retCode"] == 0
        (seen,) = upstream.seen
        assert seen.query == b"accountType=UNIFIED&coin=BTC"
        assert seen.header("x-bapi-api-key") == UPSTREAM_KEY
        assert seen.header("x-bapi-recv-window") == "7500"
        assert seen.header("x-bapi-sign-type") == "2"
        assert abs(int(seen.header("x-bapi-timestamp") or 0) - time.time() * 1000) < 5000
        signature = seen.header("x-bapi-sign") or ""
        assert verify_hmac(UPSTREAM_SECRET, upstream_message(seen, seen.query), signature)
        assert not verify_hmac(secret, upstream_message(seen, seen.query), signature)
        assert not {"cookie", "x-keyplane-uid"} & seen.names()
        assert api_key not in json.dumps(seen.headers)
        assert UPSTREAM_SECRET not in json.dumps(seen.headers)

    def test_post_is_signed_over_the_raw_body(
        self, tmp_path: Path, echo: tuple[EchoUpstream, str]
    ) -> None:
        """POST: the signature covers the body bytes exactly as the client sent them."""
        upstream, upstream_url = echo
        body = b'{"category": "spot", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Market"}'
        with gateway_on(tmp_path, upstream_url, kind="bybit", before_start=store_hmac) as gw:
            api_key, secret = gw.new_key(permissions="Spot:SpotTrade")
            reply = signed_post(gw.url, "/v5/order/create", body, api_key, secret)
        assert envelope(reply)["retCode"] == 0
        (seen,) = upstream.seen
        assert seen.body == body
        signature = seen.header("x-bapi-sign") or ""
        assert verify_hmac(UPSTREAM_SECRET, upstream_message(seen, body), signature)

    def test_missing_client_recv_window_becomes_5000(
        self, tmp_path: Path, echo: tuple[EchoUpstream, str]
    ) -> None:
        """A client that sends no X-BAPI-RECV-WINDOW is forwarded with Bybit's default 5000."""
        upstream, upstream_url = echo
        with gateway_on(tmp_path, upstream_url, kind="bybit", before_start=store_hmac) as gw:
            api_key, secret = gw.new_key(permissions="")
            signed_get(gw.url, "/v5/account/info", "", api_key, secret, recv_window=None)
        assert upstream.seen[0].header("x-bapi-recv-window") == "5000"

    def test_rsa_upstream_key(self, tmp_path: Path, echo: tuple[EchoUpstream, str]) -> None:
        """An RSA exchange key signs PKCS#1 v1.5 SHA-256, base64, verifiable with its public key."""
        upstream, upstream_url = echo
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()

        def store_rsa(store: SqlStore, kek: KeyEncryptionKey) -> None:
            save_upstream_credentials(
                store, kek, api_key=UPSTREAM_KEY, secret=Secret(pem), key_type="rsa", now_ms=1
            )

        with gateway_on(tmp_path, upstream_url, kind="bybit", before_start=store_rsa) as gw:
            api_key, secret = gw.new_key(permissions="")
            signed_get(gw.url, "/v5/order/realtime", "category=spot", api_key, secret)
        (seen,) = upstream.seen
        signature = seen.header("x-bapi-sign") or ""
        assert verify_rsa(private.public_key(), upstream_message(seen, seen.query), signature)

    def test_public_routes_go_unsigned(
        self, tmp_path: Path, echo: tuple[EchoUpstream, str]
    ) -> None:
        """Market data needs no credentials: nothing X-BAPI-* is sent for it."""
        upstream, upstream_url = echo
        with gateway_on(tmp_path, upstream_url, kind="bybit", before_start=store_hmac) as gw:
            httpx.get(f"{gw.url}/v5/market/instruments-info?category=spot")
        assert not any(n.startswith("x-bapi-") for n in upstream.seen[0].names())


class TestCredentialChanges:
    def test_new_credentials_apply_without_restart_and_clear_gives_10016(
        self, tmp_path: Path, echo: tuple[EchoUpstream, str]
    ) -> None:
        """Another process replacing the credentials is picked up within a second; after clear,
        private routes answer 10016 and public ones still forward."""
        upstream, upstream_url = echo
        with gateway_on(tmp_path, upstream_url, kind="bybit", before_start=store_hmac) as gw:
            api_key, secret = gw.new_key(permissions="")
            other = open_store(gw.db_url)  # the CLI's view of the same database
            try:
                save_upstream_credentials(
                    other,
                    gw.kek,
                    api_key="ROTATEDKEY00000002",
                    secret=Secret("rotated-secret"),
                    key_type="hmac",
                    now_ms=2,
                )
                deadline = time.monotonic() + 1.0
                while True:
                    signed_get(gw.url, "/v5/account/info", "", api_key, secret)
                    if upstream.seen[-1].header("x-bapi-api-key") == "ROTATEDKEY00000002":
                        break
                    assert time.monotonic() < deadline, "credentials not re-read within 1 s"
                    time.sleep(0.05)
                assert verify_hmac(
                    "rotated-secret",
                    upstream_message(upstream.seen[-1], b""),
                    upstream.seen[-1].header("x-bapi-sign") or "",
                )
                assert clear_upstream_credentials(other, now_ms=int(time.time() * 1000))
                deadline = time.monotonic() + 1.0
                while True:
                    reply = signed_get(gw.url, "/v5/account/info", "", api_key, secret)
                    if envelope(reply)["retCode"] == 10016:
                        break
                    assert time.monotonic() < deadline, "clear not noticed within 1 s"
                    time.sleep(0.05)
                public = httpx.get(f"{gw.url}/v5/market/time")
            finally:
                other.close()
        assert envelope(reply)["retMsg"] == "Server error: upstream credentials not set."
        assert envelope(public)["retCode"] == 0

    def test_secrets_never_reach_logs(
        self, tmp_path: Path, echo: tuple[EchoUpstream, str], capfd: pytest.CaptureFixture[str]
    ) -> None:
        """Forwarding and failing (upstream garbage) log nothing of either secret."""
        upstream, upstream_url = echo
        upstream.raw_body = b"not json"
        with gateway_on(tmp_path, upstream_url, kind="bybit", before_start=store_hmac) as gw:
            api_key, secret = gw.new_key(permissions="")
            reply = signed_get(gw.url, "/v5/account/info", "", api_key, secret)
        assert envelope(reply)["retCode"] == 10016
        out, err = capfd.readouterr()
        assert "upstream answered garbage" in err
        for text in (UPSTREAM_SECRET, secret, gw.secret):
            assert text not in out + err
