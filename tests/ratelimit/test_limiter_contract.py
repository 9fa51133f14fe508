"""The RateLimiter contract: MemoryRateLimiter and RedisRateLimiter both decide like gcra().

Every test of the Test<Unit> classes below runs once per backend (the `limiter` fixture); the
hypothesis test folds gcra() over random request sequences and demands the same decisions from
each backend, so memory and Redis agree with the spec and with each other. TestRedisNodes holds
what only a shared Redis has: several nodes, round trips, outages.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import pytest
import redis
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyplane.ratelimit import Decision, Rate, RateLimiter, RedisRateLimiter, gcra
from keyplane.ratelimit.redis import DEFAULT_EXPIRY_GRACE_MS
from tests._services import RedisServer, free_port, redis_url_or_skip

pytestmark = pytest.mark.anyio

NOW = 1_700_000_000_000  # a frozen clock, ms since epoch

# Budgets whose emission interval T is a whole number of ms (Bybit's per-key defaults are all
# like this); see test_gcra.py TestFloatDrift for budgets where gcra() itself loses a request.
WHOLE_T_RATES = [
    pytest.param(Rate(1), id="1/s"),
    pytest.param(Rate(5), id="5/s"),
    pytest.param(Rate(10), id="10/s"),
    pytest.param(Rate(20), id="20/s"),
    pytest.param(Rate(50), id="50/s"),
    pytest.param(Rate(60, 60_000), id="60/min"),
    pytest.param(Rate(2, 10), id="2/10ms"),
]


def new_bucket() -> str:
    """A bucket name no other test or example uses."""
    return f"key:{uuid.uuid4().hex}:/v5/order/create:spot"


async def burst(
    limiter: RateLimiter, bucket: str, rate: Rate, count: int, now: int
) -> list[Decision]:
    """count hits on bucket at the same instant now."""
    return [await limiter.hit(bucket, rate, now) for _ in range(count)]


class TestBurst:
    """An idle bucket takes a burst of exactly `limit`, then refuses."""

    @pytest.mark.parametrize("rate", WHOLE_T_RATES)
    async def test_exactly_limit_allowed_then_refused(
        self, limiter: RateLimiter, rate: Rate
    ) -> None:
        """limit hits at one instant pass, the next ones are refused."""
        decisions = await burst(limiter, new_bucket(), rate, rate.limit + 3, NOW)
        assert [d.allowed for d in decisions] == [True] * rate.limit + [False] * 3

    @pytest.mark.parametrize("rate", WHOLE_T_RATES)
    async def test_remaining_counts_down_to_zero(self, limiter: RateLimiter, rate: Rate) -> None:
        """remaining goes limit-1, limit-2, ..., 0 and stays 0 when refused."""
        decisions = await burst(limiter, new_bucket(), rate, rate.limit + 2, NOW)
        assert [d.remaining for d in decisions] == [*range(rate.limit - 1, -1, -1), 0, 0]

    async def test_allowed_decision_reports_limit_and_now(self, limiter: RateLimiter) -> None:
        """An allowed decision carries the budget and reset_at == now."""
        decision = await limiter.hit(new_bucket(), Rate(10), NOW)
        assert decision == Decision(True, 10, 9, NOW)


class TestReset:
    """A refusal says when the next request will pass, and that is true."""

    @pytest.mark.parametrize(
        "rate",
        [Rate(10), Rate(3, 1000), Rate(7, 1000), Rate(60, 60_000), Rate(600, 5000)],
        ids=["10/s", "3/s", "7/s", "60/min", "600/5s"],
    )
    async def test_refusal_reset_is_future_and_exact(
        self, limiter: RateLimiter, rate: Rate
    ) -> None:
        """reset_at_ms > now; refused 1 ms before it, allowed at it."""
        bucket = new_bucket()
        refused = None
        for _ in range(rate.limit + 1):
            decision = await limiter.hit(bucket, rate, NOW)
            if not decision.allowed:
                refused = decision
                break
        assert refused is not None
        assert refused.reset_at_ms > NOW
        assert refused.remaining == 0
        if refused.reset_at_ms - 1 > NOW:
            assert not (await limiter.hit(bucket, rate, refused.reset_at_ms - 1)).allowed
        assert (await limiter.hit(bucket, rate, refused.reset_at_ms)).allowed


class TestSteadyRate:
    """Requests spaced by exactly T = window / limit always pass."""

    @pytest.mark.parametrize("rate", WHOLE_T_RATES)
    async def test_spacing_t_from_idle_always_allowed(
        self, limiter: RateLimiter, rate: Rate
    ) -> None:
        """From idle, every T ms: allowed with the full remaining each time."""
        bucket = new_bucket()
        step = int(rate.interval_ms)
        for k in range(3 * rate.limit + 5):
            decision = await limiter.hit(bucket, rate, NOW + k * step)
            assert decision.allowed, k
            assert decision.remaining == rate.limit - 1, k

    @pytest.mark.parametrize("rate", WHOLE_T_RATES)
    async def test_spacing_t_after_burst_allowed_and_not_sooner(
        self, limiter: RateLimiter, rate: Rate
    ) -> None:
        """After a full burst, one request per T passes; one 1 ms early does not."""
        bucket = new_bucket()
        await burst(limiter, bucket, rate, rate.limit, NOW)
        step = int(rate.interval_ms)
        for k in range(1, 2 * rate.limit + 2):
            early = await limiter.hit(bucket, rate, NOW + k * step - 1)
            assert not early.allowed, k
            assert early.reset_at_ms == NOW + k * step, k
            on_time = await limiter.hit(bucket, rate, NOW + k * step)
            assert on_time.allowed, k
            assert on_time.remaining == 0, k


class TestBuckets:
    """Buckets never share budget."""

    async def test_exhausted_bucket_leaves_others_untouched(self, limiter: RateLimiter) -> None:
        """Emptying bucket a leaves bucket b a full burst, and a stays empty."""
        rate = Rate(5)
        a, b = new_bucket(), new_bucket()
        await burst(limiter, a, rate, 5, NOW)
        assert not (await limiter.hit(a, rate, NOW)).allowed
        assert [d.allowed for d in await burst(limiter, b, rate, 6, NOW)] == [True] * 5 + [False]
        assert not (await limiter.hit(a, rate, NOW)).allowed

    async def test_same_bucket_name_with_another_rate_is_one_bucket(
        self, limiter: RateLimiter
    ) -> None:
        """The bucket name is the identity; callers put the route in it."""
        bucket = new_bucket()
        await burst(limiter, bucket, Rate(5), 5, NOW)
        assert (await limiter.hit(bucket, Rate(5), NOW)).allowed is False


class TestMinuteBudget:
    """60 per minute (window 60000): burst 60, then one per second."""

    async def test_sixty_per_minute(self, limiter: RateLimiter) -> None:
        """60 pass at once, the 61st waits 1 s, then 1/s; a quiet minute refills."""
        rate, bucket = Rate(60, 60_000), new_bucket()
        decisions = await burst(limiter, bucket, rate, 60, NOW)
        assert all(d.allowed for d in decisions)
        assert decisions[-1].remaining == 0
        refused = await limiter.hit(bucket, rate, NOW + 500)
        assert refused == Decision(False, 60, 0, NOW + 1000)
        assert await limiter.hit(bucket, rate, NOW + 1000) == Decision(True, 60, 0, NOW + 1000)
        assert not (await limiter.hit(bucket, rate, NOW + 1999)).allowed
        assert (await limiter.hit(bucket, rate, NOW + 2000)).allowed
        # the last TAT is NOW + 62000: from then on the bucket is idle again
        later = NOW + 62_000
        again = await burst(limiter, bucket, rate, 61, later)
        assert [d.remaining for d in again[:60]] == list(range(59, -1, -1))
        assert not again[60].allowed


class TestRefusedHits:
    """A refused request costs nothing."""

    async def test_hammering_while_refused_does_not_delay_reset(self, limiter: RateLimiter) -> None:
        """Refused hits keep the same reset_at, and the request at reset_at passes."""
        rate, bucket = Rate(5), new_bucket()
        await burst(limiter, bucket, rate, 5, NOW)
        first = await limiter.hit(bucket, rate, NOW)
        assert first == Decision(False, 5, 0, NOW + 200)
        for t in range(NOW, NOW + 200, 3):
            assert await limiter.hit(bucket, rate, t) == first
        assert (await limiter.hit(bucket, rate, NOW + 200)).allowed
        assert not (await limiter.hit(bucket, rate, NOW + 200)).allowed

    async def test_refused_hits_leave_same_state_as_none(self, limiter: RateLimiter) -> None:
        """A bucket hammered while empty behaves later like one left alone."""
        rate, hammered, quiet = Rate(10), new_bucket(), new_bucket()
        for bucket in (hammered, quiet):
            await burst(limiter, bucket, rate, 10, NOW)
        await burst(limiter, hammered, rate, 50, NOW + 50)
        for t in (NOW + 99, NOW + 100, NOW + 150, NOW + 400, NOW + 2000):
            assert await limiter.hit(hammered, rate, t) == await limiter.hit(quiet, rate, t)


# Small budgets including awkward ones (T not a whole ms, window not a multiple of limit).
rates = st.builds(
    Rate,
    limit=st.integers(min_value=1, max_value=30),
    window_ms=st.one_of(
        st.sampled_from([1, 7, 100, 333, 1000, 1001, 5000, 60_000]),
        st.integers(min_value=1, max_value=5000),
    ),
)


class TestMatchesGcra:
    """Each backend's decisions equal gcra() folded over the same requests."""

    @settings(
        max_examples=80,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(
        rate=rates,
        start=st.integers(min_value=0, max_value=2_000_000_000_000),
        offsets=st.lists(st.integers(min_value=0, max_value=6000), min_size=1, max_size=40),
    )
    async def test_random_sequence_equals_gcra_fold(
        self, limiter: RateLimiter, rate: Rate, start: int, offsets: list[int]
    ) -> None:
        """Sorted random request times on a frozen clock: same decisions as the spec."""
        bucket, tat = new_bucket(), None
        for offset in sorted(offsets):
            now = start + offset
            expected, new_tat = gcra(tat, rate, now)
            if new_tat is not None:
                tat = new_tat
            assert await limiter.hit(bucket, rate, now) == expected, (rate, now)


async def command_calls(client: aioredis.Redis) -> dict[str, int]:
    """{command: calls} from INFO commandstats."""
    stats = await client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


class TestRedisNodes:
    """Redis only: nodes share one budget, one round trip per hit, outages raise and heal."""

    async def test_two_nodes_share_one_budget(
        self, redis_nodes: Callable[[], RedisRateLimiter]
    ) -> None:
        """Alternating hits from two nodes get `limit` passes in total, not twice that."""
        a, b = redis_nodes(), redis_nodes()
        rate, bucket = Rate(10), new_bucket()
        decisions = [await node.hit(bucket, rate, NOW) for _ in range(10) for node in (a, b)]
        assert sum(d.allowed for d in decisions) == 10
        assert [d.allowed for d in decisions[:10]] == [True] * 10

    async def test_concurrent_nodes_never_overshoot(
        self, redis_nodes: Callable[[], RedisRateLimiter]
    ) -> None:
        """60 concurrent hits from three nodes on a budget of 20: exactly 20 pass."""
        nodes = [redis_nodes() for _ in range(3)]
        rate, bucket = Rate(20), new_bucket()
        decisions = await asyncio.gather(*(nodes[i % 3].hit(bucket, rate, NOW) for i in range(60)))
        assert sum(d.allowed for d in decisions) == 20
        assert sorted(d.remaining for d in decisions if d.allowed) == list(range(20))

    async def test_one_round_trip_per_hit(
        self, redis_nodes: Callable[[], RedisRateLimiter]
    ) -> None:
        """round_trips grows by exactly one per hit, allowed or refused."""
        node = redis_nodes()
        await node.hit(new_bucket(), Rate(1), NOW)  # the script is cached from here on
        before = node.round_trips
        bucket = new_bucket()
        for i in range(25):
            await node.hit(bucket, Rate(10), NOW + i)
        assert node.round_trips - before == 25

    async def test_concurrent_hits_share_round_trips_and_decide_alike(
        self, redis_nodes: Callable[[], RedisRateLimiter]
    ) -> None:
        """100 hits at once from one node travel in a few round trips (one script call each,
        never more than one per hit), and decide exactly as gcra() in arrival order."""
        node = redis_nodes()
        await node.hit(new_bucket(), Rate(1), NOW)
        before = node.round_trips
        bucket, rate = new_bucket(), Rate(30)
        decisions = await asyncio.gather(*(node.hit(bucket, rate, NOW) for _ in range(100)))
        trips = node.round_trips - before
        assert 1 <= trips < 100
        expected, tat = [], None
        for _ in range(100):
            decision, new_tat = gcra(tat, rate, NOW)
            tat = new_tat if new_tat is not None else tat
            expected.append(decision)
        assert list(decisions) == expected

    async def test_lost_script_inside_a_batch_is_reloaded(self, private_redis: RedisServer) -> None:
        """After SCRIPT FLUSH, a batch of concurrent hits still decides: the batch's EVALSHA
        answered NOSCRIPT, one EVAL for the same hits."""
        node = RedisRateLimiter.from_url(private_redis.url)
        admin = aioredis.from_url(private_redis.url)
        try:
            await node.hit(new_bucket(), Rate(1), NOW)
            await admin.script_flush()
            bucket, rate = new_bucket(), Rate(5)
            decisions = await asyncio.gather(*(node.hit(bucket, rate, NOW) for _ in range(8)))
            assert [d.allowed for d in decisions] == [True] * 5 + [False] * 3
        finally:
            await node.close()
            await admin.aclose()

    async def test_one_command_per_hit_on_the_server(self, private_redis: RedisServer) -> None:
        """Redis itself sees one EVALSHA per hit and no other client command."""
        node = RedisRateLimiter.from_url(private_redis.url)
        observer = aioredis.from_url(private_redis.url)
        try:
            await node.hit(new_bucket(), Rate(1), NOW)
            before = await command_calls(observer)
            bucket = new_bucket()
            for i in range(30):
                await node.hit(bucket, Rate(10), NOW + i)
            after = await command_calls(observer)
        finally:
            await node.close()
            await observer.aclose()
        delta = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
        delta.pop("info", None)
        # commandstats also counts the GET/SET the script runs inside Redis; they are no trips
        assert delta.pop("evalsha") == 30
        assert delta.pop("get") == 30
        assert set(delta) <= {"set"}

    async def test_lost_script_is_reloaded(self, private_redis: RedisServer) -> None:
        """After SCRIPT FLUSH the next hit still decides (EVALSHA, then EVAL: two trips)."""
        node = RedisRateLimiter.from_url(private_redis.url)
        admin = aioredis.from_url(private_redis.url)
        try:
            bucket, rate = new_bucket(), Rate(2)
            assert (await node.hit(bucket, rate, NOW)).allowed
            await admin.script_flush()
            before = node.round_trips
            assert await node.hit(bucket, rate, NOW) == Decision(True, 2, 0, NOW)
            assert node.round_trips - before == 2
            assert not (await node.hit(bucket, rate, NOW)).allowed
            assert node.round_trips - before == 3
        finally:
            await node.close()
            await admin.aclose()

    async def test_bucket_key_holds_tat_and_expires(
        self, redis_nodes: Callable[[], RedisRateLimiter]
    ) -> None:
        """prefix+bucket holds the TAT as a decimal string with a TTL of at most window+grace."""
        node = redis_nodes()
        rate, bucket = Rate(3, 1000), new_bucket()
        await burst(node, bucket, rate, 2, NOW)
        _, tat = gcra(None, rate, NOW)
        _, tat = gcra(tat, rate, NOW)
        inspector = aioredis.from_url(redis_url_or_skip())
        try:
            raw = await inspector.get(node.prefix + bucket)
            ttl = await inspector.pttl(node.prefix + bucket)
        finally:
            await inspector.aclose()
        assert raw is not None
        assert float(raw) == tat
        assert 0 < ttl <= 667 + DEFAULT_EXPIRY_GRACE_MS

    async def test_unreachable_redis_raises_connection_error_quickly(self) -> None:
        """A closed port: hit raises redis ConnectionError within about a second."""
        node = RedisRateLimiter.from_url(
            f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2
        )
        started = time.monotonic()
        try:
            with pytest.raises(redis.exceptions.ConnectionError):
                await node.hit(new_bucket(), Rate(10), NOW)
        finally:
            await node.close()
        assert time.monotonic() - started < 2.0

    async def test_recovers_after_redis_restart(self, private_redis: RedisServer) -> None:
        """Same limiter object: OK, Redis killed -> raises, Redis back -> OK again."""
        node = RedisRateLimiter.from_url(private_redis.url)
        bucket, rate = new_bucket(), Rate(10)
        try:
            assert (await node.hit(bucket, rate, NOW)).allowed
            private_redis.kill()
            started = time.monotonic()
            with pytest.raises(redis.exceptions.ConnectionError):
                await node.hit(bucket, rate, NOW + 1)
            assert time.monotonic() - started < 2.0
            private_redis.start()
            # the restarted server is empty (no persistence) and has no cached script
            assert await node.hit(bucket, rate, NOW + 2) == Decision(True, 10, 9, NOW + 2)
            assert (await node.hit(bucket, rate, NOW + 3)).remaining == 8
        finally:
            await node.close()
