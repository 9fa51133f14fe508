"""KeyService records every key and account change in the audit trail (memory store)."""

from __future__ import annotations

import json

import pytest

from keyplane.clock import FrozenClock
from keyplane.errors import ParameterError
from keyplane.keys import DAY_MS, IpAllowlist, KeyEncryptionKey, Permissions
from keyplane.service import KeyService
from keyplane.store import MemoryStore


@pytest.fixture
def service() -> KeyService:
    return KeyService(MemoryStore(), KeyEncryptionKey.generate(), FrozenClock())


class TestServiceAudit:
    def test_every_change_is_recorded_with_actor_and_changed_fields(
        self, service: KeyService
    ) -> None:
        """create, update, suspend, resume, rotate, revoke, freeze: one row each, in order."""
        account = service.create_account(actor="admin:ops")
        issued = service.create_key(
            account.uid, permissions=Permissions.parse("Spot:SpotTrade"), actor="admin:ops"
        )
        api_key = issued.key.api_key
        service.update_key(
            api_key,
            read_only=True,
            ips=IpAllowlist.parse("10.0.0.1"),
            actor=f"key:{api_key}",
            source_ip="10.0.0.1",
        )
        service.suspend_key(api_key)
        service.resume_key(api_key)
        rotated = service.rotate_key(api_key)
        service.revoke_key(api_key)
        service.revoke_key(api_key)  # no-op: nothing recorded
        service.set_account_frozen(account.uid, True)
        rows = service.store.list_audit()
        assert [r.event.action for r in rows] == [
            "account.create",
            "key.create",
            "key.update",
            "key.suspend",
            "key.resume",
            "key.create",
            "key.rotate",
            "key.revoke",
            "account.freeze",
        ]
        create = rows[1].event
        assert (create.actor, create.target, create.before) == ("admin:ops", f"key:{api_key}", {})
        assert create.after["permissions"]["Spot"] == ["SpotTrade"]
        update = rows[2].event
        assert update.source_ip == "10.0.0.1"
        assert update.before == {
            "readOnly": 0,
            "ips": ["*"],
            "expiresAtMs": update.before["expiresAtMs"],
        }
        assert update.after == {"readOnly": 1, "ips": ["10.0.0.1"], "expiresAtMs": None}
        assert rows[6].event.after == {"rotatedTo": rotated.key.api_key}
        assert rows[7].event.before == {"status": "active"}
        assert rows[7].event.after["status"] == "revoked"
        assert service.verify_audit().intact
        assert issued.secret is not None
        dumped = json.dumps([r.to_json() for r in rows])
        assert issued.secret.reveal() not in dumped

    def test_purge_drops_old_rows_and_keys_and_stays_verifiable(self, service: KeyService) -> None:
        """Rows and revoked keys older than the retention go; the chain still verifies."""
        clock = service.clock
        assert isinstance(clock, FrozenClock)
        account = service.create_account()
        old = service.create_key(account.uid).key.api_key
        service.revoke_key(old)
        clock.advance(100 * DAY_MS)
        recent = service.create_key(account.uid).key.api_key
        result = service.purge(retention_days=90)
        assert result.audit_rows == 3
        assert result.keys == (old,)
        assert service.find_key(old) is None
        assert service.find_key(recent) is not None
        report = service.verify_audit()
        assert report.intact
        assert report.checkpoint_id == 3
        assert [r.event.action for r in service.store.list_audit()] == [
            "key.create",
            "maintenance.purge",
        ]


def test_purge_refuses_an_alert_retention_below_two_days(service: KeyService) -> None:
    """A quota or rate alert's window is a UTC day: a retention under 2 days is a
    ParameterError and nothing is purged."""
    with pytest.raises(ParameterError, match="at least 2 days"):
        service.purge(retention_days=90, alert_retention_days=1)
    assert [r.event.action for r in service.store.list_audit()] == []
