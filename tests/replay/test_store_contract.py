"""The ReplayStore contract: MemoryReplayStore and RedisReplayStore answer alike.

Every test of the Test<Unit> classes below runs once per backend (the `store` fixture), on real
time with short TTLs. TestRedisNodes holds what only a shared Redis has: several nodes, round
trips, outages. TestMemoryBound: the in-memory store's memory rule.
"""

from __future__ import annotations

import asyncio
import time
import tracemalloc
import uuid
from collections.abc import Callable

import pytest
import redis
import redis.asyncio as aioredis

from keyplane.replay import (
    MemoryReplayStore,
    RedisReplayStore,
    ReplayStore,
    ReplayStoreFullError,
)
from tests._services import RedisServer, free_port

pytestmark = pytest.mark.anyio

LONG_TTL_MS = 60_000


def new_signature() -> str:
    """A signature (HMAC hex form) no other test uses."""
    return uuid.uuid4().hex + uuid.uuid4().hex


class TestFirstSight:
    """The first offer of a signature is new, every later one inside the TTL is a repeat."""

    async def test_first_true_then_false(self, store: ReplayStore) -> None:
        """first_seen: True, then False, False."""
        sig = new_signature()
        answers = [await store.first_seen(7, sig, LONG_TTL_MS) for _ in range(3)]
        assert answers == [True, False, False]

    async def test_keys_are_independent(self, store: ReplayStore) -> None:
        """The same signature under two key ids is new for each."""
        sig = new_signature()
        assert await store.first_seen(1, sig, LONG_TTL_MS) is True
        assert await store.first_seen(2, sig, LONG_TTL_MS) is True
        assert await store.first_seen(1, sig, LONG_TTL_MS) is False
        assert await store.first_seen(2, sig, LONG_TTL_MS) is False

    async def test_signatures_are_independent(self, store: ReplayStore) -> None:
        """Another signature of the same key is new."""
        assert await store.first_seen(1, new_signature(), LONG_TTL_MS) is True
        assert await store.first_seen(1, new_signature(), LONG_TTL_MS) is True

    async def test_ttl_below_one_ms_is_refused(self, store: ReplayStore) -> None:
        """ttl_ms 0 or negative raises ValueError: nothing is remembered for no time."""
        for ttl in (0, -5):
            with pytest.raises(ValueError, match="ttl_ms"):
                await store.first_seen(1, new_signature(), ttl)


class TestExpiry:
    """A signature is forgotten once its TTL passes (real time, short TTLs)."""

    async def test_new_again_after_ttl(self, store: ReplayStore) -> None:
        """TTL 50 ms: a repeat at once is refused, after 150 ms it is new again."""
        sig = new_signature()
        assert await store.first_seen(3, sig, 50) is True
        assert await store.first_seen(3, sig, 50) is False
        await asyncio.sleep(0.15)
        assert await store.first_seen(3, sig, 50) is True

    async def test_repeat_does_not_extend_the_ttl(self, store: ReplayStore) -> None:
        """Repeats inside the TTL do not keep the signature alive longer (SET NX semantics)."""
        sig = new_signature()
        assert await store.first_seen(3, sig, 200) is True
        await asyncio.sleep(0.1)
        assert await store.first_seen(3, sig, 200) is False  # would push expiry to +300 ms
        await asyncio.sleep(0.2)  # 300 ms after the first sight: the first TTL has passed
        assert await store.first_seen(3, sig, 200) is True

    async def test_remembered_until_its_ttl(self, store: ReplayStore) -> None:
        """TTL 1 s: still a repeat 0.5 s later."""
        sig = new_signature()
        assert await store.first_seen(4, sig, 1000) is True
        await asyncio.sleep(0.5)
        assert await store.first_seen(4, sig, 1000) is False

    async def test_each_signature_has_its_own_ttl(self, store: ReplayStore) -> None:
        """A short-lived and a long-lived signature: only the short one is forgotten."""
        short, long = new_signature(), new_signature()
        assert await store.first_seen(5, short, 50) is True
        assert await store.first_seen(5, long, LONG_TTL_MS) is True
        await asyncio.sleep(0.15)
        assert await store.first_seen(5, short, 50) is True
        assert await store.first_seen(5, long, LONG_TTL_MS) is False


class TestConcurrency:
    """Many concurrent offers of one signature: exactly one is first."""

    async def test_exactly_one_true_of_many(self, store: ReplayStore) -> None:
        """200 concurrent first_seen of one signature: one True, 199 False."""
        sig = new_signature()
        answers = await asyncio.gather(*(store.first_seen(9, sig, LONG_TTL_MS) for _ in range(200)))
        assert sorted(answers) == [False] * 199 + [True]

    async def test_concurrent_distinct_signatures_are_all_new(self, store: ReplayStore) -> None:
        """100 concurrent different signatures: all True."""
        sigs = [new_signature() for _ in range(100)]
        answers = await asyncio.gather(*(store.first_seen(9, s, LONG_TTL_MS) for s in sigs))
        assert all(answers)


