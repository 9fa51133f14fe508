"""Fixtures for the replay-store contract suite: every contract test runs on memory and Redis.

Redis comes from KEYPLANE_TEST_REDIS_URL (see tests/_services.py): skipped when it does not
answer, failed under CI=true. Each test uses its own random key prefix and deletes its keys
afterwards, so parallel runs on one Redis never collide.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from keyplane.replay import MemoryReplayStore, RedisReplayStore, ReplayStore
from tests._services import RedisServer, redis_url_or_skip, started_private_redis
from tests.ratelimit.conftest import delete_keys

BACKENDS = [pytest.param("memory", id="memory"), pytest.param("redis", id="redis")]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """Async tests run on asyncio only (redis.asyncio)."""
    return "asyncio"


def fresh_prefix() -> str:
    """A key prefix no other test (or parallel run) uses."""
    return f"keyplane:test:replay:{uuid.uuid4().hex}:"


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[ReplayStore]:
    """An empty replay store on each backend; closed (and its Redis keys deleted) afterwards."""
    if request.param == "memory":
        memory = MemoryReplayStore()
        yield memory
        await memory.close()
        return
    url = redis_url_or_skip()
    prefix = fresh_prefix()
    shared = RedisReplayStore.from_url(url, prefix=prefix)
    try:
        yield shared
    finally:
        await shared.close()
        await delete_keys(url, prefix)


@pytest.fixture
async def redis_nodes() -> AsyncIterator[Callable[[], RedisReplayStore]]:
    """A factory of RedisReplayStore "nodes": separate clients, one Redis, one key prefix."""
    url = redis_url_or_skip()
    prefix = fresh_prefix()
    made: list[RedisReplayStore] = []

    def make() -> RedisReplayStore:
        node = RedisReplayStore.from_url(url, prefix=prefix)
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
