"""Fixtures for the limiter contract suite: every contract test runs on memory and on Redis.

Redis comes from KEYPLANE_TEST_REDIS_URL (see tests/_services.py): skipped when it does not
answer, failed under CI=true. Each test uses its own random key prefix and deletes its keys
afterwards, so parallel runs on one Redis never collide. `private_redis` starts a throwaway
redis-server on a free port for tests that kill it or count its commands.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from keyplane.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from tests._services import RedisServer, redis_url_or_skip, started_private_redis

BACKENDS = [pytest.param("memory", id="memory"), pytest.param("redis", id="redis")]

_START_TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """Async tests run on asyncio only (redis.asyncio)."""
    return "asyncio"


def fresh_prefix() -> str:
    """A key prefix no other test (or parallel run) uses."""
    return f"keyplane:test:rl:{uuid.uuid4().hex}:"


async def delete_keys(url: str, prefix: str) -> None:
    """Delete every key under prefix on the Redis at url."""
    client = aioredis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=prefix + "*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


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
    if backend == "memory":
        memory = MemoryRateLimiter()
        yield memory
        await memory.close()
        return
    url = redis_url_or_skip()
    prefix = fresh_prefix()
    shared = RedisRateLimiter.from_url(url, prefix=prefix)
    try:
        yield shared
    finally:
        await shared.close()
        await delete_keys(url, prefix)


@pytest.fixture
async def redis_nodes() -> AsyncIterator[Callable[[], RedisRateLimiter]]:
    """A factory of RedisRateLimiter "nodes": separate clients, one Redis, one key prefix."""
    url = redis_url_or_skip()
    prefix = fresh_prefix()
    made: list[RedisRateLimiter] = []

    def make() -> RedisRateLimiter:
        node = RedisRateLimiter.from_url(url, prefix=prefix)
        made.append(node)
        return node

    try:
        yield make
    finally:
        for node in made:
            await node.close()
        await delete_keys(url, prefix)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A running throwaway redis-server on a free port; killed afterwards (see tests._services)."""
    with started_private_redis(tmp_path) as server:
        yield server
