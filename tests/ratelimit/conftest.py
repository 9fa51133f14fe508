"""Fixtures for the limiter contract suite: every contract test runs on memory and on Redis.

Redis comes from KEYPLANE_TEST_REDIS_URL (see tests/_services.py): skipped when it does not
answer, failed under CI=true. Each test uses its own random key prefix and deletes its keys
afterwards, so parallel runs on one Redis never collide. `private_redis` starts a throwaway
redis-server on a free port for tests that kill it or count its commands.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from keyplane.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from tests._services import redis_url_or_skip

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


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on (right now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class RedisServer:
    """A redis-server subprocess on a fixed port, without persistence; start() and kill()."""

    def __init__(self, binary: str, port: int, workdir: Path) -> None:
        self.binary = binary
        self.port = port
        self.workdir = workdir
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server and wait until it answers PING."""
        assert self.process is None, "already running"
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(self.workdir)]
        self.process = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=self.workdir
        )
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + _START_TIMEOUT_S
        try:
            while True:
                if self.process.poll() is not None:
                    err = self.process.stderr.read().decode() if self.process.stderr else ""
                    self.process = None
                    raise RuntimeError(f"redis-server on port {self.port} exited: {err}")
                try:
                    client.ping()
                    return
                except redis.exceptions.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL the server (by pid) and reap it."""
        if self.process is None:
            return
        self.process.kill()
        self.process.wait(timeout=_START_TIMEOUT_S)
        if self.process.stderr:
            self.process.stderr.close()
        self.process = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A running throwaway redis-server on a free port; killed afterwards.

    Skips when the redis-server binary is missing, fails instead under CI=true.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        reason = "redis-server binary not found on PATH (needed to start a private Redis)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    server = RedisServer(binary, free_port(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()
