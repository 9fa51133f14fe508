"""Bybit V5 WebSocket endpoints: /v5/private (private topics) and /v5/trade (order entry).

Wire them into an app with `ws_routes()` and `app.state.ws_hub = WsHub(cache, clock, ...)`;
register `hub.on_venue_events` on the venue's events and `hub.on_invalidated` on the key cache.
"""

from keyplane.ws.hub import Connection, WsHub
from keyplane.ws.routes import ws_routes

__all__ = ["Connection", "WsHub", "ws_routes"]
