"""The real ccxt client (sync and async) against a running keyplane, HMAC and RSA."""

from __future__ import annotations

import asyncio
from typing import Any

import ccxt
import ccxt.async_support as ccxt_async
import pytest

from .conftest import Server

URL_KINDS = ("spot", "futures", "v2", "public", "private")


def exchange_config(url: str, api_key: str, secret: str) -> dict[str, Any]:
    return {
        "apiKey": api_key,
        "secret": secret,
        "urls": {"api": dict.fromkeys(URL_KINDS, url)},
        "enableRateLimit": False,
    }


def exchange(url: str, api_key: str, secret: str) -> ccxt.bybit:
    return ccxt.bybit(exchange_config(url, api_key, secret))


class TestCcxtSync:
    def test_fetch_balance_on_fresh_instance(self, server: Server) -> None:
        """fetch_balance with default options walks ccxt's discovery calls and succeeds."""
        ex = exchange(server.url, server.api_key, server.secret)
        balance = ex.fetch_balance()
        assert balance["USDT"]["total"] == 100000
        assert balance["BTC"]["free"] == 1

    def test_create_order_moves_balance(self, server: Server) -> None:
        """A market buy in base units fills at the venue price and moves both coins."""
        ex = exchange(server.url, server.api_key, server.secret)
        order = ex.create_order("BTC/USDT", "market", "buy", 0.01, None, {"marketUnit": "baseCoin"})
        assert order["id"]
        balance = ex.fetch_balance()
        assert balance["BTC"]["total"] == pytest.approx(1.01)
        assert balance["USDT"]["total"] < 100000

    def test_limit_order_rests_and_cancels(self, server: Server) -> None:
        """A limit buy below the price rests, is listed, and cancels."""
        ex = exchange(server.url, server.api_key, server.secret)
        order = ex.create_order("ETH/USDT", "limit", "buy", 0.5, 1000)
        open_orders = ex.fetch_open_orders("ETH/USDT")
        assert [o["id"] for o in open_orders] == [order["id"]]
        ex.cancel_order(order["id"], "ETH/USDT")
        assert ex.fetch_open_orders("ETH/USDT") == []

    def test_rsa_key(self, server: Server, rsa_private_pem: tuple[str, str]) -> None:
        """A secret containing PRIVATE KEY switches ccxt to RSA; keyplane verifies it."""
        private_pem, public_pem = rsa_private_pem
        api_key, _ = server.new_key(rsa_public_key=public_pem)
        ex = exchange(server.url, api_key, private_pem)
        assert ex.fetch_balance()["USDT"]["total"] == 100000

    def test_errors_map_to_ccxt_exceptions(self, server: Server) -> None:
        """10004 -> AuthenticationError, 10005 -> PermissionDenied, 10010 -> PermissionDenied."""
        with pytest.raises(ccxt.AuthenticationError, match="10004"):
            exchange(server.url, server.api_key, "y" * 36).fetch_balance()
        api_key, secret = server.new_key(read_only=True)
        ex = exchange(server.url, api_key, secret)
        ex.fetch_balance()
        with pytest.raises(ccxt.PermissionDenied, match="10005"):
            ex.create_order("BTC/USDT", "market", "buy", 0.001, None, {"marketUnit": "baseCoin"})
        api_key, secret = server.new_key(ips="192.0.2.1")
        with pytest.raises(ccxt.PermissionDenied, match="10010"):
            exchange(server.url, api_key, secret).fetch_balance()
        with pytest.raises(ccxt.AuthenticationError, match="10003"):
            exchange(server.url, "Z" * 18, secret).fetch_balance()


class TestCcxtAsync:
    def test_fetch_balance_and_create_order(self, server: Server) -> None:
        """The asyncio client does the same main job."""

        async def main() -> tuple[dict[str, Any], dict[str, Any]]:
            ex = ccxt_async.bybit(exchange_config(server.url, server.api_key, server.secret))
            try:
                balance = await ex.fetch_balance()
                order = await ex.create_order(
                    "SOL/USDT", "market", "buy", 2, None, {"marketUnit": "baseCoin"}
                )
                return balance, order
            finally:
                await ex.close()

        balance, order = asyncio.run(main())
        assert balance["USDT"]["total"] == 100000
        assert order["id"]
