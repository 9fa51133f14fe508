"""Fixtures for the replay-store contract suite: every contract test runs on memory and Redis.

Redis comes from KEYPLANE_TEST_REDIS_URL (see tests/_services.py): skipped when it does not
answer, failed under CI=true. Each test uses its own random key prefix and deletes its keys
afterwards, so parallel runs on one Redis never collide.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from keyplane.replay import MemoryReplayStore, RedisReplayStore, ReplayStore
from tests._redis_backends import backend_under_test, redis_node_factory
from tests._services import RedisServer, started_private_redis

BACKENDS = [pytest.param("memory", id="memory"), pytest.param("redis", id="redis")]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """Async tests run on asyncio only (redis.asyncio)."""
    return "asyncio"


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[ReplayStore]:
    """An empty replay store on each backend; closed (and its Redis keys deleted) afterwards."""
    async with backend_under_test(
        request.param, MemoryReplayStore, RedisReplayStore.from_url, "replay"
    ) as made:
        yield made


@pytest.fixture
async def redis_nodes() -> AsyncIterator[Callable[[], RedisReplayStore]]:
    """A factory of RedisReplayStore "nodes": separate clients, one Redis, one key prefix."""
    async with redis_node_factory(RedisReplayStore.from_url, "replay") as make:
        yield make


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A running throwaway redis-server on a free port; killed afterwards (see tests._services)."""
    with started_private_redis(tmp_path) as server:
        yield server
