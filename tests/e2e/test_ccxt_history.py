"""Real ccxt's fetch_closed_orders / fetch_canceled_orders against a running keyplane
(GET /v5/order/history through the auth middleware)."""

from __future__ import annotations

import ccxt

from .conftest import Server

URL_KINDS = ("spot", "futures", "v2", "public", "private")


def test_closed_and_canceled_orders(server: Server) -> None:
    """A cancelled limit order and a filled market order come back from ccxt's history calls."""
    ex = ccxt.bybit(
        {
            "apiKey": server.api_key,
            "secret": server.secret,
            "urls": {"api": dict.fromkeys(URL_KINDS, server.url)},
            "enableRateLimit": False,
        }
    )
    limit = ex.create_order("BTC/USDT", "limit", "buy", 0.01, 50000)
    ex.cancel_order(limit["id"], "BTC/USDT")
    market = ex.create_order("BTC/USDT", "market", "buy", 0.01, None, {"marketUnit": "baseCoin"})

    closed = ex.fetch_closed_orders("BTC/USDT")
    assert [o["id"] for o in closed] == [market["id"]]
    (filled,) = closed
    assert (filled["status"], filled["side"], filled["type"]) == ("closed", "buy", "market")
    assert filled["filled"] == 0.01
    assert filled["average"] == 60000

    canceled = ex.fetch_canceled_orders("BTC/USDT")
    assert [o["id"] for o in canceled] == [limit["id"]]
    (cancelled,) = canceled
    assert (cancelled["status"], cancelled["type"], cancelled["price"]) == (
        "canceled",
        "limit",
        50000,
    )
    assert cancelled["filled"] == 0
