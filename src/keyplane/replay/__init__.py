"""Replay guard stores: remember accepted signatures until their window closes (10014 on a
repeat), in memory for one node or in Redis for several. See keyplane.replay.protocol."""

from keyplane.replay.memory import MemoryReplayStore
from keyplane.replay.protocol import (
    CLOCK_SKEW_GRACE_MS,
    ReplayStore,
    ReplayStoreFullError,
    canonical_signature,
    http_ttl_ms,
    signature_digest,
    ws_ttl_ms,
)
from keyplane.replay.redis import RedisReplayStore

__all__ = [
    "CLOCK_SKEW_GRACE_MS",
    "MemoryReplayStore",
    "RedisReplayStore",
    "ReplayStore",
    "ReplayStoreFullError",
    "canonical_signature",
    "http_ttl_ms",
    "signature_digest",
    "ws_ttl_ms",
]