class TestRedisNodes:
    """Redis only: nodes share what they have seen; one round trip a decision; outages."""

    async def test_seen_on_one_node_is_a_repeat_on_another(
        self, redis_nodes: Callable[[], RedisReplayStore]
    ) -> None:
        """Node A sees a signature first; node B gets False for it."""
        a, b = redis_nodes(), redis_nodes()
        sig = new_signature()
        assert await a.first_seen(11, sig, LONG_TTL_MS) is True
        assert await b.first_seen(11, sig, LONG_TTL_MS) is False

    async def test_concurrent_nodes_exactly_one_first(
        self, redis_nodes: Callable[[], RedisReplayStore]
    ) -> None:
        """150 concurrent offers of one signature through three nodes: one True in total."""
        nodes = [redis_nodes() for _ in range(3)]
        sig = new_signature()
        answers = await asyncio.gather(
            *(nodes[i % 3].first_seen(12, sig, LONG_TTL_MS) for i in range(150))
        )
        assert sum(answers) == 1

    async def test_one_round_trip_per_decision_at_most(
        self, redis_nodes: Callable[[], RedisReplayStore]
    ) -> None:
        """One by one: one round trip each. 100 at once: fewer round trips than decisions."""
        node = redis_nodes()
        for _ in range(10):
            await node.first_seen(13, new_signature(), LONG_TTL_MS)
        assert node.round_trips == 10
        await asyncio.gather(*(node.first_seen(13, new_signature(), 1000) for _ in range(100)))
        assert 10 < node.round_trips < 110

    async def test_key_layout_and_ttl_on_the_server(
        self, redis_nodes: Callable[[], RedisReplayStore]
    ) -> None:
        """The signature lives at <prefix><key id>:<signature> with the TTL given (PX)."""
        node = redis_nodes()
        sig = new_signature()
        await node.first_seen(14, sig, 30_000)
        client = node._client
        ttl = await client.pttl(f"{node.prefix}14:{sig}")
        assert 29_000 < ttl <= 30_000

    async def test_unreachable_redis_raises_fast(self) -> None:
        """A closed port: first_seen raises redis ConnectionError within about a second."""
        node = RedisReplayStore.from_url(f"redis://127.0.0.1:{free_port()}/0")
        try:
            started = time.monotonic()
            with pytest.raises(redis.exceptions.ConnectionError):
                await node.first_seen(15, new_signature(), 1000)
            assert time.monotonic() - started < 1.5
        finally:
            await node.close()

    async def test_recovers_after_redis_restart(self, private_redis: RedisServer) -> None:
        """Same store object: True, Redis killed -> raises, Redis back -> decides again."""
        node = RedisReplayStore.from_url(private_redis.url)
        try:
            assert await node.first_seen(16, new_signature(), 1000) is True
            private_redis.kill()
            with pytest.raises(redis.exceptions.ConnectionError):
                await node.first_seen(16, new_signature(), 1000)
            private_redis.start()
            sig = new_signature()
            assert await node.first_seen(16, sig, 1000) is True
            assert await node.first_seen(16, sig, 1000) is False
        finally:
            await node.close()

    async def test_one_set_command_per_decision(self, private_redis: RedisServer) -> None:
        """The server sees exactly one SET per decision (no GET-then-SET race)."""
        node = RedisReplayStore.from_url(private_redis.url)
        admin = aioredis.from_url(private_redis.url)
        try:
            await admin.config_resetstat()
            sig = new_signature()
            for _ in range(5):
                await node.first_seen(17, sig, 1000)
            stats = await admin.info("commandstats")
            assert stats["cmdstat_set"]["calls"] == 5
            assert "cmdstat_get" not in stats
        finally:
            await node.close()
            await admin.aclose()


class TestMemoryBound:
    """The in-memory store's memory rule: at most max_entries live signatures, never evicted."""

    async def test_full_store_refuses_to_decide(self) -> None:
        """max_entries live signatures: the next new one raises ReplayStoreFullError, while
        repeats of the remembered ones are still refused (False)."""
        store = MemoryReplayStore(max_entries=3)
        sigs = [new_signature() for _ in range(3)]
        for sig in sigs:
            assert await store.first_seen(1, sig, LONG_TTL_MS) is True
        with pytest.raises(ReplayStoreFullError):
            await store.first_seen(1, new_signature(), LONG_TTL_MS)
        assert [await store.first_seen(1, s, LONG_TTL_MS) for s in sigs] == [False] * 3

    async def test_expired_entries_make_room(self) -> None:
        """Once their TTL passed, remembered signatures are dropped and new ones fit."""
        now = [0.0]
        store = MemoryReplayStore(max_entries=2, monotonic_ms=lambda: now[0])
        assert await store.first_seen(1, "a", 10) is True
        assert await store.first_seen(1, "b", 20) is True
        now[0] = 10.0  # "a" expires at 10 (exclusive)
        assert await store.first_seen(1, "c", 10) is True
        assert len(store) == 2
        assert await store.first_seen(1, "b", 20) is False
        now[0] = 20.0
        assert await store.first_seen(1, "b", 20) is True

    async def test_memory_per_entry_is_bounded(self) -> None:
        """An entry (its 64-char signature included) costs under 350 bytes: the documented
        ~80 MB for the default 250,000 entries."""
        store = MemoryReplayStore()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(20_000):
                store.decide(123456, new_signature(), LONG_TTL_MS)
            used = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert used / 20_000 < 350, used / 20_000
