"""The QuotaCounter contract: MemoryQuotaCounter and RedisQuotaCounter count alike.

Every Test<Unit> class runs once per backend (the `counter` fixture). TestRedisNodes holds what
only a shared Redis has (several nodes, expiry, outages); TestMemorySeed the memory backend's
restart seed from the usage log.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable

import pytest
import redis
import redis.asyncio as aioredis

from keyplane.keys.model import DAY_MS
from keyplane.quota import (
    MemoryQuotaCounter,
    QuotaCounter,
    QuotaDecision,
    RedisQuotaCounter,
    day_start_ms,
    next_day_ms,
)
from keyplane.quota.redis import EXPIRY_GRACE_MS
from tests._services import free_port, redis_url_or_skip

pytestmark = pytest.mark.anyio

NOW = 1_700_000_000_000  # 2023-11-14T22:13:20Z
MIDNIGHT = 1_700_006_400_000  # 2023-11-15T00:00:00Z


def new_api_key() -> str:
    """An api key no other test uses on a shared Redis."""
    return uuid.uuid4().hex[:18]


class TestDayWindow:
    def test_day_edges_are_utc_midnights(self) -> None:
        """day_start_ms / next_day_ms give 00:00 UTC around an instant."""
        assert day_start_ms(NOW) == MIDNIGHT - DAY_MS
        assert next_day_ms(NOW) == MIDNIGHT
        assert day_start_ms(MIDNIGHT) == MIDNIGHT
        assert next_day_ms(MIDNIGHT - 1) == MIDNIGHT


class TestQuota:
    async def test_exactly_quota_allowed_then_refused(self, counter: QuotaCounter) -> None:
        """quota requests pass with used 1..quota; the next ones are refused."""
        key = new_api_key()
        decisions = [await counter.hit(key, 5, NOW + i) for i in range(8)]
        assert [d.allowed for d in decisions] == [True] * 5 + [False] * 3
        assert [d.used for d in decisions] == [1, 2, 3, 4, 5, 5, 5, 5]
        assert decisions[0] == QuotaDecision(True, 1, 5, MIDNIGHT)
        assert decisions[-1] == QuotaDecision(False, 5, 5, MIDNIGHT)

    async def test_refused_requests_are_not_counted(self, counter: QuotaCounter) -> None:
        """Hammering a spent quota leaves the count at the quota."""
        key = new_api_key()
        for _ in range(20):
            await counter.hit(key, 3, NOW)
        assert await counter.used(key, NOW) == 3

    async def test_count_resets_at_utc_midnight(self, counter: QuotaCounter) -> None:
        """The last ms of a day is still refused; 00:00 UTC starts a fresh count."""
        key = new_api_key()
        for _ in range(2):
            assert (await counter.hit(key, 2, NOW)).allowed
        assert not (await counter.hit(key, 2, MIDNIGHT - 1)).allowed
        fresh = await counter.hit(key, 2, MIDNIGHT)
        assert fresh == QuotaDecision(True, 1, 2, MIDNIGHT + DAY_MS)
        assert await counter.used(key, MIDNIGHT) == 1

    async def test_keys_count_separately(self, counter: QuotaCounter) -> None:
        """Spending one key's quota leaves another key untouched."""
        a, b = new_api_key(), new_api_key()
        for _ in range(2):
            await counter.hit(a, 2, NOW)
        assert not (await counter.hit(a, 2, NOW)).allowed
        assert (await counter.hit(b, 2, NOW)).used == 1

    async def test_raised_quota_allows_more_the_same_day(self, counter: QuotaCounter) -> None:
        """The quota is read per request: raising it lets the key continue from its count."""
        key = new_api_key()
        for _ in range(2):
            await counter.hit(key, 2, NOW)
        assert not (await counter.hit(key, 2, NOW)).allowed
        assert await counter.hit(key, 3, NOW) == QuotaDecision(True, 3, 3, MIDNIGHT)

    async def test_concurrent_hits_never_pass_the_quota(self, counter: QuotaCounter) -> None:
        """50 hits at once against a quota of 20: exactly 20 pass, counted 1..20 once each."""
        key = new_api_key()
        decisions = await asyncio.gather(*(counter.hit(key, 20, NOW) for _ in range(50)))
        allowed = sorted(d.used for d in decisions if d.allowed)
        assert allowed == list(range(1, 21))
        assert await counter.used(key, NOW) == 20

    async def test_quota_below_one_is_refused(self, counter: QuotaCounter) -> None:
        """A quota of 0 is a caller bug (0 means "no quota" in the CLI): ValueError."""
        with pytest.raises(ValueError, match="quota"):
            await counter.hit(new_api_key(), 0, NOW)

    async def test_unused_key_reads_zero(self, counter: QuotaCounter) -> None:
        """used() of a key never hit today is 0."""
        assert await counter.used(new_api_key(), NOW) == 0


