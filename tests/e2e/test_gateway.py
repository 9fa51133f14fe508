"""Gateway mode end to end: real pybit -> `keyplane serve --upstream` -> a second keyplane.

The second keyplane plays the exchange: its key with trade permissions is the "exchange key",
stored on the gateway with `keyplane upstream set-credentials`. Bots hold scoped local gateway
keys and never see it. An ASGI wrapper around the upstream records every request it receives
(path and X-BAPI-API-KEY) so the tests can prove what did, and did not, reach it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from pybit.exceptions import InvalidRequestError
from pybit.unified_trading import HTTP
from starlette.types import ASGIApp, Receive, Scope, Send

from keyplane.clock import SystemClock
from keyplane.http.app import create_app
from keyplane.keys import IpAllowlist, KeyEncryptionKey, Permissions
from keyplane.service import KeyService
from keyplane.settings import Settings
from keyplane.store import open_store
from keyplane.testing import free_port, running_server
from tests.gateway.conftest import EchoUpstream

#: a spot limit buy far below the demo price (60000), so it rests as an open order.
LIMIT_BUY = {
    "category": "spot",
    "symbol": "BTCUSDT",
    "side": "Buy",
    "orderType": "Limit",
    "qty": "0.001",
    "price": "1000",
}


class Recorder:
    """ASGI wrapper: remembers (path, X-BAPI-API-KEY) of every HTTP request, then passes it on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.requests: list[tuple[str, str]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            key = headers.get(b"x-bapi-api-key", b"").decode("latin-1")
            self.requests.append((scope["path"], key))
        await self.app(scope, receive, send)

    def count(self, path: str) -> int:
        return sum(1 for p, _ in self.requests if p == path)


def cli(*args: str, db: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m keyplane ARGS --db DB` as a user runs it (no inherited KEYPLANE_*)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYPLANE_")}
    return subprocess.run(
        [sys.executable, "-m", "keyplane", *args, "--db", db],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        check=False,
    )


def cli_json(*args: str, db: str, stdin: str | None = None) -> Any:
    result = cli(*args, "--json", db=db, stdin=stdin)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@contextmanager
def serve(db: str, *flags: str) -> Iterator[str]:
    """`keyplane serve --db DB FLAGS` on a free port; yields its URL; SIGINT on exit."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYPLANE_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "keyplane", "serve", "--port", str(port), "--db", db, *flags],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "gateway did not start in 30 s"
            time.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr


def pybit(url: str, api_key: str, secret: str) -> HTTP:
    session = HTTP(api_key=api_key, api_secret=secret, max_retries=1, retry_delay=0)
    session.endpoint = url
    return session


def ret_code(call: Any) -> int:
    with pytest.raises(InvalidRequestError) as info:
        call()
    return int(info.value.status_code)


def exchange(tmp_path: Path) -> tuple[Recorder, str, str]:
    """A second keyplane as the upstream (not yet serving): (its app wrapped in a Recorder,
    the exchange api key, the exchange secret). The key has trade permissions."""
    db_url = f"sqlite:///{tmp_path / 'exchange.db'}"
    kek = KeyEncryptionKey.generate()
    store = open_store(db_url)
    try:
        service = KeyService(store, kek, SystemClock())
        init = service.initialize()
        assert init is not None
        issued = service.create_key(
            init.account.uid,
            permissions=Permissions.parse("Spot:SpotTrade,ContractTrade:Order"),
            ips=IpAllowlist.parse("*"),
        )
    finally:
        store.close()
    assert issued.secret is not None
    app = create_app(Settings(database_url=db_url, kek=kek.to_base64().reveal()))
    return Recorder(app), issued.key.api_key, issued.secret.reveal()


@contextmanager
def bybit_gateway(
    tmp_path: Path, upstream_url: str, exchange_key: str, exchange_secret: str
) -> Iterator[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """Gateway database prepared with the CLI; yields (url, db, trade key, read-only key)."""
    db = f"sqlite:///{tmp_path / 'gateway.db'}"
    master = cli_json("init", db=db)
    trade = cli_json(
        "keys", "create", "--uid", str(master["uid"]), "--permissions", "Spot:SpotTrade", db=db
    )
    reader = cli_json("keys", "create", "--uid", str(master["uid"]), "--read-only", db=db)
    stored = cli(
        "upstream", "set-credentials", "--api-key", exchange_key, "--secret-stdin",
        db=db, stdin=exchange_secret,
    )  # fmt: skip
    assert stored.returncode == 0, stored.stderr
    assert exchange_secret not in stored.stdout + stored.stderr
    with serve(db, "--upstream", upstream_url, "--upstream-kind", "bybit") as url:
        yield url, db, trade, reader


class TestBybitGateway:
    def test_pybit_trades_through_the_gateway_with_scoped_keys(self, tmp_path: Path) -> None:
        """place_order lands on the upstream signed with the exchange key; wallet reads work; a
        read-only local key is refused (10005) at the gateway without reaching the upstream;
        when the upstream goes away pybit sees 10016 and the gateway keeps serving."""
        recorder, ex_key, ex_secret = exchange(tmp_path)
        port = free_port()
        upstream_url = f"http://127.0.0.1:{port}"
        with bybit_gateway(tmp_path, upstream_url, ex_key, ex_secret) as (url, db, trade, reader):
            bot = pybit(url, trade["apiKey"], trade["secret"])
            with running_server(recorder, port=port):
                placed = bot.place_order(**LIMIT_BUY)
                assert placed["retCode"] == 0
                owner = pybit(upstream_url, ex_key, ex_secret)
                open_orders = owner.get_open_orders(category="spot", symbol="BTCUSDT")
                assert [o["orderId"] for o in open_orders["result"]["list"]] == [
                    placed["result"]["orderId"]
                ]

                wallet = bot.get_wallet_balance(accountType="UNIFIED")
                assert wallet["retCode"] == 0
                direct = owner.get_wallet_balance(accountType="UNIFIED")
                assert wallet["result"]["list"][0]["coin"] == direct["result"]["list"][0]["coin"]

                creates_before = recorder.count("/v5/order/create")
                read_only = pybit(url, reader["apiKey"], reader["secret"])
                assert ret_code(lambda: read_only.place_order(**LIMIT_BUY)) == 10005
                assert recorder.count("/v5/order/create") == creates_before
                still_open = owner.get_open_orders(category="spot", symbol="BTCUSDT")
                assert len(still_open["result"]["list"]) == 1

            # every private request the upstream saw was signed with the exchange key
            signed = {key for path, key in recorder.requests if not path.startswith("/v5/market")}
            assert signed == {ex_key}

            # the upstream is gone: the same running gateway answers 10016 and keeps serving
            assert ret_code(lambda: bot.get_wallet_balance(accountType="UNIFIED")) == 10016
            info = bot.get_api_key_information()  # /v5/user/* stays local
            assert info["result"]["apiKey"] == trade["apiKey"]

            shown = cli_json("upstream", "show", db=db)
            assert shown["apiKey"] != ex_key
            assert shown["apiKey"][:4] == ex_key[:4]
            assert (shown["kind"], shown["type"], shown["decrypts"]) == ("bybit", "hmac", True)
            assert ex_secret not in json.dumps(shown)

    def test_serve_refuses_bybit_mode_without_credentials(self, tmp_path: Path) -> None:
        """No stored exchange key: exit 1 with a clear message, no traceback, no server."""
        db = f"sqlite:///{tmp_path / 'gateway.db'}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEYPLANE_")}
        result = subprocess.run(
            [sys.executable, "-m", "keyplane", "serve", "--port", str(free_port()), "--db", db,
             "--upstream", "http://127.0.0.1:9", "--upstream-kind", "bybit"],
            capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL,
            check=False,
        )  # fmt: skip
        assert result.returncode == 1
        assert "keyplane upstream set-credentials" in " ".join(result.stderr.split())
        assert "Traceback" not in result.stderr

    def test_cli_never_prints_or_stores_the_secret_in_clear(self, tmp_path: Path) -> None:
        """set-credentials without a terminal needs --secret-stdin; the database holds only
        ciphertext; clear removes the credentials."""
        db_path = tmp_path / "gateway.db"
        db = f"sqlite:///{db_path}"
        secret = "exchange-secret-0123456789abcdef"
        no_tty = cli("upstream", "set-credentials", "--api-key", "EXCHANGEKEY0000001", db=db)
        assert no_tty.returncode == 1
        assert "--secret-stdin" in no_tty.stderr
        made = cli_json(
            "upstream", "set-credentials", "--api-key", "EXCHANGEKEY0000001", "--secret-stdin",
            db=db, stdin=secret + "\n",
        )  # fmt: skip
        assert made == {
            "apiKey": "EXCH************01",
            "kind": "bybit",
            "type": "hmac",
            "setAt": made["setAt"],
        }
        for path in tmp_path.iterdir():
            assert secret.encode() not in path.read_bytes()
        assert cli_json("upstream", "clear", db=db) == {"cleared": True}
        assert cli_json("upstream", "show", db=db) == {}


def generic_gateway_setup(tmp_path: Path, permissions: str) -> tuple[str, Any, Any]:
    """A new SQLite store under tmp_path: (db URL, `keyplane init --json`, `keyplane keys create
    --json` of a master-account key with permissions)."""
    db = f"sqlite:///{tmp_path / 'gateway.db'}"
    master = cli_json("init", db=db)
    uid = str(master["uid"])
    key = cli_json("keys", "create", "--uid", uid, "--permissions", permissions, db=db)
    return db, master, key


class TestGenericGateway:
    def test_pybit_through_a_generic_gateway(self, tmp_path: Path) -> None:
        """The default kind forwards pybit's request with the X-Keyplane-* identity of the
        verified key and none of pybit's own X-BAPI-* headers."""
        upstream = EchoUpstream()
        permissions = "ContractTrade:Order,ContractTrade:Position"
        db, master, key = generic_gateway_setup(tmp_path, permissions)
        with (
            running_server(upstream.app()) as upstream_url,
            serve(db, "--upstream", upstream_url) as url,
        ):
            bot = pybit(url, key["apiKey"], key["secret"])
            reply = bot.get_positions(category="linear", symbol="BTCUSDT")
        assert reply["result"] == {"method": "GET", "path": "/v5/position/list"}
        (seen,) = upstream.seen
        assert seen.query == b"category=linear&symbol=BTCUSDT"
        assert not any(n.startswith("x-bapi-") for n in seen.names())
        assert seen.header("x-keyplane-uid") == str(master["uid"])
        assert seen.header("x-keyplane-key-id") == key["apiKey"]
        permissions = json.loads(seen.header("x-keyplane-permissions") or "")
        assert permissions["ContractTrade"] == ["Order", "Position"]
        assert seen.header("x-keyplane-read-only") == "0"

    def test_serve_flag_caps_the_upstream_answer(self, tmp_path: Path) -> None:
        """`keyplane serve --upstream URL --gateway-max-response-bytes 16`: the upstream's
        answer (longer than 16 bytes) reaches pybit as retCode 10016, not the body."""
        upstream = EchoUpstream()
        db, _, key = generic_gateway_setup(tmp_path, "ContractTrade:Position")
        with (
            running_server(upstream.app()) as upstream_url,
            serve(db, "--upstream", upstream_url, "--gateway-max-response-bytes", "16") as url,
        ):
            bot = pybit(url, key["apiKey"], key["secret"])
            with pytest.raises(InvalidRequestError) as refused:
                bot.get_positions(category="linear", symbol="BTCUSDT")
        assert refused.value.status_code == 10016
        assert "larger than 16 bytes" in refused.value.message
        assert len(upstream.seen) == 1  # forwarded; only its answer was refused
