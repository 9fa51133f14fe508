"""Bybit V5 request signing, shared by the server (verify) and the client (sign).

String to sign (Bybit V5 guide, "Authentication for HTTP requests"):

    timestamp + api_key + recv_window + payload

where payload is the raw query string for GET and the raw body bytes for POST, exactly as sent:
never re-sorted, re-encoded or re-serialised. HMAC keys sign with HMAC-SHA256 and send lowercase
hex; RSA keys sign with RSASSA-PKCS1-v1_5 over SHA-256 and send standard base64.

Private WebSocket auth (Bybit V5 guide, "WebSocket authentication"): the signature covers the
string "GET/realtime" + str(expires), expires in ms since epoch.
"""

from __future__ import annotations

import base64
import binascii

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from keyplane.secret import Secret

__all__ = [
    "HmacKey",
    "load_rsa_private_key",
    "load_rsa_public_key",
    "sign_hmac",
    "sign_rsa",
    "string_to_sign",
    "verify_hmac",
    "verify_rsa",
    "ws_string_to_sign",
]


def string_to_sign(timestamp: str, api_key: str, recv_window: str, payload: bytes) -> bytes:
    """Return the V5 string to sign as bytes.

    timestamp: str, the X-BAPI-TIMESTAMP header as sent (ms since epoch).
    api_key: str, the X-BAPI-API-KEY header.
    recv_window: str, the X-BAPI-RECV-WINDOW header as sent ("" is allowed when absent,
        matching clients that omit it from the string; pybit and ccxt always send it).
    payload: bytes, raw query string (GET) or raw body (POST).
    """
    return (timestamp + api_key + recv_window).encode("utf-8") + payload


def ws_string_to_sign(expires: int | str) -> bytes:
    """Return the WebSocket auth string "GET/realtime" + str(expires); expires in ms."""
    return b"GET/realtime" + str(expires).encode("ascii")


#: an HMAC-SHA256 signature in hex: 32 bytes, 64 digits.
_HMAC_HEX_CHARS = 64


def _secret_bytes(secret: Secret[str] | str) -> bytes:
    raw = secret.reveal() if isinstance(secret, Secret) else secret
    return raw.encode("utf-8")


def sign_hmac(secret: Secret[str] | str, message: bytes) -> str:
    """HMAC-SHA256 of message under secret, as lowercase hex (64 chars)."""
    return HmacKey(secret).sign(message)


def verify_hmac(secret: Secret[str] | str, message: bytes, signature: str) -> bool:
    """True when signature (64 hex digits, any case) is HMAC-SHA256(secret, message).

    Compared in constant time (HmacKey.verify); never raises on malformed input.
    """
    return HmacKey(secret).verify(message, signature)


class HmacKey:
    """An HMAC-SHA256 key prepared once (inner/outer pads hashed) for many signatures.

    The hot path keeps one per cached api key as its verifier (keyplane.auth.pipeline.Verifier);
    the work per request is three calls into OpenSSL through `cryptography` (copy, update,
    constant-time verify). repr is masked.
    """

    __slots__ = ("_mac",)

    def __init__(self, secret: Secret[str] | str) -> None:
        self._mac = crypto_hmac.HMAC(_secret_bytes(secret), hashes.SHA256())

    def __repr__(self) -> str:
        return "HmacKey('**********')"

    def sign(self, message: bytes) -> str:
        """HMAC-SHA256 of message, lowercase hex (64 chars)."""
        mac = self._mac.copy()
        mac.update(message)
        return mac.finalize().hex()

    def verify(self, message: bytes, signature: str) -> bool:
        """True when signature (64 hex digits, any case) is HMAC-SHA256(key, message); compared
        in constant time by OpenSSL (cryptography's HMAC.verify); never raises."""
        if len(signature) != _HMAC_HEX_CHARS:
            return False
        try:
            given = bytes.fromhex(signature)
        except ValueError:
            return False
        mac = self._mac.copy()
        mac.update(message)
        try:
            mac.verify(given)
        except InvalidSignature:
            return False
        return True


def load_rsa_private_key(pem: Secret[str] | str) -> rsa.RSAPrivateKey:
    """Parse a PEM RSA private key (PKCS#1 or PKCS#8). Raises ValueError when it is not one."""
    key = serialization.load_pem_private_key(_secret_bytes(pem), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("not an RSA private key")
    return key


def load_rsa_public_key(pem: str) -> rsa.RSAPublicKey:
    """Parse a PEM RSA public key (SubjectPublicKeyInfo or PKCS#1).

    Raises ValueError when the text is not an RSA public key of at least 2048 bits.
    """
    try:
        key = serialization.load_pem_public_key(pem.strip().encode("ascii"))
    except (ValueError, UnicodeEncodeError, TypeError) as exc:
        raise ValueError("not a PEM public key") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("not an RSA public key")
    if key.key_size < 2048:
        raise ValueError("RSA keys must have at least 2048 bits")
    return key


def sign_rsa(private_key: rsa.RSAPrivateKey, message: bytes) -> str:
    """RSASSA-PKCS1-v1_5 / SHA-256 signature of message, standard base64."""
    raw = private_key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(raw).decode("ascii")


def verify_rsa(public_key: rsa.RSAPublicKey, message: bytes, signature: str) -> bool:
    """True when signature (standard base64) is a valid PKCS#1 v1.5 SHA-256 signature.

    Never raises on malformed base64 or a wrong-length signature.
    """
    try:
        raw = base64.b64decode(signature.encode("ascii"), validate=True)
        public_key.verify(raw, message, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, binascii.Error, ValueError, UnicodeEncodeError):
        return False
    return True
