"""The audit trail as an operator sees it: changes through the CLI and pybit, `keyplane audit`
list/verify/export, tampering detected, purge keeping the chain verifiable, no secrets."""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path

from pybit.unified_trading import HTTP

from keyplane.alerts import AlertKind, AlertRecord
from keyplane.clock import FrozenClock, SystemClock
from keyplane.keys import DAY_MS, KeyEncryptionKey
from keyplane.service import KeyService
from keyplane.store import open_store
from keyplane.usage import UsageEvent

from .conftest import Server
from .test_cli import keyplane, keyplane_json


def db_bytes(path: Path) -> bytes:
    """The database file with its WAL and shared-memory files."""
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


class TestAuditTrail:
    def test_cli_and_pybit_changes_are_listed_with_actor_and_fields(self, server: Server) -> None:
        """CLI and /v5/user/update-api changes show up with actor, before/after and IP."""
        env = {"KEYPLANE_KEK": server.kek_b64}
        db = server.db_url
        made = keyplane_json(
            "keys", "create", "--uid", str(server.uid), "--permissions", "Spot:SpotTrade",
            db=db, env=env,
        )  # fmt: skip
        keyplane_json("keys", "update", made["apiKey"], "--read-only", db=db, env=env)
        keyplane_json("keys", "suspend", made["apiKey"], db=db, env=env)
        master = HTTP(api_key=server.api_key, api_secret=server.secret, max_retries=1)
        master.endpoint = server.url
        assert master.modify_master_api_key(readOnly=0, ips="127.0.0.1")["retCode"] == 0

        events = keyplane_json("audit", "list", db=db, env=env)
        actions = [(e["action"], e["target"]) for e in events]
        assert actions[-4:] == [
            ("key.create", f"key:{made['apiKey']}"),
            ("key.update", f"key:{made['apiKey']}"),
            ("key.suspend", f"key:{made['apiKey']}"),
            ("key.update", f"key:{server.api_key}"),
        ]
        create, update, suspend, remote = events[-4:]
        assert create["actor"].startswith("admin:")
        assert create["after"]["permissions"]["Spot"] == ["SpotTrade"]
        assert (update["before"]["readOnly"], update["after"]["readOnly"]) == (0, 1)
        assert (suspend["before"], suspend["after"]) == (
            {"status": "active"},
            {"status": "suspended"},
        )
        assert remote["actor"] == f"key:{server.api_key}"
        assert remote["sourceIp"] == "127.0.0.1"
        assert (remote["before"]["ips"], remote["after"]["ips"]) == (["*"], ["127.0.0.1"])

        mine = keyplane_json(
            "audit", "list", "--key", made["apiKey"], "--since", "1h", db=db, env=env
        )
        assert [e["action"] for e in mine] == ["key.create", "key.update", "key.suspend"]
        verified = keyplane("audit", "verify", db=db, env=env)
        assert verified.returncode == 0, verified.stderr
        assert f"chain intact: {len(events)} rows" in verified.stdout

        exported = keyplane("audit", "export", "--format", "jsonl", db=db, env=env)
        lines = [json.loads(line) for line in exported.stdout.splitlines()]
        assert [line["rowHash"] for line in lines] == [e["rowHash"] for e in events]
        table = keyplane("audit", "list", db=db, env=env).stdout
        raw_kek = base64.b64decode(server.kek_b64)
        for text in (exported.stdout, table, verified.stdout, json.dumps(events)):
            for secret in (server.secret, made["secret"], server.kek_b64):
                assert secret not in text
        raw = db_bytes(server.db_path)
        for secret in (
            server.secret.encode(),
            made["secret"].encode(),
            raw_kek,
            server.kek_b64.encode(),
        ):
            assert secret not in raw

    def test_an_edited_row_and_a_deleted_row_are_named(self, tmp_path: Path) -> None:
        """Editing one row with SQL makes verify exit 1 naming it; so does deleting one."""
        path = tmp_path / "k.db"
        db = f"sqlite:///{path}"
        first = keyplane_json("init", db=db)
        for label in ("a", "b", "c"):
            keyplane_json("keys", "update", first["apiKey"], "--label", label, db=db)
        assert keyplane("audit", "verify", db=db).returncode == 0
        with sqlite3.connect(path) as conn:
            conn.execute(
                "UPDATE audit_log SET after_json = ? WHERE id = 4", ('{"note":"nothing to see"}',)
            )
        result = keyplane("audit", "verify", db=db)
        assert result.returncode == 1
        assert "row 4" in result.stderr
        assert "edited" in result.stderr
        document = json.loads(keyplane("audit", "verify", "--json", db=db).stdout)
        assert (document["intact"], document["brokenRow"]) == (False, 4)

        with sqlite3.connect(path) as conn:
            conn.execute("DELETE FROM audit_log WHERE id = 2")
        result = keyplane("audit", "verify", db=db)
        assert result.returncode == 1
        assert "row 2 missing" in result.stderr

    def test_purge_removes_old_rows_and_keys_and_verify_stays_green(self, tmp_path: Path) -> None:
        """Rows and revoked keys older than the retention go; the rest still verifies."""
        path = tmp_path / "k.db"
        db = f"sqlite:///{path}"
        kek = KeyEncryptionKey.generate()
        env = {"KEYPLANE_KEK": kek.to_base64().reveal()}
        store = open_store(db)
        past = KeyService(store, kek, FrozenClock(SystemClock().now_ms() - 100 * DAY_MS))
        account = past.create_account()
        old = past.create_key(account.uid).key.api_key
        past.revoke_key(old)
        now = SystemClock().now_ms()
        store.append_usage(  # usage rows 31 and 29 days old: the default keeps 30 days
            [
                UsageEvent(
                    at, old, 1, account.uid, "GET", "/v5/x", 200, 0, 0, 9, 5, "::1", True, rid
                )
                for at, rid in ((now - 31 * DAY_MS, "u-1"), (now - 29 * DAY_MS, "u-2"))
            ]
        )
        store.close()
        fresh = keyplane_json("keys", "create", "--uid", str(account.uid), db=db, env=env)
        assert keyplane("audit", "verify", db=db, env=env).returncode == 0

        purged = keyplane_json("maintenance", "purge", db=db, env=env)
        assert purged == {
            "auditRows": 3,
            "throughRow": 3,
            "keys": [old],
            "usageRows": 1,
            "alertRows": 0,
        }
        with sqlite3.connect(path) as conn:
            assert conn.execute("SELECT row_id FROM usage_log").fetchall() == [("u-2",)]
        verified = keyplane("audit", "verify", db=db, env=env)
        assert verified.returncode == 0, verified.stderr
        assert "chain intact: 2 rows (checkpoint at row 3)" in verified.stdout
        events = keyplane_json("audit", "list", db=db, env=env)
        assert [(e["id"], e["action"]) for e in events] == [
            (4, "key.create"),
            (5, "maintenance.purge"),
        ]
        listed = {k["apiKey"] for k in keyplane_json("keys", "list", db=db, env=env)}
        assert listed == {fresh["apiKey"]}

        with sqlite3.connect(path) as conn:  # a forged checkpoint hiding row 4
            conn.execute("UPDATE audit_checkpoint SET through_id = 4")
        result = keyplane("audit", "verify", db=db, env=env)
        assert result.returncode == 1
        assert "signature" in result.stderr


