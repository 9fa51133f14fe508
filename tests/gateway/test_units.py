"""Pure parts of the gateway: header rules, URL rules, credential validation and masking."""

from __future__ import annotations

import pytest

from keyplane.errors import ParameterError
from keyplane.gateway import (
    UpstreamCredentials,
    UpstreamSigner,
    load_upstream_credentials,
    mask_api_key,
    parse_upstream_url,
    save_upstream_credentials,
)
from keyplane.gateway.headers import client_recv_window, inbound_headers, outbound_headers
from keyplane.keys import KeyEncryptionKey
from keyplane.keys.encryption import SecretDecryptionError
from keyplane.secret import Secret
from keyplane.signing import string_to_sign, verify_hmac
from keyplane.store import MemoryStore

# the DESIGN.md §3 HMAC test vector
VECTOR_SECRET = "0123456789abcdefghijklmnopqrstuvwxyz"
VECTOR_KEY = "ABCDEFGHIJKLMNOPQR"


class TestHeaderRules:
    def test_inbound_drops_identity_hop_by_hop_and_connection_tokens(self) -> None:
        """Only neutral headers survive; names listed in Connection are dropped too."""
        raw = [
            (b"x-bapi-api-key", b"K"),
            (b"X-BAPI-SIGN", b"S"),
            (b"x-keyplane-key-id", b"spoof"),
            (b"authorization", b"Basic x"),
            (b"cookie", b"a=b"),
            (b"connection", b"close, x-private"),
            (b"x-private", b"1"),
            (b"transfer-encoding", b"chunked"),
            (b"host", b"gw"),
            (b"content-type", b"application/json"),
            (b"user-agent", b"pybit"),
        ]
        assert inbound_headers(raw) == [
            ("content-type", "application/json"),
            ("user-agent", "pybit"),
        ]

    def test_outbound_keeps_limits_and_drops_framing(self) -> None:
        """X-Bapi-Limit* and content-type pass; framing, Date, Server, Set-Cookie do not."""
        upstream = [
            ("Content-Type", "application/json"),
            ("Content-Length", "12"),
            ("Content-Encoding", "gzip"),
            ("Set-Cookie", "cf=1"),
            ("Date", "x"),
            ("X-Bapi-Limit", "20"),
            ("Keep-Alive", "timeout=5"),
        ]
        assert outbound_headers(upstream) == [
            (b"content-type", b"application/json"),
            (b"x-bapi-limit", b"20"),
        ]

    @pytest.mark.parametrize(
        ("sent", "forwarded"),
        [(b"7500", "7500"), (b"", "5000"), (b"-1", "5000"), (b"abc", "5000"), (b"0", "5000")],
    )
    def test_recv_window(self, sent: bytes, forwarded: str) -> None:
        """The client's positive decimal recv_window is kept, anything else becomes 5000."""
        assert client_recv_window([(b"x-bapi-recv-window", sent)]) == forwarded


class TestUpstreamUrl:
    @pytest.mark.parametrize("url", ["ftp://x", "http://", "localhost:8080", "http://h/?a=1"])
    def test_refused(self, url: str) -> None:
        """Only http(s)://host[:port][/path] without query or fragment is accepted."""
        with pytest.raises(ValueError, match="upstream URL"):
            parse_upstream_url(url)

    def test_accepted_with_path(self) -> None:
        """A base path is kept (requests go to <path>/v5/...)."""
        assert parse_upstream_url("https://api.example:8443/bybit").path == "/bybit"


