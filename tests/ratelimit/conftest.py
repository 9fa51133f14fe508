"""Fixtures for the limiter contract suite: every contract test runs on memory and on Redis.

Redis comes from KEYPLANE_TEST_REDIS_URL (see tests/_services.py): skipped when it does not
answer, failed under CI=true. Each test uses its own random key prefix and deletes its keys
afterwards, so parallel runs on one Redis never collide. `private_redis` starts a throwaway
redis-server on a free port for tests that kill it or count its commands.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from keyplane.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from tests._redis_backends import backend_under_test, redis_node_factory
from tests._services import RedisServer, redis_url_or_skip, started_private_redis

BACKENDS = [pytest.param("memory", id="memory"), pytest.param("redis", id="redis")]

_START_TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """Async tests run on asyncio only (redis.asyncio)."""
    return "asyncio"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The backend name; for redis, skips (or fails under CI=true) when no server answers."""
    name: str = request.param
    if name == "redis":
        redis_url_or_skip()
    return name


@pytest.fixture
async def limiter(backend: str) -> AsyncIterator[RateLimiter]:
    """An empty limiter on each backend; closed (and its Redis keys deleted) afterwards."""
    async with backend_under_test(
        backend, MemoryRateLimiter, RedisRateLimiter.from_url, "rl"
    ) as made:
        yield made


@pytest.fixture
async def redis_nodes() -> AsyncIterator[Callable[[], RedisRateLimiter]]:
    """A factory of RedisRateLimiter "nodes": separate clients, one Redis, one key prefix."""
    async with redis_node_factory(RedisRateLimiter.from_url, "rl") as make:
        yield make


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A running throwaway redis-server on a free port; killed afterwards (see tests._services)."""
    with started_private_redis(tmp_path) as server:
        yield server
