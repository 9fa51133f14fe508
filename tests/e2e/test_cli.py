"""The `keyplane` CLI as a user runs it (a real subprocess), including against a live server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pybit.exceptions import InvalidRequestError
from pybit.unified_trading import HTTP

from .conftest import Server, within_one_second


def keyplane(
    *args: str, db: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keyplane", *args, "--db", db],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        check=False,
    )


def keyplane_json(*args: str, db: str, env: dict[str, str] | None = None) -> Any:
    result = keyplane(*args, "--json", db=db, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


class TestCliLifecycle:
    def test_init_accounts_keys(self, tmp_path: Path) -> None:
        """init, accounts create, keys create/show/list/update/rotate/revoke with --json."""
        db = f"sqlite:///{tmp_path / 'k.db'}"
        first = keyplane_json("init", db=db)
        assert set(first) == {"uid", "apiKey", "secret"}
        assert len(first["apiKey"]) == 18
        assert keyplane_json("init", db=db) == {}
        sub = keyplane_json("accounts", "create", "--parent", str(first["uid"]), db=db)
        created = keyplane_json(
            "keys",
            "create",
            "--uid",
            str(sub["uid"]),
            "--label",
            "bot-1",
            "--permissions",
            "Spot:SpotTrade,ContractTrade:Order",
            "--ips",
            "127.0.0.1,10.0.0.0/8",
            db=db,
        )
        assert set(created) == {"id", "apiKey", "secret"}
        shown = keyplane_json("keys", "show", created["apiKey"], db=db)
        assert created["secret"] not in json.dumps(shown)
        assert shown["ips"] == ["127.0.0.1", "10.0.0.0/8"]
        assert shown["permissions"]["Spot"] == ["SpotTrade"]
        assert shown["expiredAt"] == ""
        updated = keyplane_json(
            "keys", "update", created["apiKey"], "--read-only", "--ips", "*", db=db
        )
        assert updated["readOnly"] == 1
        assert updated["expiredAt"] != ""
        assert (updated["dailyQuota"], updated["replayGuard"]) == (None, False)
        guarded = keyplane_json(
            "keys", "update", created["apiKey"], "--daily-quota", "5000", "--replay-guard", db=db
        )
        assert (guarded["dailyQuota"], guarded["replayGuard"]) == (5000, True)
        refused = keyplane("keys", "update", created["apiKey"], "--daily-quota", "-5", db=db)
        assert refused.returncode != 0
        assert "Traceback" not in refused.stderr
        rotated = keyplane_json("keys", "rotate", created["apiKey"], db=db)
        assert rotated["apiKey"] != created["apiKey"]
        assert rotated["secret"] != created["secret"]
        rotated_shown = keyplane_json("keys", "show", rotated["apiKey"], db=db)
        assert rotated_shown["permissions"] == updated["permissions"]
        assert rotated_shown["readOnly"] == 1
        assert (rotated_shown["dailyQuota"], rotated_shown["replayGuard"]) == (5000, True)
        revoked = keyplane_json("keys", "revoke", created["apiKey"], db=db)
        assert revoked["status"] == "revoked"
        listed = keyplane_json("keys", "list", "--uid", str(sub["uid"]), db=db)
        assert {k["apiKey"]: k["status"] for k in listed} == {
            created["apiKey"]: "revoked",
            rotated["apiKey"]: "active",
        }
        raw = b"".join(p.read_bytes() for p in tmp_path.glob("k.db*"))  # db, -wal, -shm
        for secret in (first["secret"], created["secret"], rotated["secret"]):
            assert secret.encode() not in raw

    def test_errors_are_words_not_tracebacks(self, tmp_path: Path) -> None:
        """Unknown keys and bad permissions exit 1 with a one-line error."""
        db = f"sqlite:///{tmp_path / 'k.db'}"
        result = keyplane("keys", "show", "NOPE", db=db)
        assert result.returncode == 1
        assert "does not exist" in result.stderr
        assert "Traceback" not in result.stderr
        result = keyplane("keys", "create", "--uid", "100001", "--permissions", "Spot:Nope", db=db)
        assert result.returncode == 1
        assert "Traceback" not in result.stderr

    def test_human_output_is_a_table(self, tmp_path: Path) -> None:
        """Without --json, keys list prints a table with the key."""
        db = f"sqlite:///{tmp_path / 'k.db'}"
        first = keyplane_json("init", db=db)
        result = keyplane("keys", "list", db=db)
        assert result.returncode == 0
        assert first["apiKey"] in result.stdout
        assert first["secret"] not in result.stdout

    def test_rsa_key_from_pem_file(self, tmp_path: Path, rsa_private_pem: tuple[str, str]) -> None:
        """keys create --rsa-public-key PEM_FILE makes an RSA key with no secret."""
        db = f"sqlite:///{tmp_path / 'k.db'}"
        first = keyplane_json("init", db=db)
        pem = tmp_path / "bot.pub.pem"
        pem.write_text(rsa_private_pem[1])
        made = keyplane_json(
            "keys", "create", "--uid", str(first["uid"]), "--rsa-public-key", str(pem), db=db
        )
        assert made["secret"] == ""
        assert keyplane_json("keys", "show", made["apiKey"], db=db)["type"] == "rsa"


class TestCliAgainstLiveServer:
    def test_revoke_from_cli_applies_within_one_second(self, server: Server) -> None:
        """`keyplane keys revoke` in another process stops a live key in under 1 s."""
        api_key, secret = server.new_key()
        session = HTTP(api_key=api_key, api_secret=secret, max_retries=1, retry_delay=0)
        session.endpoint = server.url
        assert session.get_wallet_balance(accountType="UNIFIED")["retCode"] == 0
        env = {"KEYPLANE_KEK": server.kek_b64}
        result = keyplane("keys", "revoke", api_key, db=server.db_url, env=env)
        assert result.returncode == 0, result.stderr
        assert within_one_second(lambda: session.get_wallet_balance(accountType="UNIFIED")) == 10003

    def test_cli_key_works_with_pybit(self, server: Server) -> None:
        """A key made by the CLI against the live database authenticates pybit at once."""
        env = {"KEYPLANE_KEK": server.kek_b64}
        made = keyplane_json(
            "keys",
            "create",
            "--uid",
            str(server.uid),
            "--permissions",
            "Spot:SpotTrade",
            db=server.db_url,
            env=env,
        )
        session = HTTP(api_key=made["apiKey"], api_secret=made["secret"], max_retries=1)
        session.endpoint = server.url
        assert session.get_wallet_balance(accountType="UNIFIED")["retCode"] == 0
        deadline = time.monotonic() + 3
        while not (
            shown := keyplane_json("keys", "show", made["apiKey"], db=server.db_url, env=env)
        )["lastUsedAt"]:
            assert time.monotonic() < deadline, "lastUsedAt not recorded within ~1 s flushes"
            time.sleep(0.2)
        assert shown["lastUsedAt"].endswith("Z")

    @pytest.mark.parametrize("kind", ["wrong-kek"])
    def test_wrong_kek_cannot_issue_usable_keys(self, server: Server, kind: str) -> None:
        """A key made under a different KEK does not verify on the server (10003 or 10016)."""
        assert kind == "wrong-kek"
        other = subprocess.run(
            [sys.executable, "-m", "keyplane", "kek", "generate"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        made = keyplane_json(
            "keys",
            "create",
            "--uid",
            str(server.uid),
            db=server.db_url,
            env={"KEYPLANE_KEK": other},
        )
        session = HTTP(api_key=made["apiKey"], api_secret=made["secret"], max_retries=1)
        session.endpoint = server.url
        with pytest.raises(InvalidRequestError) as info:
            session.get_wallet_balance(accountType="UNIFIED")
        assert info.value.status_code == 10016
