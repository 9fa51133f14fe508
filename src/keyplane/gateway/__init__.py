"""Gateway mode: keyplane checks each bot's request, then forwards it to a real upstream.

`keyplane serve --upstream URL [--upstream-kind generic|bybit]`. Bots hold scoped local keys;
with kind "bybit" keyplane holds the one exchange key (encrypted under the KEK, set with
`keyplane upstream set-credentials`) and re-signs each forwarded request with it.
"""

from keyplane.gateway.credentials import (
    UpstreamCredentials,
    UpstreamSigner,
    clear_upstream_credentials,
    load_upstream_credentials,
    mask_api_key,
    save_upstream_credentials,
)
from keyplane.gateway.forward import (
    Gateway,
    UpstreamError,
    display_upstream,
    gateway_from_settings,
    parse_upstream_url,
)
from keyplane.gateway.routes import forwarded_paths, gateway_routes

__all__ = [
    "Gateway",
    "UpstreamCredentials",
    "UpstreamError",
    "UpstreamSigner",
    "clear_upstream_credentials",
    "display_upstream",
    "forwarded_paths",
    "gateway_from_settings",
    "gateway_routes",
    "load_upstream_credentials",
    "mask_api_key",
    "parse_upstream_url",
    "save_upstream_credentials",
]
