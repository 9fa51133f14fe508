"""Replay store shared by every node through Redis: `SET <prefix><key id>:<digest> 1 NX PX
<ttl_ms>`, one command and never more than one round trip per decision. <digest> is the
lowercase hex SHA-256 of the canonical signature (signature_digest): neither the key nor the
value holds the signature.

SET NX is atomic in Redis, so of many nodes offering the same signature at once exactly one gets
OK (first seen) and the others nil (a repeat). Redis expires the key by its own clock after
ttl_ms, so node clocks only matter through the TTL the caller computes (CLOCK_SKEW_GRACE_MS).
Like keyplane.ratelimit.redis, decisions that arrive while a round trip is in flight are
coalesced into the next one (one pipeline, not a transaction; each SET is atomic on its own),
and the client fails fast (0.5 s timeouts, one immediate retry for a dead pooled connection) so
the caller's fail-open/closed policy decides quickly when Redis is down. redis-py reconnects
on its own once Redis is back: no restart needed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from keyplane.ratelimit.redis import DEFAULT_RETRIES, DEFAULT_TIMEOUT_S
from keyplane.replay.protocol import signature_digest

__all__ = ["DEFAULT_PREFIX", "MAX_BATCH", "RedisReplayStore"]

DEFAULT_PREFIX = "keyplane:replay:"
#: most decisions sent in one pipeline; more waiting ones go in the next round trip.
MAX_BATCH = 256

_Pending = tuple[str, int, "asyncio.Future[bool]"]


class RedisReplayStore:
    """Remembered signatures in Redis, shared by all nodes; at most one round trip a decision.

    first_seen() raises redis.exceptions.RedisError (ConnectionError, TimeoutError, ...) when
    Redis cannot answer; it never guesses. round_trips counts round trips sent (one per batch).
    """

    def __init__(self, client: aioredis.Redis, *, prefix: str = DEFAULT_PREFIX) -> None:
        self._client = client
        self._prefix = prefix
        self._pending: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None
        self.round_trips = 0

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str = DEFAULT_PREFIX, **client_options: Any
    ) -> RedisReplayStore:
        """A store on a new client for url (redis://, rediss://, unix://); client_options go to
        redis.asyncio.from_url over the same fail-fast defaults as RedisRateLimiter.from_url."""
        options: dict[str, Any] = {
            "socket_connect_timeout": DEFAULT_TIMEOUT_S,
            "socket_timeout": DEFAULT_TIMEOUT_S,
            "retry": Retry(NoBackoff(), DEFAULT_RETRIES),
        }
        options.update(client_options)
        return cls(aioredis.from_url(url, **options), prefix=prefix)

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
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        self._pending.append((self.key_for(key_id, signature), int(ttl_ms), future))
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        """Send waiting decisions, MAX_BATCH per round trip, until none wait."""
        while self._pending:
            batch = self._pending[:MAX_BATCH]
            del self._pending[:MAX_BATCH]
            try:
                replies = await self._send(batch)
            except asyncio.CancelledError:  # close(): nobody will answer these
                _fail(batch, ConnectionError("replay store closed"))
                raise
            except Exception as exc:  # every decision of the batch fails the same way
                _fail(batch, exc)
                continue
            for (_, _, future), reply in zip(batch, replies, strict=True):
                if future.done():  # the request went away meanwhile
                    continue
                if isinstance(reply, Exception):
                    future.set_exception(reply)
                else:
                    future.set_result(bool(reply))  # OK -> True, nil (NX refused) -> False

    async def _send(self, batch: list[_Pending]) -> list[Any]:
        """One round trip: a SET alone, or a pipeline of them."""
        self.round_trips += 1
        if len(batch) == 1:
            key, ttl_ms, _ = batch[0]
            return [await self._client.set(key, b"1", nx=True, px=ttl_ms)]
        pipe = self._client.pipeline(transaction=False)
        for key, ttl_ms, _ in batch:
            pipe.set(key, b"1", nx=True, px=ttl_ms)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies

    async def ping(self) -> None:
        """PING Redis; raises RedisError when it does not answer."""
        await self._client.ping()

    async def close(self) -> None:
        """Stop the batch sender and close the client and its connection pool."""
        if self._flusher is not None and not self._flusher.done():
            self._flusher.cancel()
        _fail(self._pending, ConnectionError("replay store closed"))
        self._pending = []
        await self._client.aclose()


def _fail(batch: list[_Pending], exc: BaseException) -> None:
    for *_, future in batch:
        if not future.done():
            future.set_exception(exc)
