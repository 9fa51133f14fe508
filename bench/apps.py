"""ASGI apps for benchmarks: the real app, and the same app with auth switched off.

Run one under uvicorn:  python bench/apps.py --mode auth|noauth --port P --db URL
The no-auth variant swaps the auth middleware for one that sets a fixed caller, so both serve
exactly the same routes and handlers; only the verification pipeline differs. It exists only
here, never in the product.
"""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from keyplane.auth.context import AUTH_SCOPE_KEY, PARAMS_SCOPE_KEY, AuthContext
from keyplane.auth.headers import parse_query
from keyplane.http.app import create_app
from keyplane.http.server import uvicorn_config
from keyplane.settings import Settings


class FixedCaller:
    """Sets a fixed AuthContext and the parsed query: the 'auth off' baseline."""

    def __init__(self, app: ASGIApp, *, context: AuthContext) -> None:
        self.app = app
        self.context = context

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[AUTH_SCOPE_KEY] = self.context
            scope[PARAMS_SCOPE_KEY] = parse_query(scope.get("query_string", b""))
        await self.app(scope, receive, send)


def build(mode: str, db: str, api_key: str) -> Any:
    """The app for mode "auth" (real) or "noauth" (FixedCaller instead of the auth middleware)."""
    app = create_app(Settings(database_url=db))
    if mode == "noauth":
        service = app.state.service
        entry = service.key_entry(api_key)
        assert entry is not None
        context = AuthContext(key=entry.key, account=entry.account, client_ip="127.0.0.1")
        app.user_middleware = [Middleware(FixedCaller, context=context)]
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["auth", "noauth"], required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--api-key", required=True)
    args = parser.parse_args()
    app = build(args.mode, args.db, args.api_key)
    uvicorn.Server(uvicorn_config(app, host="127.0.0.1", port=args.port)).run()


if __name__ == "__main__":
    main()
