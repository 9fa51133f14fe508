"""Fixtures for the demo venue's unit tests: a tiny app with a stand-in for the auth middleware.

The stand-in puts an AuthContext for the account named by the `x-test-uid` header (default
DEFAULT_UID) and the parsed params into the scope, as the real middleware does after verifying
a signature. End-to-end tests through the real middleware live in tests/e2e.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyplane.auth.context import AUTH_SCOPE_KEY, PARAMS_SCOPE_KEY, AuthContext
from keyplane.clock import FrozenClock
from keyplane.errors import KeyplaneError
from keyplane.http.envelope import envelope_response
from keyplane.keys.ips import IpAllowlist
from keyplane.keys.model import Account, ApiKey, KeyType
from keyplane.keys.permissions import Permissions
from keyplane.venue import VenueConfig, VenueState, venue_routes

DEFAULT_UID = 1001
NOW_MS = 1_700_000_000_000


def auth_context(uid: int) -> AuthContext:
    """A verified caller for account uid (master account, read-write key)."""
    key = ApiKey(
        id=uid,
        api_key=f"TESTKEY{uid:011d}",
        uid=uid,
        key_type=KeyType.HMAC,
        read_only=False,
        permissions=Permissions(),
        ips=IpAllowlist(),
        created_at_ms=NOW_MS,
        expires_at_ms=None,
    )
    return AuthContext(key=key, account=Account(uid, None, NOW_MS), client_ip="127.0.0.1")


class FakeAuth:
    """Pure-ASGI stand-in for keyplane's auth middleware (tests only)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if scope["method"] == "GET":
            query = scope["query_string"].decode()
            params: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True))
        else:
            params = json.loads(body) if body else {}
        scope[PARAMS_SCOPE_KEY] = params
        if not scope["path"].startswith("/v5/market/"):
            uid = dict(scope["headers"]).get(b"x-test-uid", str(DEFAULT_UID).encode())
            scope[AUTH_SCOPE_KEY] = auth_context(int(uid))
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _keyplane_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, KeyplaneError)
    return envelope_response(
        None, now_ms=request.app.state.clock.now_ms(), ret_code=exc.ret_code, ret_msg=exc.ret_msg
    )


class Api:
    """A sync test client speaking to the venue in-process (httpx ASGITransport) as one account;
    returns decoded envelopes."""

    def __init__(self, app: Starlette, portal: BlockingPortal, uid: int = DEFAULT_UID) -> None:
        self.app = app
        self.portal = portal
        self.uid = uid

    def as_uid(self, uid: int) -> Api:
        """The same app, called as another account."""
        return Api(self.app, self.portal, uid)

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://venue") as client:
            headers = {"x-test-uid": str(self.uid)}
            return await client.request(method, path, headers=headers, **kwargs)

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        r = self.portal.call(lambda: self._send(method, path, **kwargs))
        assert r.status_code == 200
        data: dict[str, Any] = r.json()
        return data

    def get(self, path: str, **params: str) -> dict[str, Any]:
        """GET path?params; the envelope as a dict."""
        return self._call("GET", path, params=params)

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST path with a JSON body; the envelope as a dict."""
        return self._call("POST", path, json=body)

    def ok(
        self, method: str, path: str, body: dict[str, Any] | None = None, **params: str
    ) -> dict[str, Any]:
        """Call and assert retCode 0; the `result` object."""
        env = self.post(path, body or {}) if method == "POST" else self.get(path, **params)
        assert env["retCode"] == 0, env
        result: dict[str, Any] = env["result"]
        return result

    def coins(self, **params: str) -> dict[str, dict[str, Any]]:
        """coin -> wallet-balance coin entry."""
        result = self.ok("GET", "/v5/account/wallet-balance", accountType="UNIFIED", **params)
        return {c["coin"]: c for c in result["list"][0]["coin"]}

    def order(self, **body: Any) -> dict[str, Any]:
        """POST /v5/order/create; the envelope."""
        return self.post("/v5/order/create", body)


@pytest.fixture
def state() -> VenueState:
    """A fresh venue with the default config."""
    return VenueState(VenueConfig())


@pytest.fixture
def api(state: VenueState) -> Iterator[Api]:
    """The venue routes behind FakeAuth, called as DEFAULT_UID."""
    app = Starlette(
        routes=venue_routes(),
        middleware=[Middleware(FakeAuth)],
        exception_handlers={KeyplaneError: _keyplane_error},
    )
    app.state.venue = state
    app.state.clock = FrozenClock(NOW_MS)
    with start_blocking_portal() as portal:
        yield Api(app, portal)
