"""The ReplayStore contract: MemoryReplayStore and RedisReplayStore answer alike.

Every test of the Test<Unit> classes below runs once per backend (the `store` fixture), on real
time with short TTLs. TestRedisNodes holds what only a shared Redis has: several nodes, round
trips, outages. TestMemoryBound: the in-memory store's memory rule.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
import tracemalloc
import uuid
from collections.abc import Callable

import pytest
import redis
import redis.asyncio as aioredis

from keyplane.errors import DuplicateRequestError
from keyplane.http.replay import ReplayGuard
from keyplane.keys import KeyType
from keyplane.replay import (
    MemoryReplayStore,
    RedisReplayStore,
    ReplayStore,
    ReplayStoreFullError,
    canonical_signature,
)
from tests._services import RedisServer, free_port
from tests.replay.test_guard import guarded_key

pytestmark = pytest.mark.anyio

#: what the signatures below were sent for (method and path)
REQUEST = "GET /v5/account/wallet-balance"

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
        """The signature is remembered at <prefix><key id>:<hex SHA-256 of it> with the TTL
        given (PX), and nothing else is written under the prefix."""
        node = redis_nodes()
        sig = new_signature()
        await node.first_seen(14, sig, 30_000)
        client = node._client
        key = f"{node.prefix}14:{hashlib.sha256(sig.encode()).hexdigest()}"
        ttl = await client.pttl(key)
        assert 29_000 < ttl <= 30_000
        assert [k async for k in client.scan_iter(match=node.prefix + "*")] == [key.encode()]

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
        """An entry (its 32-byte digest included) costs under 300 bytes: the documented
        ~70 MB for the default 250,000 entries."""
        store = MemoryReplayStore()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(20_000):
                store.decide(123456, new_signature(), LONG_TTL_MS)
            used = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert used / 20_000 < 300, used / 20_000


def _rsa_spellings() -> tuple[str, str]:
    """(canonical, sloppy) base64 of one 256-byte RSA signature: the sloppy form differs in
    the unused trailing bits and verifies all the same (see test_guard)."""
    canonical = base64.b64encode(bytes(range(256))).decode()
    sloppy = canonical[:-3] + chr(ord(canonical[-3]) + 1) + "=="
    assert base64.b64decode(sloppy, validate=True) == base64.b64decode(canonical)
    return canonical, sloppy


def _signature_forms(signature: str, key_type: KeyType) -> list[bytes]:
    """Every form a stored signature could take: as sent, canonical, upper and lower case,
    and its raw bytes (hex or base64 decoded)."""
    canonical = canonical_signature(key_type, signature)
    raw = bytes.fromhex(canonical) if key_type is KeyType.HMAC else base64.b64decode(canonical)
    texts = {signature, canonical, signature.lower(), signature.upper()}
    return [t.encode() for t in texts] + [raw]


async def _offer_through_the_guard(store: ReplayStore) -> list[tuple[int, str, KeyType]]:
    """Accept an HMAC signature (sent in upper case) and an RSA one (sloppy base64) through
    the ReplayGuard, check their other spellings are still refused as replays, and return
    (key id, signature as sent, key type)."""
    guard = ReplayGuard(store)
    hmac_sig = new_signature().upper()
    rsa_canonical, rsa_sloppy = _rsa_spellings()
    offered = [(21, hmac_sig, KeyType.HMAC), (22, rsa_sloppy, KeyType.RSA)]
    for key_id, sig, key_type in offered:
        await guard.check(guarded_key(key_type, key_id), REQUEST, sig, LONG_TTL_MS, write=True)
    with pytest.raises(DuplicateRequestError):
        await guard.check(
            guarded_key(KeyType.HMAC, 21), REQUEST, hmac_sig.lower(), LONG_TTL_MS, write=True
        )
    with pytest.raises(DuplicateRequestError):
        await guard.check(
            guarded_key(KeyType.RSA, 22), REQUEST, rsa_canonical, LONG_TTL_MS, write=True
        )
    return offered


class TestNoSignatureStored:
    """A remembered entry holds the SHA-256 digest of "<request> <canonical signature>", never
    the signature itself in any spelling."""

    async def test_memory_table_holds_digests_only(self) -> None:
        """The in-memory table's entries are (key id, sha256(canonical)); no form of either
        signature occurs in them (nor in their repr)."""
        store = MemoryReplayStore()
        offered = await _offer_through_the_guard(store)
        expected = {
            (key_id, hashlib.sha256(f"{REQUEST} {canonical_signature(kt, sig)}".encode()).digest())
            for key_id, sig, kt in offered
        }
        assert set(store._expires) == expected
        assert {entry for _, entry in store._heap} == expected
        dumped = repr((store._expires, store._heap)).encode()
        for _, sig, key_type in offered:
            for form in _signature_forms(sig, key_type):
                assert form not in dumped
                for _, digest in expected:
                    assert form not in digest

    async def test_redis_keys_and_values_hold_digests_only(
        self, redis_nodes: Callable[[], RedisReplayStore]
    ) -> None:
        """Every key the guard wrote under its prefix is <prefix><id>:<hex sha256(canonical)>
        with the value "1"; no form of either signature occurs in any key or value, and a
        scan of the whole test Redis finds no key containing one."""
        node = redis_nodes()
        offered = await _offer_through_the_guard(node)
        client = node._client
        keys = [k async for k in client.scan_iter(match=node.prefix + "*")]
        expected = {
            f"{node.prefix}{key_id}:"
            + hashlib.sha256(f"{REQUEST} {canonical_signature(kt, sig)}".encode()).hexdigest()
            for key_id, sig, kt in offered
        }
        assert {k.decode() for k in keys} == expected
        written = b"".join([*keys, *[await client.get(k) or b"" for k in keys]])
        assert [await client.get(k) for k in keys] == [b"1", b"1"]
        for _, sig, key_type in offered:
            for form in _signature_forms(sig, key_type):
                assert form not in written
            canonical = canonical_signature(key_type, sig)
            if key_type is KeyType.HMAC:  # base64 has glob characters; hex does not
                assert [k async for k in client.scan_iter(match=f"*{canonical}*")] == []