def _alert(at_ms: int, window_ms: int, condition: str = "quota.75") -> AlertRecord:
    kind = AlertKind.EXPIRY_SOON if condition.startswith("expiry") else AlertKind.QUOTA_75
    return AlertRecord(
        key_id=1,
        api_key="AAAAAAAAAAAAAAAAAA",
        uid=100001,
        kind=kind,
        condition=condition,
        window_ms=window_ms,
        at_ms=at_ms,
        summary=f"{condition} recorded at {at_ms}",
    )


class TestAlertPurge:
    def test_purge_drops_old_alert_rows_and_shows_the_count(self, tmp_path: Path) -> None:
        """`maintenance purge` drops alert rows older than --alert-retention-days (default
        90), keeps an expiry alert whose key has not expired (its window is still live) and
        reports the count in --json (alertRows) and in its text; the purge is audited."""
        path = tmp_path / "k.db"
        db = f"sqlite:///{path}"
        env = {"KEYPLANE_KEK": KeyEncryptionKey.generate().to_base64().reveal()}
        now = SystemClock().now_ms()
        day = now - now % DAY_MS
        store = open_store(db)
        for record in (
            _alert(now - 91 * DAY_MS, day - 91 * DAY_MS),  # goes at 90 days
            _alert(now - 200 * DAY_MS, now - 150 * DAY_MS, "expiry.1d"),  # expired long ago
            _alert(now - 100 * DAY_MS, now + 5 * DAY_MS, "expiry.7d"),  # key not expired yet
            _alert(now - 40 * DAY_MS, day - 40 * DAY_MS),  # goes at 30 days
            _alert(now - 3 * DAY_MS, day - 3 * DAY_MS),  # goes at 2 days
            _alert(now - DAY_MS // 2, day),  # today: stays
        ):
            assert store.record_alert(record)
        store.close()

        purged = keyplane_json("maintenance", "purge", db=db, env=env)
        assert purged["alertRows"] == 2
        left = keyplane_json("alerts", "list", db=db, env=env)
        assert len(left) == 4
        text = keyplane("maintenance", "purge", "--alert-retention-days", "30", db=db, env=env)
        assert text.returncode == 0, text.stderr
        assert "1 alert rows older than 30 days" in text.stdout
        minimum = keyplane_json(
            "maintenance", "purge", "--alert-retention-days", "2", db=db, env=env
        )
        assert minimum["alertRows"] == 1
        left = keyplane_json("alerts", "list", db=db, env=env)
        assert sorted(a["condition"] for a in left) == ["expiry.7d", "quota.75"]
        events = keyplane_json("audit", "list", db=db, env=env)
        assert [e["after"]["alertRows"] for e in events if e["action"] == "maintenance.purge"] == [
            2,
            1,
            1,
        ]

    def test_alert_retention_below_two_days_is_refused(self, tmp_path: Path) -> None:
        """--alert-retention-days 1 (or 0): exit 1 with an error that says why; nothing is
        purged."""
        path = tmp_path / "k.db"
        db = f"sqlite:///{path}"
        env = {"KEYPLANE_KEK": KeyEncryptionKey.generate().to_base64().reveal()}
        now = SystemClock().now_ms()
        store = open_store(db)
        assert store.record_alert(_alert(now - 3 * DAY_MS, now - 3 * DAY_MS - now % DAY_MS))
        store.close()
        for days in ("1", "0"):
            result = keyplane(
                "maintenance", "purge", "--alert-retention-days", days, "--json", db=db, env=env
            )
            assert result.returncode == 1
            assert result.stdout == ""
            assert "--alert-retention-days must be at least 2" in result.stderr
            assert "UTC day" in result.stderr
            assert "Traceback" not in result.stderr
        assert len(keyplane_json("alerts", "list", db=db, env=env)) == 1
