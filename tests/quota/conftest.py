"""Fixtures for the quota-counter contract suite: every contract test runs on memory and Redis.

Redis comes from KEYPLANE_TEST_REDIS_URL (tests/_services.py): skipped when it does not answer,
failed under CI=true. Each test uses its own key prefix and deletes its keys afterwards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from keyplane.quota import MemoryQuotaCounter, QuotaCounter, RedisQuotaCounter
from tests._redis_backends import backend_under_test, redis_node_factory

BACKENDS = [pytest.param("memory", id="memory"), pytest.param("redis", id="redis")]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """Async tests run on asyncio only (redis.asyncio)."""
    return "asyncio"


@pytest.fixture(params=BACKENDS)
async def counter(request: pytest.FixtureRequest) -> AsyncIterator[QuotaCounter]:
    """An empty quota counter on each backend; closed (and its Redis keys deleted) afterwards."""
    async with backend_under_test(
        request.param, MemoryQuotaCounter, RedisQuotaCounter.from_url, "quota"
    ) as made:
        yield made


@pytest.fixture
async def redis_quota_nodes() -> AsyncIterator[Callable[[], RedisQuotaCounter]]:
    """A factory of RedisQuotaCounter "nodes": separate clients, one Redis, one key prefix."""
    async with redis_node_factory(RedisQuotaCounter.from_url, "quota") as make:
        yield make