class TestCredentials:
    def test_signer_matches_the_design_vector(self) -> None:
        """The HMAC signer reproduces DESIGN.md's test vector for accountType=UNIFIED."""
        signer = UpstreamSigner(
            UpstreamCredentials(VECTOR_KEY, "hmac", Secret(VECTOR_SECRET), set_at_ms=0)
        )
        headers = signer.headers(
            timestamp_ms=1700000000000, recv_window="5000", payload=b"accountType=UNIFIED"
        )
        assert headers["X-BAPI-SIGN"] == (
            "f9567bf613cbbf2d5b55cd1d016a2481db50fa66fbcb8f0fe5657495ba5fb41e"
        )
        message = string_to_sign("1700000000000", VECTOR_KEY, "5000", b"accountType=UNIFIED")
        assert verify_hmac(VECTOR_SECRET, message, headers["X-BAPI-SIGN"])

    def test_reprs_are_masked(self) -> None:
        """Neither the credentials nor the signer show the secret or the whole api key."""
        credentials = UpstreamCredentials(VECTOR_KEY, "hmac", Secret(VECTOR_SECRET), 0)
        for text in (repr(credentials), repr(UpstreamSigner(credentials))):
            assert VECTOR_SECRET not in text
        assert VECTOR_KEY not in repr(UpstreamSigner(credentials))
        assert mask_api_key(VECTOR_KEY) == "ABCD************QR"
        assert mask_api_key("short") == "****"

    def test_stored_encrypted_and_bound_to_the_kek(self) -> None:
        """The store holds ciphertext only; another KEK cannot decrypt it (10016)."""
        store, kek = MemoryStore(), KeyEncryptionKey.generate()
        record = save_upstream_credentials(
            store, kek, api_key=VECTOR_KEY, secret=Secret(VECTOR_SECRET + "\n"), key_type="hmac",
            now_ms=5,
        )  # fmt: skip
        assert VECTOR_SECRET.encode() not in record.secret_ciphertext
        loaded = load_upstream_credentials(store, kek)
        assert loaded is not None
        assert loaded.secret == Secret(VECTOR_SECRET)
        with pytest.raises(SecretDecryptionError) as info:
            load_upstream_credentials(store, KeyEncryptionKey.generate())
        assert info.value.ret_code == 10016

    @pytest.mark.parametrize(
        ("api_key", "secret", "key_type", "message"),
        [
            ("", "s", "hmac", "1..64"),
            ("bad key", "s", "hmac", "letters"),
            ("GOODKEY", "   ", "hmac", "empty"),
            ("GOODKEY", "has space-SECRETVALUE", "hmac", "printable"),
            ("GOODKEY", "-----BEGIN PRIVATE KEY-----\nSECRETVALUE\n", "rsa", "PEM RSA"),
        ],
    )
    def test_bad_input_is_refused_without_echo(
        self, api_key: str, secret: str, key_type: str, message: str
    ) -> None:
        """Malformed key, secret or PEM: ParameterError (10001) that never quotes the secret."""
        with pytest.raises(ParameterError, match=message) as info:
            save_upstream_credentials(
                MemoryStore(),
                KeyEncryptionKey.generate(),
                api_key=api_key,
                secret=Secret(secret),
                key_type=key_type,  # type: ignore[arg-type]
                now_ms=0,
            )
        assert "SECRETVALUE" not in str(info.value)
        assert info.value.ret_code == 10001


def test_setting_and_clearing_upstream_credentials_is_audited() -> None:
    """upstream.set (with the previous api key on a replace) and upstream.clear land in the
    audit chain with the api key and type, never the secret; clearing nothing writes nothing."""
    from keyplane.gateway.credentials import clear_upstream_credentials, save_upstream_credentials
    from keyplane.keys import KeyEncryptionKey
    from keyplane.secret import Secret
    from keyplane.store import MemoryStore

    store, kek = MemoryStore(), KeyEncryptionKey.generate()
    for api_key in ("EXCHANGEKEY0000001", "EXCHANGEKEY0000002"):
        save_upstream_credentials(
            store, kek, api_key=api_key, secret=Secret("s" * 36), key_type="hmac",
            now_ms=1_700_000_000_000, actor="admin:alice",
        )
    assert clear_upstream_credentials(store, now_ms=1_700_000_000_001, actor="admin:bob")
    assert not clear_upstream_credentials(store, now_ms=1_700_000_000_002)
    records = store.list_audit(target="upstream:default")
    assert [(r.event.action, r.event.actor) for r in records] == [
        ("upstream.set", "admin:alice"),
        ("upstream.set", "admin:alice"),
        ("upstream.clear", "admin:bob"),
    ]
    assert records[1].event.before == {"apiKey": "EXCHANGEKEY0000001", "keyType": "hmac"}
    assert records[1].event.after == {"apiKey": "EXCHANGEKEY0000002", "keyType": "hmac"}
    assert "s" * 36 not in repr([r.to_json() for r in records])
