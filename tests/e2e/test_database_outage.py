"""The database killed mid-load, as a user would try it: `keyplane serve` on a private PostgreSQL
cluster that the test crashes (immediate shutdown: every connection dropped, no checkpoint) in
the middle of steady signed traffic, then starts again.

Every request gets a V5 answer (10016 while the keys cannot be read), the node serves again
once the database is back without a restart, and afterwards usage_log holds exactly one row per
request sent: the rows of the outage were spilled to the local file and replayed once.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from keyplane.clock import SystemClock
from keyplane.keys import KeyEncryptionKey
from keyplane.service import KeyService
from keyplane.signing import sign_hmac, string_to_sign
from keyplane.store import open_store
from keyplane.store.sql import make_engine
from keyplane.testing import node_process
from tests._services import started_private_postgres

pytestmark = pytest.mark.postgres

PATH, QUERY = "/v5/account/wallet-balance", "accountType=UNIFIED"


def test_killing_the_database_mid_load_loses_no_usage_row(tmp_path: Path) -> None:
    with started_private_postgres() as pg:
        kek = KeyEncryptionKey.generate()
        store = open_store(pg.url)
        try:
            init = KeyService(store, kek, SystemClock()).initialize()
        finally:
            store.close()
        assert init is not None
        assert init.issued.secret is not None
        api_key, secret = init.issued.key.api_key, init.issued.secret.reveal()
        spill = tmp_path / "usage.spill.jsonl"
        env = {
            "KEYPLANE_KEK": kek.to_base64().reveal(),
            "KEYPLANE_USAGE_SPILL_PATH": str(spill),
            "KEYPLANE_USAGE_FLUSH_MS": "200",
        }
        codes: dict[str, Counter[int]] = {}
        with (
            node_process(["--db", pg.url, "--ip-limit", "off"], env=env) as node,
            httpx.Client(base_url=node.url, timeout=10) as client,
        ):

            def load(phase: str, requests: int) -> None:
                seen = codes.setdefault(phase, Counter())
                for _ in range(requests):
                    ts = str(int(time.time() * 1000))
                    signature = sign_hmac(
                        secret, string_to_sign(ts, api_key, "5000", QUERY.encode())
                    )
                    reply = client.get(
                        f"{PATH}?{QUERY}",
                        headers={
                            "X-BAPI-API-KEY": api_key,
                            "X-BAPI-TIMESTAMP": ts,
                            "X-BAPI-RECV-WINDOW": "5000",
                            "X-BAPI-SIGN": signature,
                        },
                    )
                    seen[int(reply.json()["retCode"])] += 1
                    time.sleep(0.02)  # under the key's 50/s wallet-balance budget

            load("before", 60)
            pg.crash()
            load("outage", 60)
            pg.start()
            deadline = time.monotonic() + 15
            while client.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline, "the node did not become ready again"
                time.sleep(0.1)
            load("after", 60)
            exit_code, _ = node.stop()

        assert exit_code == 0
        assert codes["before"] == {0: 60}
        assert set(codes["outage"]) <= {0, 10016}, codes["outage"]  # answered, never hung
        assert codes["outage"][10016] > 0  # the keys could not be read: refused, not served
        assert codes["after"] == {0: 60}
        engine = make_engine(pg.url)
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    text(
                        "SELECT count(*), count(DISTINCT row_id) FROM usage_log WHERE api_key = :k"
                    ),
                    {"k": api_key},
                ).one()
        finally:
            engine.dispose()
        assert tuple(rows) == (180, 180)  # one row per request sent, none lost, none doubled
        assert not spill.exists() or spill.stat().st_size == 0
