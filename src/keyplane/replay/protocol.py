"""The replay-store port: has this signature of this key been seen inside its time window?

A signed V5 request stays acceptable while its timestamp is inside the window of
keyplane.auth.pipeline.check_timestamp (now_ms - recv_window <= timestamp < now_ms + 1000), and
a WebSocket auth frame while now_ms < expires (authenticate_ws). Whoever captures one can send
it again, byte for byte, until then. The replay guard (opt-in per key, ApiKey.replay_guard)
remembers every accepted signature until its window closes and refuses a repeat with 10014.
Bybit itself accepts a repeated signature, which is why the guard is off by default.

Signatures are compared in their canonical form (canonical_signature): HMAC signatures are
accepted in any case and RSA signatures as base64 with unused trailing bits, so the raw header
text would let a replay with "ABC..." for "abc..." through. The stores keep only the SHA-256
digest of that form (signature_digest), never the signature: a dump of the replay store (a
Redis snapshot, a memory dump) holds nothing a captured request did not already show, and
nothing that could be replayed or matched to a request log by its text.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Protocol

from keyplane.keys.model import KeyType

__all__ = [
    "CLOCK_SKEW_GRACE_MS",
    "ReplayStore",
    "ReplayStoreFullError",
    "canonical_signature",
    "http_ttl_ms",
    "signature_digest",
    "ws_ttl_ms",
]

#: extra ms a signature is remembered past its window, for nodes whose clocks disagree: a node
#: running d ms behind accepts a request d ms longer (NTP keeps d far below this).
CLOCK_SKEW_GRACE_MS = 1000


class ReplayStoreFullError(Exception):
    """The in-memory store holds max_entries live signatures: it cannot remember another
    without forgetting a live one, so it refuses to decide (the caller's fail policy applies)."""


class ReplayStore(Protocol):
    """Remembers (key id, signature) pairs for a time; backends: memory (one node), Redis."""

    async def first_seen(self, key_id: int, signature: str, ttl_ms: int) -> bool:
        """True the first time (key_id, signature) is offered, then remembered for ttl_ms
        (int ms >= 1); False while it is still remembered (the TTL is not extended).

        signature: what identifies the request, "<request> <canonical signature>"
        (keyplane.http.replay.ReplayGuard.check; canonical_signature); stores keep only its
        signature_digest, never the text. Raises ValueError for ttl_ms < 1;
        backend errors (redis.exceptions.RedisError, ReplayStoreFullError) propagate.
        """
        ...

    async def ping(self) -> None:
        """Return when the backend answers; raise when it cannot."""
        ...

    async def close(self) -> None:
        """Release connections (the in-memory store also forgets what it remembered)."""
        ...


def http_ttl_ms(timestamp_ms: int, recv_window_ms: int, now_ms: int) -> int:
    """ms to remember an HTTP signature accepted at now_ms: until timestamp + recv_window (the
    last instant check_timestamp still accepts it) plus 1 ms, plus CLOCK_SKEW_GRACE_MS; at least
    1. All arguments in ms (timestamps since epoch). rule: Bybit V5 guide, timestamp rule."""
    return max(1, timestamp_ms + recv_window_ms + 1 - now_ms) + CLOCK_SKEW_GRACE_MS


def ws_ttl_ms(expires_ms: int, now_ms: int) -> int:
    """ms to remember a WebSocket auth signature accepted at now_ms: until expires (auth frames
    are accepted while now < expires), plus CLOCK_SKEW_GRACE_MS; at least 1. rule: Bybit V5
    "WebSocket Connect", authentication."""
    return max(1, expires_ms - now_ms) + CLOCK_SKEW_GRACE_MS


def canonical_signature(key_type: KeyType, signature: str) -> str:
    """The one text form of an already verified signature, so every accepted spelling of it
    counts as the same: HMAC hex in lowercase (keyplane.signing verifies any case); RSA base64
    decoded and re-encoded (standard base64 with padding, unused trailing bits zero).

    Raises ValueError when an RSA signature is not valid base64 (verification rejects those).
    """
    if key_type is KeyType.RSA:
        raw = base64.b64decode(signature.encode("ascii"), validate=True)
        return base64.b64encode(raw).decode("ascii")
    return signature.lower()


def signature_digest(signature: str) -> bytes:
    """The SHA-256 digest (32 bytes) of a canonical signature's UTF-8 text: what a replay store
    remembers instead of the signature. SHA-256 is preimage resistant, so the digest cannot be
    turned back into the signature, and collision resistant, so two signatures never share
    one (FIPS 180-4)."""
    return hashlib.sha256(signature.encode("utf-8")).digest()
