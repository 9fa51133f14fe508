"""Public test helpers: a frozen clock, an in-memory store, and a started server.

with running_server(create_app(settings)) as url:
    session = HTTP(api_key=..., api_secret=...); session.endpoint = url
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from starlette.types import ASGIApp

from keyplane.clock import FrozenClock
from keyplane.http.server import uvicorn_config
from keyplane.store.memory import MemoryStore

__all__ = ["FrozenClock", "MemoryStore", "free_port", "running_server"]


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
