"""The gateway's routes: every policy route outside /v5/user/* forwards to the upstream.

/v5/user/* (management of keyplane's own keys) stays local (keyplane.http.key_management).
The list comes from keyplane.policy, so a route added there is forwarded without more work.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keyplane.gateway.forward import Gateway
from keyplane.policy import ROUTES

__all__ = ["LOCAL_PREFIX", "forwarded_paths", "gateway_routes"]

#: paths under this prefix are answered by keyplane itself, never forwarded.
LOCAL_PREFIX = "/v5/user/"


def forwarded_paths() -> dict[str, list[str]]:
    """path -> methods of every policy route the gateway forwards (all but /v5/user/*)."""
    paths: dict[str, list[str]] = {}
    for method, path in ROUTES:
        if not path.startswith(LOCAL_PREFIX):
            paths.setdefault(path, []).append(method)
    return paths


async def _forward(request: Request) -> Response:
    """Forward one checked request; the Gateway lives at request.app.state.gateway."""
    gateway: Gateway = request.app.state.gateway
    body = await request.body()
    return await gateway.forward(request.scope, body)


def gateway_routes() -> list[Route]:
    """Starlette routes forwarding every path of forwarded_paths() with its methods."""
    return [Route(path, _forward, methods=methods) for path, methods in forwarded_paths().items()]
