"""A real keyplane server (uvicorn, in-memory store) and a raw WebSocket client for /v5/private
and /v5/trade: tests see exactly the frames a client sees."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from starlette.applications import Starlette
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from keyplane.http.app import create_app
from keyplane.keys import KeyEncryptionKey
from keyplane.service import KeyService
from keyplane.settings import Settings
from keyplane.signing import sign_hmac, ws_string_to_sign
from keyplane.store import MemoryStore
from keyplane.testing import running_server
from tests._keys import KeyIssuer


class FlakyStore(MemoryStore):
    """A store whose key lookups fail while `down` is set, as during a database outage."""

    down = False

    def find_key(self, api_key: str):  # type: ignore[no-untyped-def]
        if self.down:
            raise RuntimeError("database is down")
        return super().find_key(api_key)


@dataclass
class WsServer(KeyIssuer):
    """A running app, its base ws:// URL, the master account and a way to make keys."""

    default_permissions = "Spot:SpotTrade,ContractTrade:Order"

    app: Starlette
    url: str
    http_url: str
    store: FlakyStore
    service: KeyService
    uid: int

    def connect(self, path: str = "/v5/private") -> Client:
        """A raw WebSocket client on path."""
        return Client(connect(self.url + path, open_timeout=5))


class Client:
    """A blocking JSON WebSocket client with timeouts."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    def send(self, message: Any) -> None:
        """Send a JSON value (or a str as is)."""
        self.ws.send(message if isinstance(message, str) else json.dumps(message))

    def recv(self, timeout: float = 2.0) -> dict[str, Any]:
        """The next JSON frame; fails the test after timeout seconds."""
        frame = json.loads(self.ws.recv(timeout=timeout))
        assert isinstance(frame, dict)
        return frame

    def ask(self, message: Any) -> dict[str, Any]:
        """Send and return the reply."""
        self.send(message)
        return self.recv()

    def auth(
        self, api_key: str, secret: str, *, expires: int | str | None = None
    ) -> dict[str, Any]:
        """Send an HMAC auth frame (expires 10 s ahead by default) and return the reply."""
        expires = expires if expires is not None else int(time.time() * 1000) + 10_000
        signature = sign_hmac(secret, ws_string_to_sign(expires))
        return self.ask({"op": "auth", "args": [api_key, expires, signature]})

    def wait_closed(self, within_s: float) -> tuple[int | None, float]:
        """(close code, seconds waited) once the server closes; fails after within_s."""
        started = time.monotonic()
        try:
            while True:
                self.ws.recv(timeout=within_s - (time.monotonic() - started))
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else None
            return code, time.monotonic() - started
        except TimeoutError:
            raise AssertionError(f"connection still open after {within_s} s") from None

    def close(self) -> None:
        self.ws.close()


@pytest.fixture
def make_server() -> Iterator[Callable[..., WsServer]]:
    """Start servers on demand: make_server(**settings_overrides)."""
    stack: list[Any] = []

    def start(**overrides: Any) -> WsServer:
        store = FlakyStore()
        settings = Settings(ip_limit="off", **overrides)
        app = create_app(settings, store=store, kek=KeyEncryptionKey.generate())
        init = app.state.service.initialize()
        assert init is not None
        manager = running_server(app)
        http_url = manager.__enter__()
        stack.append(manager)
        ws_url = http_url.replace("http://", "ws://")
        return WsServer(app, ws_url, http_url, store, app.state.service, init.account.uid)

    yield start
    for manager in reversed(stack):
        manager.__exit__(None, None, None)


@pytest.fixture
def server(make_server: Callable[..., WsServer]) -> WsServer:
    """One server with default settings."""
    return make_server()
