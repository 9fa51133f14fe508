"""Per-key budgets and the per-IP guard as clients see them: headers, 10006, pybit's back-off."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from pybit.exceptions import InvalidRequestError
from pybit.unified_trading import HTTP

from keyplane.clock import SystemClock
from keyplane.http.app import create_app
from keyplane.http.limits import MIN_RESET_AHEAD_MS
from keyplane.keys import KeyEncryptionKey
from keyplane.ratelimit import Decision, Rate
from keyplane.service import KeyService
from keyplane.settings import Settings
from keyplane.store import open_store
from keyplane.testing import running_server

from .conftest import Server
from .test_bad_input import envelope, signed_headers


class TestKeyBudgets:
    def test_headers_on_every_authenticated_reply(self, server: Server) -> None:
        """X-Bapi-Limit, -Status (remaining) and -Reset-Timestamp (ms) come with each reply."""
        with httpx.Client(base_url=server.url) as c:
            first = c.get("/v5/account/info", headers=signed_headers(server, b""))
            second = c.get("/v5/account/info", headers=signed_headers(server, b""))
        assert first.headers["X-Bapi-Limit"] == "50"
        assert int(first.headers["X-Bapi-Limit-Status"]) == 49
        assert int(second.headers["X-Bapi-Limit-Status"]) == 48
        assert abs(int(first.headers["X-Bapi-Limit-Reset-Timestamp"]) - time.time() * 1000) < 5000
        assert len(first.headers.get_list("X-Bapi-Limit-Reset-Timestamp")) == 1

    def test_over_budget_is_10006_with_a_future_reset(self, server: Server) -> None:
        """The 2nd create-sub-member within a second (budget 1/s): HTTP 200, 10006, and a reset
        at least MIN_RESET_AHEAD_MS after the request, so no client reads it as past (pybit
        sleeps reset - now and raises on a negative time)."""
        with httpx.Client(base_url=server.url) as c:
            for i, expected in enumerate((0, 10006)):
                sent_ms = time.time() * 1000
                payload = f'{{"username": "ratelim{i}x", "memberType": 1}}'.encode()
                r = c.post(
                    "/v5/user/create-sub-member",
                    content=payload,
                    headers=signed_headers(server, payload),
                )
                assert r.status_code == 200
                assert envelope(r)["retCode"] == expected
        reset = int(r.headers["X-Bapi-Limit-Reset-Timestamp"])
        assert reset >= sent_ms + MIN_RESET_AHEAD_MS - 1
        assert r.headers["X-Bapi-Limit-Status"] == "0"

    def test_pybit_backs_off_and_succeeds(self, server: Server) -> None:
        """30 spot orders at once (budget 20/s): pybit sleeps until the reset header and all
        30 are placed; none fails."""
        session = HTTP(api_key=server.api_key, api_secret=server.secret, max_retries=5)
        session.endpoint = server.url
        started = time.monotonic()
        ids = [
            session.place_order(
                category="spot", symbol="BTCUSDT", side="Buy", orderType="Market", qty="10"
            )["result"]["orderId"]
            for _ in range(30)
        ]
        assert len(set(ids)) == 30
        assert time.monotonic() - started > 0.3  # it had to wait for the budget


class TestOverrides:
    def test_cli_limit_override_applies_to_the_live_server(self, server: Server) -> None:
        """`keyplane keys update KEY --limit account/info=2` on a running node: the 3rd call in a
        second is 10006 and the headers say the limit is 2; an account override applies too."""
        from .test_cli import keyplane_json

        env = {"KEYPLANE_KEK": server.kek_b64}
        shown = keyplane_json(
            "keys", "update", server.api_key, "--limit", "account/info=2", db=server.db_url, env=env
        )
        assert shown["rateLimits"] == {"/v5/account/info": 2}
        deadline = time.monotonic() + 2
        with httpx.Client(base_url=server.url) as c:
            while True:
                r = c.get("/v5/account/info", headers=signed_headers(server, b""))
                if r.headers.get("X-Bapi-Limit") == "2" or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert r.headers["X-Bapi-Limit"] == "2"
            time.sleep(1.0)
            codes = [
                envelope(c.get("/v5/account/info", headers=signed_headers(server, b"")))["retCode"]
                for _ in range(3)
            ]
        assert codes == [0, 0, 10006]
        account = keyplane_json(
            "accounts",
            "update",
            str(server.uid),
            "--limit",
            "order/realtime=3",
            db=server.db_url,
            env=env,
        )
        assert account["rateLimits"] == {"/v5/order/realtime": 3}


class FailingLimiter:
    """A limiter backend that is down (as Redis would be)."""

    async def hit(self, bucket: str, rate: Rate, now_ms: int) -> Decision:
        raise ConnectionError("limiter backend unreachable")

    async def close(self) -> None:
        return None


@pytest.fixture
def custom_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Factory: a server on a fresh SQLite store with given settings and limiter."""

    def start(limiter: object | None = None, **settings: object):  # type: ignore[no-untyped-def]
        db = f"sqlite:///{tmp_path / 'k.db'}"
        kek = KeyEncryptionKey.generate()
        store = open_store(db)
        init = KeyService(store, kek, SystemClock()).initialize()
        store.close()
        assert init is not None
        assert init.issued.secret is not None
        app = create_app(
            Settings(database_url=db, kek=kek.to_base64().reveal(), **settings), limiter=limiter
        )  # type: ignore[arg-type]
        return init, running_server(app)

    return start


class TestIpGuardAndFailure:
    def test_ip_flood_gets_403(self, custom_server) -> None:  # type: ignore[no-untyped-def]
        """Over the per-IP budget (5/s here): HTTP 403 with the envelope (10006), then banned."""
        _, running = custom_server(ip_limit="5/1s", ip_ban_seconds=30)
        with running as url, httpx.Client(base_url=url) as c:
            codes = [c.get("/v5/market/time").status_code for _ in range(7)]
            assert codes[:5] == [200] * 5
            assert codes[5:] == [403, 403]
            r = c.get("/v5/market/time")
            assert envelope(r)["retCode"] == 10006
            assert int(r.headers["X-Bapi-Limit-Reset-Timestamp"]) > time.time() * 1000 + 20_000

    def test_backend_down_reads_open_writes_closed(self, custom_server) -> None:  # type: ignore[no-untyped-def]
        """Limiter down: reads pass (fail open), writes get 10016 (fail closed)."""
        init, running = custom_server(limiter=FailingLimiter())
        with running as url:
            session = HTTP(
                api_key=init.issued.key.api_key,
                api_secret=init.issued.secret.reveal(),
                max_retries=1,
            )
            session.endpoint = url
            assert session.get_wallet_balance(accountType="UNIFIED")["retCode"] == 0
            with pytest.raises(InvalidRequestError) as info:
                session.place_order(
                    category="spot", symbol="BTCUSDT", side="Buy", orderType="Market", qty="10"
                )
            assert info.value.status_code == 10016