class TestRedisNodes:
    async def test_two_nodes_share_one_quota(
        self, redis_quota_nodes: Callable[[], RedisQuotaCounter]
    ) -> None:
        """Two nodes hitting one key at once: exactly quota requests pass in all."""
        a, b = redis_quota_nodes(), redis_quota_nodes()
        key = new_api_key()
        hits = [node.hit(key, 30, NOW) for node in (a, b) for _ in range(40)]
        decisions = await asyncio.gather(*hits)
        assert sum(d.allowed for d in decisions) == 30
        assert await a.used(key, NOW) == await b.used(key, NOW) == 30

    async def test_counter_expires_after_its_midnight(
        self, redis_quota_nodes: Callable[[], RedisQuotaCounter]
    ) -> None:
        """The day's counter lives until next midnight + grace (by the caller's clock), one
        round trip per hit."""
        node = redis_quota_nodes()
        key = new_api_key()
        await node.hit(key, 5, NOW)
        await node.hit(key, 5, NOW)
        client = aioredis.from_url(redis_url_or_skip())
        try:
            name = f"{node._prefix}{key}:{NOW // DAY_MS}"
            ttl = await client.pttl(name)
            assert MIDNIGHT + EXPIRY_GRACE_MS - NOW - 5000 < ttl <= MIDNIGHT + EXPIRY_GRACE_MS - NOW
        finally:
            await client.aclose()
        assert node.round_trips == 2

    async def test_concurrent_hits_share_round_trips(
        self, redis_quota_nodes: Callable[[], RedisQuotaCounter]
    ) -> None:
        """50 hits at once from one node travel in a few pipelined round trips (never more
        than one per hit) and count 1..50 in order."""
        node = redis_quota_nodes()
        key = new_api_key()
        decisions = await asyncio.gather(*(node.hit(key, 100, NOW) for _ in range(50)))
        assert [d.used for d in decisions] == list(range(1, 51))
        assert 1 <= node.round_trips < 50

    async def test_lost_script_is_reloaded(
        self, redis_quota_nodes: Callable[[], RedisQuotaCounter]
    ) -> None:
        """After SCRIPT FLUSH the next hits still count (EVALSHA answered NOSCRIPT, then EVAL)."""
        node = redis_quota_nodes()
        key = new_api_key()
        await node.hit(key, 5, NOW)
        admin = aioredis.from_url(redis_url_or_skip())
        try:
            await admin.script_flush()
        finally:
            await admin.aclose()
        decisions = await asyncio.gather(*(node.hit(key, 5, NOW) for _ in range(6)))
        assert [d.allowed for d in decisions] == [True] * 4 + [False] * 2

    async def test_unreachable_redis_raises(self) -> None:
        """No server: hit() raises a RedisError quickly (the caller's policy decides)."""
        node = RedisQuotaCounter.from_url(f"redis://127.0.0.1:{free_port()}/0")
        try:
            with pytest.raises(redis.exceptions.ConnectionError):
                await node.hit("AAA", 5, NOW)
        finally:
            await node.close()


class TestMemorySeed:
    async def test_restart_starts_from_the_usage_log(self) -> None:
        """A counter made mid-day seeds a key's count once from the usage log, in a thread."""
        calls: list[tuple[int, int, bool]] = []

        def seed(api_key: str, since_ms: int) -> int:
            calls.append((api_key, since_ms, threading.current_thread() is threading.main_thread()))
            return 3

        counter = MemoryQuotaCounter(seed=seed, created_ms=NOW)
        decisions = await asyncio.gather(*(counter.hit("AAA", 5, NOW + 1) for _ in range(4)))
        assert sorted(d.used for d in decisions) == [4, 5, 5, 5]
        assert sum(d.allowed for d in decisions) == 2
        assert calls == [("AAA", MIDNIGHT - DAY_MS, False)]  # once, off the event loop's thread
        assert counter.seeds == 1

    async def test_days_begun_after_start_are_not_seeded(self) -> None:
        """This process saw every request of a day that began after it started: no query."""
        counter = MemoryQuotaCounter(seed=lambda *_: pytest.fail("seeded"), created_ms=NOW)
        assert (await counter.hit("AAA", 5, MIDNIGHT + 5)).used == 1

    async def test_failed_seed_counts_from_zero_and_is_counted(self) -> None:
        """The database is down at the first request: counted from 0, seed_failures 1."""

        def seed(api_key: str, since_ms: int) -> int:
            raise ConnectionError("database unreachable")

        counter = MemoryQuotaCounter(seed=seed, created_ms=NOW)
        assert (await counter.hit("AAA", 5, NOW)).used == 1
        assert counter.seed_failures == 1
