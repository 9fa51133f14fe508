"""Signing: DESIGN.md §3 test vectors, signatures made by pybit and ccxt, RSA round trips."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given
from hypothesis import strategies as st

from keyplane.secret import Secret
from keyplane.signing import (
    load_rsa_public_key,
    sign_hmac,
    sign_rsa,
    string_to_sign,
    verify_hmac,
    verify_rsa,
    ws_string_to_sign,
)

SECRET = "0123456789abcdefghijklmnopqrstuvwxyz"
KEY = "ABCDEFGHIJKLMNOPQR"
TS = "1700000000000"
RW = "5000"

VECTORS = [
    (b"accountType=UNIFIED", "f9567bf613cbbf2d5b55cd1d016a2481db50fa66fbcb8f0fe5657495ba5fb41e"),
    (b"", "f8d28ceb78c1f475e769228eeee4c336825cf466c1f9ed32515a76d78fb45f4e"),
    (b"{}", "dd6ff6cbcd0686150df5116f0f3e567980c3b8208edaf3fb4572a70f157ac15f"),
]

PROBE_KEY = "PROBEKEY"
PROBE_SECRET = "PROBESECRET0123456789abcdefghij"
CLIENT_VECTORS = [
    (b"accountType=UNIFIED", "e589660322e147905c557ff3523244c61b1e7ef603f884a8521e63e58876efaf"),
    (
        b'{"category": "spot", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Market", '
        b'"qty": "0.001"}',
        "c47573f5daf3fe4a61c4b504e223b19129c0d9970ba945002f00240b441ba216",
    ),
    (
        b'{"category":"spot","symbol":"BTCUSDT","side":"Buy","orderType":"Market","qty":"0.001"}',
        "e5d7c862b06a4c1a4d35e6555fb30da61a56da882b2d23187ffb79e94c2947e9",
    ),
]


class TestHmacVectors:
    @pytest.mark.parametrize(("payload", "expected"), VECTORS)
    def test_design_vectors(self, payload: bytes, expected: str) -> None:
        """The DESIGN.md HMAC vectors sign and verify."""
        message = string_to_sign(TS, KEY, RW, payload)
        assert sign_hmac(SECRET, message) == expected
        assert verify_hmac(Secret(SECRET), message, expected)

    def test_websocket_vector(self) -> None:
        """The WebSocket auth string 'GET/realtime' + expires signs to the vector."""
        sig = sign_hmac(SECRET, ws_string_to_sign(1700000010000))
        assert sig == "055266e621137a56e33cdb2cbedfd12d5c16486b394d553f2f131757cbf9e9ae"
        assert ws_string_to_sign("1700000010000") == ws_string_to_sign(1700000010000)

    @pytest.mark.parametrize(("payload", "expected"), CLIENT_VECTORS)
    def test_signatures_captured_from_pybit_and_ccxt(self, payload: bytes, expected: str) -> None:
        """Signatures the real clients produced verify over the bytes as sent."""
        message = string_to_sign(TS, PROBE_KEY, RW, payload)
        assert verify_hmac(Secret(PROBE_SECRET), message, expected)

    def test_spaced_and_compact_json_are_different_messages(self) -> None:
        """Verification never re-serialises: pybit's signature does not verify ccxt's bytes."""
        pybit_sig = CLIENT_VECTORS[1][1]
        compact = string_to_sign(TS, PROBE_KEY, RW, CLIENT_VECTORS[2][0])
        assert not verify_hmac(PROBE_SECRET, compact, pybit_sig)

    def test_uppercase_hex_is_accepted(self) -> None:
        """Hex case does not matter (constant-time compare on the lowercased form)."""
        message = string_to_sign(TS, KEY, RW, b"")
        assert verify_hmac(SECRET, message, VECTORS[1][1].upper())

    @given(st.text(max_size=200))
    def test_garbage_signature_never_raises(self, signature: str) -> None:
        """Any text as a signature is just 'no match'."""
        assert verify_hmac(SECRET, b"x", signature) is False

    def test_non_ascii_payload(self) -> None:
        """UTF-8 payloads (non-ASCII notes, symbols) sign over their bytes."""
        payload = '{"note":"bot ü €"}'.encode()
        message = string_to_sign(TS, KEY, RW, payload)
        assert verify_hmac(SECRET, message, sign_hmac(SECRET, message))
        assert not verify_hmac(SECRET, message + b" ", sign_hmac(SECRET, message))


@pytest.fixture(scope="module")
def rsa_pair() -> tuple[rsa.RSAPrivateKey, str]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public_pem.decode()


class TestRsa:
    def test_round_trip(self, rsa_pair: tuple[rsa.RSAPrivateKey, str]) -> None:
        """PKCS#1 v1.5 SHA-256 base64 signatures verify under the public key."""
        private, public_pem = rsa_pair
        message = string_to_sign(TS, KEY, RW, b"accountType=UNIFIED")
        signature = sign_rsa(private, message)
        base64.b64decode(signature, validate=True)
        assert verify_rsa(load_rsa_public_key(public_pem), message, signature)
        assert not verify_rsa(load_rsa_public_key(public_pem), message + b"x", signature)

    @pytest.mark.parametrize("bad", ["", "not base64!", "AAAA", "😀"])
    def test_malformed_signature_is_false(
        self, rsa_pair: tuple[rsa.RSAPrivateKey, str], bad: str
    ) -> None:
        """Malformed base64 or short signatures are rejected without raising."""
        assert not verify_rsa(load_rsa_public_key(rsa_pair[1]), b"m", bad)

    def test_small_or_non_rsa_keys_refused(self) -> None:
        """Public keys under 2048 bits or not PEM are refused with ValueError."""
        small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        pem = small.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        with pytest.raises(ValueError, match="2048"):
            load_rsa_public_key(pem.decode())
        with pytest.raises(ValueError, match="PEM"):
            load_rsa_public_key("hello")


class TestSecret:
    def test_repr_and_str_are_masked(self) -> None:
        """A Secret never shows its value in repr, str or f-strings."""
        s = Secret("topsecretvalue")
        assert "topsecret" not in repr(s)
        assert "topsecret" not in str(s)
        assert "topsecret" not in f"{s}"
        assert s.reveal() == "topsecretvalue"
