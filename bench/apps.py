"""ASGI apps for benchmarks: the real app, and the same app with auth (and so limits) switched off.

Run one under uvicorn:
    python bench/apps.py --mode auth|noauth --port P --db URL --api-key K [--redis URL]
                         [--usage-log] [--anomaly-detection]

"auth" is keyplane's own create_app: the auth middleware with the per-key limiter, in memory, or
in Redis when --redis is given (create_app picks RedisRateLimiter when Settings.redis_url is
set). "noauth" swaps the auth middleware for one that sets a fixed caller, so both serve exactly
the same routes and handlers; since the limiter (per-IP guard and per-key budgets) is called
only from the auth middleware, the baseline runs with auth AND limits off. It exists only here,
never in the product. The usage log and the anomaly guard (part 3) are off in both unless
--usage-log / --anomaly-detection are given: the auth-overhead figures measure auth and limits,
and the part-3 consumers of the usage stream are measured on their own.
"""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn
from pydantic import SecretStr
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from keyplane.auth.context import AUTH_SCOPE_KEY, PARAMS_SCOPE_KEY, AuthContext
from keyplane.auth.headers import parse_query
from keyplane.http.app import create_app
from keyplane.http.middleware import AuthMiddleware
from keyplane.http.server import uvicorn_config
from keyplane.settings import Settings


class FixedCaller:
    """Sets a fixed AuthContext and the parsed query: the 'auth and limits off' baseline."""

    def __init__(self, app: ASGIApp, *, context: AuthContext) -> None:
        self.app = app
        self.context = context

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[AUTH_SCOPE_KEY] = self.context
            scope[PARAMS_SCOPE_KEY] = parse_query(scope.get("query_string", b""))
        await self.app(scope, receive, send)


def build(
    mode: str,
    db: str,
    api_key: str,
    redis_url: str | None = None,
    usage_log: bool = False,
    anomaly_detection: bool = False,
) -> Any:
    """The app for mode "auth" (real; Redis limiter when redis_url is given) or "noauth"
    (FixedCaller instead of the auth middleware: no auth, no limiter)."""
    settings = Settings(
        database_url=db,
        redis_url=SecretStr(redis_url) if redis_url is not None else None,
        usage_log=usage_log,
        anomaly_detection=anomaly_detection,
    )
    app = create_app(settings)
    if mode == "noauth":
        service = app.state.service
        entry = service.key_entry(api_key)
        assert entry is not None
        context = AuthContext(key=entry.key, account=entry.account, client_ip="127.0.0.1")
        # the auth middleware is the only one: nothing else is lost by the swap
        assert len(app.user_middleware) == 1
        only: object = app.user_middleware[0].cls
        assert only is AuthMiddleware
        app.user_middleware = [Middleware(FixedCaller, context=context)]
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=["auth", "noauth"], required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--redis", default=None, help="Redis URL: the auth app's limiter")
    parser.add_argument("--usage-log", action="store_true", help="Turn the usage log on")
    parser.add_argument(
        "--anomaly-detection", action="store_true", help="Turn the anomaly guard on"
    )
    args = parser.parse_args()
    app = build(
        args.mode, args.db, args.api_key, args.redis, args.usage_log, args.anomaly_detection
    )
    uvicorn.Server(uvicorn_config(app, host="127.0.0.1", port=args.port)).run()


if __name__ == "__main__":
    main()
