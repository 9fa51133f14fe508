"""A keyplane server on PostgreSQL: pybit works, and a revocation made by another process's
store (the CLI on another machine) stops the key within 1 s."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from pybit.unified_trading import HTTP

from keyplane.clock import SystemClock
from keyplane.http.app import create_app
from keyplane.keys import KeyEncryptionKey
from keyplane.service import KeyService
from keyplane.settings import Settings
from keyplane.store import open_store
from keyplane.testing import running_server
from tests._services import fresh_postgres_schema, postgres_url_or_skip

from .conftest import within_one_second


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_postgres_schema(postgres_url_or_skip()) as url:
        yield url


def test_postgres_node_serves_pybit_and_follows_cli_revocation(pg_url: str) -> None:
    """serve on PostgreSQL; `keyplane keys revoke` from another process applies within 1 s."""
    kek = KeyEncryptionKey.generate()
    kek_b64 = kek.to_base64().reveal()
    store = open_store(pg_url)
    try:
        init = KeyService(store, kek, SystemClock()).initialize()
    finally:
        store.close()
    assert init is not None
    assert init.issued.secret is not None
    app = create_app(Settings(database_url=pg_url, kek=kek_b64))
    with running_server(app) as url:
        session = HTTP(
            api_key=init.issued.key.api_key, api_secret=init.issued.secret.reveal(), max_retries=1
        )
        session.endpoint = url
        assert session.get_wallet_balance(accountType="UNIFIED")["retCode"] == 0
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "keyplane",
                "keys",
                "revoke",
                init.issued.key.api_key,
                "--db",
                pg_url,
            ],
            env={**os.environ, "KEYPLANE_KEK": kek_b64},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert within_one_second(lambda: session.get_wallet_balance(accountType="UNIFIED")) == 10003


def test_postgres_without_kek_is_refused(pg_url: str) -> None:
    """On PostgreSQL a KEK is never invented per node: the CLI says how to make one."""
    env = {k: v for k, v in os.environ.items() if k != "KEYPLANE_KEK"}
    result = subprocess.run(
        [sys.executable, "-m", "keyplane", "init", "--db", pg_url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "KEYPLANE_KEK" in result.stderr
    assert "keyplane kek generate" in result.stderr
