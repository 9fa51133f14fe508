"""Public test helpers: a frozen clock, an in-memory store, and a started server.

with running_server(create_app(settings)) as url:
    session = HTTP(api_key=..., api_secret=...); session.endpoint = url

with node_process(["--db", pg_url, "--redis", redis_url], env={"KEYPLANE_KEK": kek}) as node:
    ...  # a `keyplane serve` subprocess, ready (GET /readyz == 200) at node.url
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

import httpx
import uvicorn
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from starlette.types import ASGIApp

from keyplane.clock import FrozenClock
from keyplane.http.server import uvicorn_config
from keyplane.store.memory import MemoryStore
from keyplane.store.sql import normalize_url

__all__ = [
    "FrozenClock",
    "MemoryStore",
    "NodeProcess",
    "free_port",
    "node_process",
    "postgres_schema",
    "running_server",
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def running_server(app: ASGIApp, *, port: int | None = None) -> Iterator[str]:
    """Serve app with uvicorn on 127.0.0.1 in a background thread; yields "http://127.0.0.1:P".

    Raises RuntimeError when the server does not start within 10 s. Stops it (lifespan
    shutdown included) on exit.
    """
    port = port or free_port()
    server = uvicorn.Server(uvicorn_config(app, host="127.0.0.1", port=port))
    thread = threading.Thread(target=server.run, name=f"keyplane-test-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@dataclass
class NodeProcess:
    """A `keyplane serve` subprocess: url "http://127.0.0.1:P", its Popen, and the temporary
    file its stderr goes to (a file, not a pipe: a node logging through a long outage must
    never block on a full pipe)."""

    url: str
    process: subprocess.Popen[str]
    stderr_file: IO[str] | None = None

    def stop(self, timeout_s: float = 30) -> tuple[int, str]:
        """SIGTERM (graceful shutdown), wait; returns (exit code, stderr so far)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=timeout_s)
        return self.process.returncode, self.stderr()

    def stderr(self) -> str:
        """What the node wrote to stderr so far."""
        if self.stderr_file is None:
            return ""
        self.stderr_file.seek(0)
        return self.stderr_file.read()


@contextmanager
def node_process(
    serve_args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    port: int | None = None,
    ready_timeout_s: float = 30,
) -> Iterator[NodeProcess]:
    """Run `python -m keyplane serve --port P <serve_args>` until GET /readyz answers 200.

    env is added to this process's environment. Raises RuntimeError (with the node's stderr)
    when it exits or is not ready in ready_timeout_s. Stops it with SIGTERM on exit.
    """
    port = port or free_port()
    log = tempfile.TemporaryFile(mode="w+", encoding="utf-8")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(  # noqa: S603 (our own interpreter and CLI)
        [sys.executable, "-m", "keyplane", "serve", "--port", str(port), *serve_args],
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=log,
        text=True,
    )
    node = NodeProcess(f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"keyplane serve exited: {node.stop()[1]}")
            try:
                if httpx.get(f"{node.url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("keyplane serve was not ready in time")
            time.sleep(0.05)
        yield node
    finally:
        if process.poll() is None:
            node.stop()
        log.close()


@contextmanager
def postgres_schema(url: str, *, prefix: str = "kp_test_") -> Iterator[str]:
    """Create schema <prefix><random>, yield a URL whose connections use it, then drop it.

    url: a PostgreSQL SQLAlchemy URL. The yielded URL sets `options=-csearch_path=<schema>`,
    so unqualified tables (and Alembic's alembic_version) live in the fresh schema; parallel
    runs never share tables. The schema is dropped (CASCADE) on exit, also after an error.
    """
    schema = f"{prefix}{uuid.uuid4().hex[:12]}"
    admin = create_engine(normalize_url(url), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        parsed = make_url(url)
        options = f"{parsed.query.get('options', '')} -csearch_path={schema}".strip()
        scoped = parsed.update_query_dict({"options": options})
        try:
            yield scoped.render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        admin.dispose()
