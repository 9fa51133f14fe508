"""A real gateway (keyplane on uvicorn, SQLite file) in front of a tiny real upstream.

The upstream is a Starlette app served by running_server that records every request it got
(method, path, raw query, body bytes, headers) and answers it with a V5 envelope echoing them,
so tests see exactly what crossed the gateway.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keyplane.clock import SystemClock
from keyplane.http.app import create_app
from keyplane.keys import IpAllowlist, KeyEncryptionKey, Permissions
from keyplane.secret import Secret
from keyplane.service import KeyService
from keyplane.settings import Settings
from keyplane.signing import sign_hmac, string_to_sign
from keyplane.store import SqlStore, open_store
from keyplane.testing import running_server

UPSTREAM_KEY = "UPSTREAMKEY0000001"
UPSTREAM_SECRET = "upstream-secret-NEVER-SHOWN-0123456789"


@dataclass
class Seen:
    """One request as the upstream received it."""

    method: str
    path: str
    query: bytes
    body: bytes
    headers: list[tuple[str, str]]

    def header(self, name: str) -> str | None:
        values = [v for n, v in self.headers if n == name.lower()]
        assert len(values) <= 1, f"{name} sent {len(values)} times"
        return values[0] if values else None

    def names(self) -> set[str]:
        return {n for n, _ in self.headers}


@dataclass
class EchoUpstream:
    """The upstream's record of requests, and knobs for its next answers."""

    seen: list[Seen] = field(default_factory=list)
    extra_headers: dict[str, str] = field(default_factory=dict)
    status: int = 200
    raw_body: bytes | None = None  # answer these bytes instead of the echo envelope
    delay_s: float = 0.0

    def app(self) -> Starlette:
        async def echo(request: Request) -> Response:
            seen = Seen(
                method=request.method,
                path=request.url.path,
                query=request.scope["query_string"],
                body=await request.body(),
                headers=[
                    (n.decode("latin-1"), v.decode("latin-1")) for n, v in request.scope["headers"]
                ],
            )
            self.seen.append(seen)
            if self.delay_s:
                await anyio.sleep(self.delay_s)
            body = self.raw_body
            if body is None:
                result = {"method": seen.method, "path": seen.path}
                envelope = {"retCode": 0, "retMsg": "OK", "result": result, "time": 1}
                body = json.dumps(envelope).encode()
            return Response(body, status_code=self.status, headers=self.extra_headers)

        return Starlette(routes=[Route("/{path:path}", echo, methods=["GET", "POST"])])


@dataclass
class Gateway:
    """A running gateway: its URL, store, KEK and the first master key."""

    url: str
    db_url: str
    store: SqlStore
    kek: KeyEncryptionKey
    service: KeyService
    api_key: str
    secret: str
    uid: int

    def new_key(self, *, permissions: str, read_only: bool = False) -> tuple[str, str]:
        issued = self.service.create_key(
            self.uid,
            permissions=Permissions.parse(permissions),
            read_only=read_only,
            ips=IpAllowlist.parse("*"),
        )
        assert issued.secret is not None
        return issued.key.api_key, issued.secret.reveal()


@contextmanager
def gateway_on(
    tmp_path: Path,
    upstream_url: str,
    *,
    kind: str = "generic",
    timeout_s: float = 5.0,
    max_response_bytes: int | None = None,
    before_start: Callable[[SqlStore, KeyEncryptionKey], None] | None = None,
) -> Iterator[Gateway]:
    """Start keyplane in gateway mode on a fresh SQLite database under tmp_path
    (max_response_bytes None: the default cap)."""
    db_url = f"sqlite:///{tmp_path / 'gateway.db'}"
    kek = KeyEncryptionKey.generate()
    store = open_store(db_url)
    service = KeyService(store, kek, SystemClock())
    init = service.initialize()
    assert init is not None
    assert init.issued.secret is not None
    if before_start is not None:
        before_start(store, kek)
    cap = {} if max_response_bytes is None else {"gateway_max_response_bytes": max_response_bytes}
    settings = Settings(
        **cap,
        database_url=db_url,
        kek=kek.to_base64().reveal(),
        upstream_url=upstream_url,
        upstream_kind=kind,
        upstream_timeout_s=timeout_s,
        cache_poll_ms=50,
    )
    try:
        with running_server(create_app(settings)) as url:
            yield Gateway(
                url=url,
                db_url=db_url,
                store=store,
                kek=kek,
                service=service,
                api_key=init.issued.key.api_key,
                secret=init.issued.secret.reveal(),
                uid=init.account.uid,
            )
    finally:
        store.close()


@pytest.fixture
def echo() -> Iterator[tuple[EchoUpstream, str]]:
    """(the echo upstream's record, its URL)."""
    upstream = EchoUpstream()
    with running_server(upstream.app()) as url:
        yield upstream, url


def signed_headers(
    api_key: str, secret: str, payload: bytes, *, recv_window: str | None = "5000"
) -> dict[str, str]:
    """Bybit V5 auth headers for payload, as pybit builds them (recv_window None: omitted)."""
    timestamp = str(int(time.time() * 1000))
    message = string_to_sign(timestamp, api_key, recv_window or "", payload)
    headers = {
        "X-BAPI-API-KEY": api_key,
        "X-BAPI-TIMESTAMP": timestamp,
        "X-BAPI-SIGN": sign_hmac(Secret(secret), message),
        "X-BAPI-SIGN-TYPE": "2",
    }
    if recv_window is not None:
        headers["X-BAPI-RECV-WINDOW"] = recv_window
    return headers


def signed_get(
    url: str,
    path: str,
    query: str,
    api_key: str,
    secret: str,
    *,
    extra: dict[str, str] | None = None,
    recv_window: str | None = "5000",
) -> httpx.Response:
    """A signed GET with the query string exactly as given."""
    headers = {**signed_headers(api_key, secret, query.encode(), recv_window=recv_window)}
    headers.update(extra or {})
    target = f"{url}{path}?{query}" if query else f"{url}{path}"
    return httpx.get(target, headers=headers, timeout=10)


def signed_post(
    url: str,
    path: str,
    body: bytes,
    api_key: str,
    secret: str,
    *,
    extra: dict[str, str] | None = None,
) -> httpx.Response:
    """A signed POST of exactly these body bytes (JSON content type)."""
    headers = {"Content-Type": "application/json", **signed_headers(api_key, secret, body)}
    headers.update(extra or {})
    return httpx.post(f"{url}{path}", content=body, headers=headers, timeout=10)


def envelope(response: httpx.Response) -> dict[str, Any]:
    """The JSON envelope of a reply (asserting it is one)."""
    document = response.json()
    assert set(document) >= {"retCode", "retMsg", "result"}, document
    return dict(document)
