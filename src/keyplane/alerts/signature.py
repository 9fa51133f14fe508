"""Webhook signatures, Stripe's scheme: `X-Keyplane-Signature: t=<ms>,v1=<hex>` where
hex = HMAC-SHA256(secret, "<t>." + raw body). Receivers verify with `verify_webhook` and refuse
stale timestamps (replay protection)."""

from __future__ import annotations

import hashlib
import hmac

from keyplane.secret import Secret

__all__ = ["WEBHOOK_SIGNATURE_HEADER", "sign_webhook", "verify_webhook"]

WEBHOOK_SIGNATURE_HEADER = "X-Keyplane-Signature"
#: default tolerance for the signed timestamp, ms (Stripe uses 5 minutes).
DEFAULT_TOLERANCE_MS = 300_000


def _digest(secret: Secret[str], timestamp_ms: int, body: bytes) -> str:
    message = str(timestamp_ms).encode() + b"." + body
    return hmac.new(secret.reveal().encode(), message, hashlib.sha256).hexdigest()


def sign_webhook(secret: Secret[str], timestamp_ms: int, body: bytes) -> str:
    """The header value "t=<timestamp_ms>,v1=<hex HMAC-SHA256>" for body at timestamp_ms."""
    return f"t={timestamp_ms},v1={_digest(secret, timestamp_ms, body)}"


def verify_webhook(
    secret: Secret[str],
    header: str,
    body: bytes,
    now_ms: int,
    tolerance_ms: int = DEFAULT_TOLERANCE_MS,
) -> bool:
    """True when header signs body with secret and its t is within tolerance_ms of now_ms.

    Constant-time comparison; any v1 entry may match (secret rotation sends several).
    Never raises on malformed headers (returns False).
    """
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            timestamp = int(value)
        elif name == "v1":
            candidates.append(value)
    if timestamp is None or abs(now_ms - timestamp) > tolerance_ms:
        return False
    expected = _digest(secret, timestamp, body)
    return any(hmac.compare_digest(expected, c) for c in candidates)
