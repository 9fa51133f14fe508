"""Helpers for tests that need a real service (PostgreSQL, Redis), importable from any conftest.

    from tests._services import fresh_postgres_schema, postgres_url_or_skip, redis_url_or_skip

The servers come from KEYPLANE_TEST_POSTGRES_URL (default: local trust-auth server, db `test`)
and KEYPLANE_TEST_REDIS_URL (default: local Redis, db 0). When one does not answer the test is
skipped, except under CI=true where it fails: CI must never pass by silently skipping the
PostgreSQL or Redis half of a contract suite.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from sqlalchemy import create_engine, text

from keyplane.store.sql import display_url, normalize_url
from keyplane.testing import postgres_schema

__all__ = [
    "DEFAULT_POSTGRES_URL",
    "DEFAULT_REDIS_URL",
    "PostgresServer",
    "RedisServer",
    "free_port",
    "fresh_postgres_schema",
    "postgres_url_or_skip",
    "redis_url_or_skip",
    "started_private_postgres",
    "started_private_redis",
]

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
_CONNECT_TIMEOUT_S = 3


@functools.cache
def _probe(url: str) -> str | None:
    """None when a connection to url succeeds, else the reason (no password in it)."""
    engine = create_engine(normalize_url(url), connect_args={"connect_timeout": _CONNECT_TIMEOUT_S})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    finally:
        engine.dispose()
    return None


def postgres_url_or_skip() -> str:
    """The test PostgreSQL URL (postgresql+psycopg://...) once it answers.

    Calls pytest.skip when it does not, or pytest.fail when the env var CI is "true".
    """
    url = normalize_url(os.environ.get("KEYPLANE_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL))
    raw = url.render_as_string(hide_password=False)
    problem = _probe(raw)
    if problem is not None:
        reason = (
            f"PostgreSQL at {display_url(url)} is not reachable ({problem}); "
            "set KEYPLANE_TEST_POSTGRES_URL to a server to run these tests"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return raw


def fresh_postgres_schema(url: str) -> AbstractContextManager[str]:
    """A fresh schema kp_test_<random> on url, dropped afterwards (keyplane.testing)."""
    return postgres_schema(url, prefix="kp_test_")


@functools.cache
def _probe_redis(url: str) -> str | None:
    """None when Redis at url answers PING, else the reason (no password in it)."""
    client = redis.Redis.from_url(
        url, socket_connect_timeout=_CONNECT_TIMEOUT_S, socket_timeout=_CONNECT_TIMEOUT_S
    )
    try:
        client.ping()
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    finally:
        client.close()
    return None


def _display_redis_url(url: str) -> str:
    """url with any password masked."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def redis_url_or_skip() -> str:
    """The test Redis URL (redis://...) once it answers PING.

    Calls pytest.skip when it does not, or pytest.fail when the env var CI is "true".
    """
    url = os.environ.get("KEYPLANE_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    problem = _probe_redis(url)
    if problem is not None:
        reason = (
            f"Redis at {_display_redis_url(url)} is not reachable ({problem}); "
            "set KEYPLANE_TEST_REDIS_URL to a server to run these tests"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return url


_START_TIMEOUT_S = 10.0


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


@contextmanager
def started_private_redis(workdir: Path) -> Iterator[RedisServer]:
    """A running throwaway redis-server on a free port; killed afterwards.

    Skips when the redis-server binary is missing, fails instead under CI=true.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        reason = "redis-server binary not found on PATH (needed to start a private Redis)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    server = RedisServer(binary, free_port(), workdir)
    server.start()
    try:
        yield server
    finally:
        server.kill()


class PostgresServer:
    """A throwaway PostgreSQL cluster (initdb in its own directory, trust auth, fsync off) on a
    fixed port, that a test can crash (immediate shutdown: every connection dropped, no
    checkpoint, recovery on the next start) and start again. As root, the server programs run
    as the `postgres` user (PostgreSQL refuses to run as root)."""

    def __init__(self, bindir: Path, port: int) -> None:
        self.bindir = bindir
        self.port = port
        self.datadir = Path(tempfile.mkdtemp(prefix="keyplane-pg-"))
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.datadir, "postgres", "postgres")

    def _run(self, program: str, *args: str) -> None:
        argv = [str(self.bindir / program), *args]
        if self._as_postgres:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        subprocess.run(argv, check=True, capture_output=True, timeout=60)

    def init(self) -> None:
        """initdb: superuser postgres, trust auth."""
        self._run("initdb", "-D", str(self.datadir / "data"), "-U", "postgres", "-A", "trust",
                  "--no-sync", "-E", "UTF8")  # fmt: skip

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.datadir} -c fsync=off "
            "-c full_page_writes=off"
        )
        self._run("pg_ctl", "-D", str(self.datadir / "data"), "-o", options,
                  "-l", str(self.datadir / "server.log"), "-w", "-t", "30", "start")  # fmt: skip

    def crash(self) -> None:
        """Stop the server the hard way (pg_ctl stop -m immediate: SIGQUIT, no checkpoint)."""
        self._run("pg_ctl", "-D", str(self.datadir / "data"), "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        """Stop (if running) and delete the cluster."""
        with contextlib.suppress(subprocess.CalledProcessError):
            self.crash()
        shutil.rmtree(self.datadir, ignore_errors=True)


def _postgres_bindir() -> Path | None:
    try:
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True)
        candidates = [Path(out.stdout.strip())]
    except (OSError, subprocess.CalledProcessError):
        candidates = []
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for bindir in candidates:
        if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists():
            return bindir
    return None


@contextmanager
def started_private_postgres() -> Iterator[PostgresServer]:
    """A running throwaway PostgreSQL cluster on a free port; removed afterwards.

    Skips when initdb/pg_ctl are missing (or cannot run), fails instead under CI=true.
    """
    bindir = _postgres_bindir()
    reason = ""
    if bindir is None:
        reason = "PostgreSQL server programs (initdb, pg_ctl) not found"
    server = None
    if bindir is not None:
        server = PostgresServer(bindir, free_port())
        try:
            server.init()
            server.start()
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", b"") or b""
            reason = f"cannot start a private PostgreSQL: {exc} {detail.decode(errors='replace')}"
            server.remove()
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    assert server is not None
    try:
        yield server
    finally:
        server.remove()
