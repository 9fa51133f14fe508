"""In-process quota counter (one node), optionally seeded from the usage log after a restart."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import structlog

from keyplane.keys.model import DAY_MS
from keyplane.quota.protocol import QuotaDecision, day_start_ms, next_day_ms

__all__ = ["MemoryQuotaCounter", "UsageSeed"]

log = structlog.get_logger("keyplane.quota")

#: seed(api_key, since_ms) -> requests the usage log already holds for the key since since_ms
#: (authenticated rows with retCode 0); blocking, run in a worker thread.
UsageSeed = Callable[[str, int], int]


class MemoryQuotaCounter:
    """Counts per (api_key, UTC day) in a dict; yesterday's counts are dropped on the first hit
    of a new day.

    seed: when given, the first hit of a key on a day that began before this counter was made
    (i.e. a day a previous process may already have counted) reads the usage log's count for
    that day in a worker thread, off the event loop, and starts from it; so a restart does not
    hand a key a fresh quota. Days that began after the counter was made need no seed (this
    process saw all their requests). A seed that fails (database down) is logged, counted in
    seed_failures and treated as 0: the quota then fails open for the requests already made
    before the restart. created_ms: int ms, when the counter started (default: first hit).
    """

    def __init__(self, *, seed: UsageSeed | None = None, created_ms: int | None = None) -> None:
        self._seed = seed
        self._created_ms = created_ms
        self._day = -1
        self._counts: dict[str, int] = {}
        self._seeding: dict[str, anyio.Event] = {}
        self.seeds = 0
        self.seed_failures = 0

    async def hit(self, api_key: str, quota: int, now_ms: int) -> QuotaDecision:
        """Count one request (see QuotaCounter.hit); never raises for the backend."""
        if quota < 1:
            raise ValueError(f"quota must be >= 1, got {quota}")
        day = day_start_ms(now_ms)
        if self._created_ms is None:
            self._created_ms = now_ms
        if day != self._day:
            if day < self._day:  # a request stamped before midnight, served after: no count
                return QuotaDecision(True, 0, quota, next_day_ms(now_ms))
            self._day, self._counts, self._seeding = day, {}, {}
        if api_key not in self._counts:
            await self._seed_key(api_key, day)
        # from here on no await: read, compare and write the count in one step of the loop
        count = self._counts.get(api_key, 0)
        reset = day + DAY_MS
        if count >= quota:
            return QuotaDecision(False, count, quota, reset)
        count += 1
        self._counts[api_key] = count
        return QuotaDecision(True, count, quota, reset)

    async def _seed_key(self, api_key: str, day: int) -> None:
        """Set the starting count of api_key for day: 0, or the usage log's (one reader per key;
        concurrent first requests of the key wait for it)."""
        seed = self._seed
        created = self._created_ms
        if seed is None or created is None or day > created:
            self._counts[api_key] = 0
            return
        waiting = self._seeding.get(api_key)
        if waiting is not None:
            await waiting.wait()
            return
        done = self._seeding[api_key] = anyio.Event()
        try:
            found = await anyio.to_thread.run_sync(seed, api_key, day)
            self.seeds += 1
        except Exception as exc:
            self.seed_failures += 1
            log.warning("quota seed from the usage log failed", error=type(exc).__name__)
            found = 0
        finally:
            done.set()
        if self._day == day:
            self._counts[api_key] = max(self._counts.get(api_key, 0), int(found))

    async def used(self, api_key: str, now_ms: int) -> int:
        """Requests counted for api_key today (0 when none or another day)."""
        if day_start_ms(now_ms) != self._day:
            return 0
        return self._counts.get(api_key, 0)

    async def ping(self) -> None:
        """Always answers: the counts live in this process."""

    async def close(self) -> None:
        """Nothing to release."""
