"""Shared plumbing of the memory-or-Redis contract suites (rate limiter, replay store, quota
counter): each Redis-backed test gets its own key prefix, and every key under it is deleted
afterwards, so parallel runs on one Redis never collide.

    async with backend_under_test("redis", MemoryThing, RedisThing.from_url, "rl") as thing: ...
    async with redis_node_factory(RedisThing.from_url, "rl") as make: a, b = make(), make()
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Protocol, TypeVar

import redis.asyncio as aioredis

from tests._services import redis_url_or_skip

__all__ = ["backend_under_test", "delete_keys", "fresh_prefix", "redis_node_factory"]


class _Closable(Protocol):
    async def close(self) -> None: ...


M = TypeVar("M", bound=_Closable)
R = TypeVar("R", bound=_Closable)


def fresh_prefix(area: str) -> str:
    """A key prefix ("keyplane:test:<area>:<random>:") no other test (or parallel run) uses."""
    return f"keyplane:test:{area}:{uuid.uuid4().hex}:"


async def delete_keys(url: str, prefix: str) -> None:
    """Delete every key under prefix on the Redis at url."""
    client = aioredis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=prefix + "*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@asynccontextmanager
async def backend_under_test(
    backend: str, memory: Callable[[], M], from_url: Callable[..., R], area: str
) -> AsyncIterator[M | R]:
    """memory() for "memory"; for "redis", from_url(url, prefix=<fresh>) on the test Redis
    (skipped, or failed under CI=true, when none answers). Closed, and its keys deleted, after."""
    if backend == "memory":
        made = memory()
        try:
            yield made
        finally:
            await made.close()
        return
    url = redis_url_or_skip()
    prefix = fresh_prefix(area)
    shared = from_url(url, prefix=prefix)
    try:
        yield shared
    finally:
        await shared.close()
        await delete_keys(url, prefix)


@asynccontextmanager
async def redis_node_factory(
    from_url: Callable[..., R], area: str
) -> AsyncIterator[Callable[[], R]]:
    """A factory of "nodes": separate clients (from_url) on one Redis under one key prefix."""
    url = redis_url_or_skip()
    prefix = fresh_prefix(area)
    made: list[R] = []

    def make() -> R:
        node = from_url(url, prefix=prefix)
        made.append(node)
        return node

    try:
        yield make
    finally:
        for node in made:
            await node.close()
        await delete_keys(url, prefix)
