"""Quota counter shared by every node through Redis: one atomic Lua call per request.

Each key's day is one Redis integer `<prefix><api_key>:<UTC day number>` (days since the epoch),
created by the first request of the day with a PEXPIRE lasting until the next 00:00 UTC plus a
grace hour (clock skew between nodes), so yesterday's counters vanish by themselves. The TTL is
relative and computed from the caller's clock, not an absolute PEXPIREAT: Redis's own clock
never decides (frozen test clocks work, as for the rate limiter). The script reads the
count and increments it only while it is under the quota, so a refused request is never counted
and concurrent nodes can never push a key past its quota: Redis runs each script atomically.
Time comes from the caller's clock (`now_ms`), like keyplane.ratelimit.redis.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from keyplane.keys.model import DAY_MS
from keyplane.quota.protocol import QuotaDecision, next_day_ms
from keyplane.redis_client import CoalescedCalls, fail_fast_client

__all__ = ["DEFAULT_PREFIX", "RedisQuotaCounter"]

DEFAULT_PREFIX = "keyplane:quota:"
#: extra lifetime of a day's counter past its midnight, ms (clock skew between nodes).
EXPIRY_GRACE_MS = 3_600_000

#: one hit: (the day's counter key, (quota, ttl_ms)).
_Hit = tuple[str, tuple[int, int]]

# KEYS[1] the day's counter; ARGV quota, ttl ms. Returns {allowed 0|1, count}.
_QUOTA_LUA = """
local quota = tonumber(ARGV[1])
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
if count >= quota then
  return {0, count}
end
count = redis.call('INCR', KEYS[1])
if count == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return {1, count}
"""


class RedisQuotaCounter:
    """Day counters in Redis, shared by all nodes; one EVALSHA per hit, and at most one round
    trip per hit: hits waiting while a round trip is in flight go together in the next one, as
    a pipeline (keyplane.redis_client.CoalescedCalls, as for the rate limiter; EVAL once more
    when Redis lost the script). hit() raises redis.exceptions.RedisError when Redis cannot
    answer; the caller applies its fail-open/closed policy. round_trips counts round trips."""

    def __init__(self, client: aioredis.Redis, *, prefix: str = DEFAULT_PREFIX) -> None:
        self._client = client
        self._prefix = prefix
        self._script = client.register_script(_QUOTA_LUA)
        self._calls: CoalescedCalls[_Hit, tuple[int, int]] = CoalescedCalls(
            self._send, what="quota counter"
        )
        self.round_trips = 0

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str = DEFAULT_PREFIX, **client_options: Any
    ) -> RedisQuotaCounter:
        """A counter on a new client for url (redis://, rediss://, unix://): the fail-fast
        client of keyplane.redis_client (0.5 s timeouts, one immediate retry) unless
        client_options say otherwise."""
        return cls(fail_fast_client(url, **client_options), prefix=prefix)

    def _key(self, api_key: str, now_ms: int) -> str:
        return f"{self._prefix}{api_key}:{now_ms // DAY_MS}"

    async def hit(self, api_key: str, quota: int, now_ms: int) -> QuotaDecision:
        """Count one request (see QuotaCounter.hit); raises RedisError."""
        if quota < 1:
            raise ValueError(f"quota must be >= 1, got {quota}")
        reset = next_day_ms(now_ms)
        allowed, count = await self._calls.submit(
            (self._key(api_key, now_ms), (quota, reset - now_ms + EXPIRY_GRACE_MS))
        )
        return QuotaDecision(allowed == 1, count, quota, reset)

    async def _send(self, batch: list[_Hit]) -> list[tuple[int, int] | Exception]:
        """One round trip: an EVALSHA alone or a pipeline of them (one more, EVAL, for hits
        Redis answered NOSCRIPT). Returns (allowed 0|1, count) per hit."""
        self.round_trips += 1
        pipe = self._client.pipeline(transaction=False)
        for key, args in batch:
            pipe.evalsha(self._script.sha, 1, key, *args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if missing:
            self.round_trips += 1
            retry = self._client.pipeline(transaction=False)
            for i in missing:
                key, args = batch[i]
                retry.eval(_QUOTA_LUA, 1, key, *args)
            for i, reply in zip(missing, await retry.execute(raise_on_error=False), strict=True):
                replies[i] = reply
        return [r if isinstance(r, Exception) else (int(r[0]), int(r[1])) for r in replies]

    async def used(self, api_key: str, now_ms: int) -> int:
        """Requests counted for api_key today; raises RedisError."""
        value = await self._client.get(self._key(api_key, now_ms))
        return int(value) if value is not None else 0

    async def ping(self) -> None:
        """PING Redis; raises RedisError when it does not answer."""
        await self._client.ping()

    async def close(self) -> None:
        """Stop the batch sender and close the client and its connection pool."""
        self._calls.close()
        await self._client.aclose()
