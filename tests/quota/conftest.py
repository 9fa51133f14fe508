"""Fixtures for the quota-counter contract suite: every contract test runs on memory and Redis.

Redis comes from KEYPLANE_TEST_REDIS_URL (tests/_services.py): skipped when it does not answer,
failed under CI=true. Each test uses its own key prefix and deletes its keys afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from keyplane.quota import MemoryQuotaCounter, QuotaCounter, RedisQuotaCounter
from tests._services import redis_url_or_skip
from tests.ratelimit.conftest import delete_keys

BACKENDS = [pytest.param("memory", id="memory"), pytest.param("redis", id="redis")]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """Async tests run on asyncio only (redis.asyncio)."""
    return "asyncio"


def fresh_prefix() -> str:
    """A key prefix no other test (or parallel run) uses."""
    return f"keyplane:test:quota:{uuid.uuid4().hex}:"


@pytest.fixture(params=BACKENDS)
async def counter(request: pytest.FixtureRequest) -> AsyncIterator[QuotaCounter]:
    """An empty quota counter on each backend; closed (and its Redis keys deleted) afterwards."""
    if request.param == "memory":
        memory = MemoryQuotaCounter()
        yield memory
        await memory.close()
        return
    url = redis_url_or_skip()
    prefix = fresh_prefix()
    shared = RedisQuotaCounter.from_url(url, prefix=prefix)
    try:
        yield shared
    finally:
        await shared.close()
        await delete_keys(url, prefix)


@pytest.fixture
async def redis_quota_nodes() -> AsyncIterator[Callable[[], RedisQuotaCounter]]:
    """A factory of RedisQuotaCounter "nodes": separate clients, one Redis, one key prefix."""
    url = redis_url_or_skip()
    prefix = fresh_prefix()
    made: list[RedisQuotaCounter] = []

    def make() -> RedisQuotaCounter:
        node = RedisQuotaCounter.from_url(url, prefix=prefix)
        made.append(node)
        return node

    try:
        yield make
    finally:
        for node in made:
            await node.close()
        await delete_keys(url, prefix)
