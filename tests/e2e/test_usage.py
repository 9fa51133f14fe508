"""The usage log end to end: a node on PostgreSQL serves pybit while the database refuses usage
writes for a while; afterwards `keyplane usage` counts every request exactly once, nothing is
lost, and lastUsedAt is within a second of the last request."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from pybit.exceptions import InvalidRequestError
from pybit.unified_trading import HTTP
from sqlalchemy import create_engine, text

from keyplane.clock import SystemClock
from keyplane.http.app import create_app
from keyplane.keys import KeyEncryptionKey
from keyplane.service import KeyService
from keyplane.settings import Settings
from keyplane.store import open_store
from keyplane.store.sql import normalize_url
from keyplane.testing import running_server
from keyplane.usage.writer import UsageWriter
from tests._services import fresh_postgres_schema, postgres_url_or_skip


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_postgres_schema(postgres_url_or_skip()) as url:
        yield url


def _wait(condition: Callable[[], bool], what: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what}: {condition.__doc__ or ''}"
        time.sleep(0.05)


def _usage_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keyplane", "usage", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_usage_survives_a_database_outage_on_postgres(pg_url: str, tmp_path: Path) -> None:
    """pybit traffic across an outage of the usage table: every request is counted once."""
    kek = KeyEncryptionKey.generate()
    kek_b64 = kek.to_base64().reveal()
    store = open_store(pg_url)
    try:
        init = KeyService(store, kek, SystemClock()).initialize()
    finally:
        store.close()
    assert init is not None
    assert init.issued.secret is not None
    api_key, secret = init.issued.key.api_key, init.issued.secret.reveal()
    spill = tmp_path / "usage.spill.jsonl"
    settings = Settings(
        database_url=pg_url, kek=kek_b64, usage_flush_ms=100, usage_spill_path=spill, ip_limit="off"
    )
    app = create_app(settings)
    writer: UsageWriter = app.state.usage
    admin = create_engine(normalize_url(pg_url))
    ok = refused = 0
    last_ok_ms = 0
    with running_server(app) as url:
        good = HTTP(api_key=api_key, api_secret=secret, max_retries=1)
        good.endpoint = url
        bad = HTTP(api_key=api_key, api_secret="x" * 36, max_retries=1)
        bad.endpoint = url

        def load(n: int) -> None:
            nonlocal ok, refused, last_ok_ms
            for i in range(n):
                time.sleep(0.03)  # under the key's 50/s wallet-balance budget
                if i % 10 == 9:
                    with pytest.raises(InvalidRequestError, match="10004"):
                        bad.get_wallet_balance(accountType="UNIFIED")
                    refused += 1
                else:
                    assert good.get_wallet_balance(accountType="UNIFIED")["retCode"] == 0
                    ok += 1
                    last_ok_ms = int(time.time() * 1000)

        load(40)
        _wait(lambda: writer.written == 40, f"rows before the outage written {writer.stats()}")
        with admin.begin() as conn:  # the database now refuses every usage write
            conn.execute(text("ALTER TABLE usage_log RENAME TO usage_log_away"))
        load(60)
        _wait(lambda: writer.spilled == 60, "rows during the outage spilled")
        assert spill.exists()
        with admin.begin() as conn:
            conn.execute(text("ALTER TABLE usage_log_away RENAME TO usage_log"))
        _wait(lambda: writer.replayed == 60, "spilled rows replayed")
        load(30)
        metrics = httpx.get(f"{url}/metrics").text
    admin.dispose()
    total = ok + refused
    assert total == 130
    assert writer.stats() == (0, 70, 60, 60, 0)  # drained at shutdown, nothing lost
    assert "keyplane_usage_rows_lost_total 0.0" in metrics
    assert "keyplane_usage_rows_spilled_total 60.0" in metrics
    assert not spill.exists()

    env = {**os.environ, "KEYPLANE_KEK": kek_b64}
    result = _usage_cli("--key", api_key, "--by", "status", "--json", "--db", pg_url, env=env)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["requests"] == total
    assert document["errors"] == refused
    groups = {g["group"]: g["requests"] for g in document["groups"]}
    assert groups == {"200/0": ok, "200/10004": refused}
    assert secret not in result.stdout

    store = open_store(pg_url)
    try:
        key = store.find_key(api_key)
    finally:
        store.close()
    assert key is not None
    assert key.last_used_at_ms is not None
    assert abs(key.last_used_at_ms - last_ok_ms) < 1000


def test_usage_cli_table_and_json(tmp_path: Path) -> None:
    """`keyplane usage` prints a table by endpoint, and one JSON document with --json."""
    db_url = f"sqlite:///{tmp_path / 'keyplane.db'}"
    kek = KeyEncryptionKey.generate()
    store = open_store(db_url)
    try:
        init = KeyService(store, kek, SystemClock()).initialize()
    finally:
        store.close()
    assert init is not None
    assert init.issued.secret is not None
    api_key, secret = init.issued.key.api_key, init.issued.secret.reveal()
    app = create_app(Settings(database_url=db_url, kek=kek.to_base64().reveal()))
    with running_server(app) as url:
        session = HTTP(api_key=api_key, api_secret=secret, max_retries=1)
        session.endpoint = url
        for _ in range(3):
            session.get_wallet_balance(accountType="UNIFIED")
        session.get_api_key_information()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYPLANE_")}
    table = _usage_cli("--db", db_url, env=env)
    assert table.returncode == 0, table.stderr
    assert "GET /v5/account/wallet-balance" in table.stdout
    assert "GET /v5/user/query-api" in table.stdout
    assert "4 requests, 0 errors" in table.stdout
    as_json = _usage_cli("--since", "1h", "--json", "--db", db_url, env=env)
    assert as_json.returncode == 0, as_json.stderr
    document = json.loads(as_json.stdout)
    assert document["requests"] == 4
    assert [(g["group"], g["requests"]) for g in document["groups"]] == [
        ("GET /v5/account/wallet-balance", 3),
        ("GET /v5/user/query-api", 1),
    ]
    assert all(g["avgLatencyUs"] > 0 for g in document["groups"])
    assert all(
        0 < g["p50LatencyUs"] <= g["p99LatencyUs"] <= g["maxLatencyUs"] for g in document["groups"]
    )
    bad = _usage_cli("--by", "ip", "--db", db_url, env=env)
    assert bad.returncode == 1
    assert "--by must be endpoint or status" in bad.stderr
