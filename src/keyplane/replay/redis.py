"""Replay store shared by every node through Redis: `SET <prefix><key id>:<digest> 1 NX PX
<ttl_ms>`, one command and never more than one round trip per decision. <digest> is the
lowercase hex SHA-256 of the canonical signature (signature_digest): neither the key nor the
value holds the signature.

SET NX is atomic in Redis, so of many nodes offering the same signature at once exactly one gets
OK (first seen) and the others nil (a repeat). Redis expires the key by its own clock after
ttl_ms, so node clocks only matter through the TTL the caller computes (CLOCK_SKEW_GRACE_MS).
Decisions that arrive while a round trip is in flight are coalesced into the next one (one
pipeline, not a transaction; each SET is atomic on its own), and the client fails fast; both
come from keyplane.redis_client, shared with the rate limiter.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from keyplane.redis_client import CoalescedCalls, fail_fast_client
from keyplane.replay.protocol import signature_digest

__all__ = ["DEFAULT_PREFIX", "RedisReplayStore"]

DEFAULT_PREFIX = "keyplane:replay:"

#: one decision: (Redis key, ttl_ms).
_Offer = tuple[str, int]


class RedisReplayStore:
    """Remembered signatures in Redis, shared by all nodes; at most one round trip a decision.

    first_seen() raises redis.exceptions.RedisError (ConnectionError, TimeoutError, ...) when
    Redis cannot answer; it never guesses. round_trips counts round trips sent (one per batch).
    """

    def __init__(self, client: aioredis.Redis, *, prefix: str = DEFAULT_PREFIX) -> None:
        self._client = client
        self._prefix = prefix
        self._calls: CoalescedCalls[_Offer, bool] = CoalescedCalls(self._send, what="replay store")
        self.round_trips = 0

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str = DEFAULT_PREFIX, **client_options: Any
    ) -> RedisReplayStore:
        """A store on a new client for url (redis://, rediss://, unix://); client_options go to
        redis.asyncio.from_url over the same fail-fast defaults as RedisRateLimiter.from_url."""
        return cls(fail_fast_client(url, **client_options), prefix=prefix)

    @property
    def prefix(self) -> str:
        """The key prefix: a signature is remembered at prefix + "<key id>:<digest>" (digest:
        hex SHA-256 of the canonical signature, see key_for)."""
        return self._prefix

    def key_for(self, key_id: int, signature: str) -> str:
        """The Redis key remembering key_id's canonical signature: prefix, key id, ":" and
        the hex SHA-256 digest of the signature (signature_digest)."""
        return f"{self._prefix}{key_id}:{signature_digest(signature).hex()}"

    async def first_seen(self, key_id: int, signature: str, ttl_ms: int) -> bool:
        """See keyplane.replay.protocol.ReplayStore.first_seen; raises ValueError (ttl_ms < 1)
        and RedisError."""
        if ttl_ms < 1:
            raise ValueError(f"ttl_ms must be >= 1, got {ttl_ms}")
        return await self._calls.submit((self.key_for(key_id, signature), int(ttl_ms)))

    async def _send(self, batch: list[_Offer]) -> list[bool | Exception]:
        """One round trip: a SET alone, or a pipeline of them. OK -> True (first seen), nil
        (NX refused) -> False; a command's own error stays that command's."""
        self.round_trips += 1
        if len(batch) == 1:
            key, ttl_ms = batch[0]
            return [bool(await self._client.set(key, b"1", nx=True, px=ttl_ms))]
        pipe = self._client.pipeline(transaction=False)
        for key, ttl_ms in batch:
            pipe.set(key, b"1", nx=True, px=ttl_ms)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return [r if isinstance(r, Exception) else bool(r) for r in replies]

    async def ping(self) -> None:
        """PING Redis; raises RedisError when it does not answer."""
        await self._client.ping()

    async def close(self) -> None:
        """Stop the batch sender and close the client and its connection pool."""
        self._calls.close()
        await self._client.aclose()
