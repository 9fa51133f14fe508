"""How keyplane runs under uvicorn: one place for the server options that matter for security.

proxy_headers is off: uvicorn would otherwise rewrite the client address from X-Forwarded-For
for any peer on 127.0.0.1, letting a local client claim a bound IP. keyplane reads that header
itself, and only from `trusted_proxies` (keyplane.http.middleware.client_ip_of).
"""

from __future__ import annotations

import uvicorn
from starlette.types import ASGIApp

__all__ = ["uvicorn_config"]


def uvicorn_config(
    app: ASGIApp, *, host: str, port: int, log_level: str = "warning"
) -> uvicorn.Config:
    """A uvicorn.Config for keyplane: no proxy-header rewriting, no Server header, lifespan on,
    in-flight requests get up to 10 s to finish on shutdown."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        proxy_headers=False,
        server_header=False,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
