"""In-process rate limiter (one node): GCRA state in a dict."""

from __future__ import annotations

from keyplane.ratelimit.protocol import Decision, Rate, gcra_update

__all__ = ["MemoryRateLimiter"]

_PRUNE_EVERY = 10_000


class MemoryRateLimiter:
    """GCRA buckets in memory; idle buckets are pruned as their TAT passes."""

    def __init__(self) -> None:
        self._tat: dict[str, float] = {}
        self._hits = 0

    async def hit(self, bucket: str, rate: Rate, now_ms: int) -> Decision:
        """Count one request (see keyplane.ratelimit.protocol.gcra_update)."""
        return self.decide(bucket, rate, now_ms)

    def decide(self, bucket: str, rate: Rate, now_ms: int) -> Decision:
        """hit() without the coroutine: the in-process limiter never waits and never fails, so
        the request path calls this directly (keyplane.http.limits)."""
        self._hits += 1
        if self._hits % _PRUNE_EVERY == 0:
            self._tat = {b: t for b, t in self._tat.items() if t > now_ms}
        return gcra_update(self._tat, bucket, rate, now_ms)

    async def ping(self) -> None:
        """Always answers: the buckets live in this process."""

    async def close(self) -> None:
        """Nothing to release."""
