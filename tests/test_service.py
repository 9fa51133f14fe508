"""Key lifecycle rules in KeyService, on the in-memory store with a frozen clock."""

from __future__ import annotations

import pytest

from keyplane.clock import FrozenClock
from keyplane.errors import NotFoundError, ParameterError
from keyplane.keys import (
    DAY_MS,
    AccountStatus,
    IpAllowlist,
    KeyEncryptionKey,
    KeyStatus,
    Permissions,
    RateOverrides,
)
from keyplane.service import KeyService
from keyplane.store import MemoryStore


@pytest.fixture
def service() -> KeyService:
    return KeyService(MemoryStore(), KeyEncryptionKey.generate(), FrozenClock(1_700_000_000_000))


class TestInitialize:
    def test_first_master_key_has_everything_but_withdraw(self, service: KeyService) -> None:
        """init makes one master account and an unbound key without Wallet:Withdraw."""
        result = service.initialize()
        assert result is not None
        key = result.issued.key
        assert result.account.is_master
        assert not key.permissions.has("Wallet", "Withdraw")
        assert key.permissions.has("Spot", "SpotTrade")
        assert key.expires_at_ms == key.created_at_ms + 90 * DAY_MS
        assert service.initialize() is None


class TestRateOverrides:
    def test_overrides_merge_clear_and_are_checked(self, service: KeyService) -> None:
        """--limit merges, --clear-limits resets, and unknown routes are 10001."""
        key = service.create_key(service.create_account().uid).key
        one = service.update_key(key.api_key, rate_limits=RateOverrides.parse("order/create=3"))
        two = service.update_key(key.api_key, rate_limits=RateOverrides.parse("/v5/account/info=7"))
        assert two.rate_limits.limits == {"/v5/order/create": 3, "/v5/account/info": 7}
        assert one.rate_limits.limits == {"/v5/order/create": 3}
        cleared = service.update_key(key.api_key, clear_rate_limits=True)
        assert cleared.rate_limits.limits == {}
        with pytest.raises(ParameterError, match="no rate-limited route"):
            service.update_key(key.api_key, rate_limits=RateOverrides.parse("market/time=5"))
        with pytest.raises(ParameterError, match="ROUTE=N"):
            RateOverrides.parse("order/create=0")


class TestQuotaAndReplayGuard:
    def test_set_clear_validate_audit_and_rotate(self, service: KeyService) -> None:
        """--daily-quota sets and 0 clears; a negative quota is 10001; both fields are audited
        and carried over by rotation."""
        key = service.create_key(service.create_account().uid).key
        assert (key.daily_quota, key.replay_guard) == (None, False)
        guarded = service.update_key(key.api_key, daily_quota=1000, replay_guard=True)
        assert (guarded.daily_quota, guarded.replay_guard) == (1000, True)
        rotated = service.rotate_key(key.api_key).key
        assert (rotated.daily_quota, rotated.replay_guard) == (1000, True)
        cleared = service.update_key(key.api_key, daily_quota=0, replay_guard=False)
        assert (cleared.daily_quota, cleared.replay_guard) == (None, False)
        with pytest.raises(ParameterError, match="daily quota"):
            service.update_key(key.api_key, daily_quota=-1)
        updates = [r.event for r in service.store.list_audit() if r.event.action == "key.update"]
        assert updates[0].before == {"dailyQuota": None, "replayGuard": 0}
        assert updates[0].after == {"dailyQuota": 1000, "replayGuard": 1}
        assert updates[-1].after == {"dailyQuota": None, "replayGuard": 0}


class TestLifecycle:
    def test_suspend_resume_and_freeze(self, service: KeyService) -> None:
        """Suspension and freezing change status (idempotently); a revoked key stays revoked."""
        uid = service.create_account().uid
        key = service.create_key(uid).key
        assert service.suspend_key(key.api_key).status is KeyStatus.SUSPENDED
        assert service.suspend_key(key.api_key).status is KeyStatus.SUSPENDED
        assert service.resume_key(key.api_key).status is KeyStatus.ACTIVE
        assert service.set_account_frozen(uid, True).status is AccountStatus.FROZEN
        assert service.set_account_frozen(uid, False).status is AccountStatus.ACTIVE
        service.revoke_key(key.api_key)
        with pytest.raises(ParameterError, match="revoked"):
            service.resume_key(key.api_key)
        with pytest.raises(ParameterError, match="revoked"):
            service.suspend_key(key.api_key)
        assert service.get_key(key.api_key).status is KeyStatus.REVOKED

    def test_secret_is_stored_encrypted_and_verifies(self, service: KeyService) -> None:
        """The store holds ciphertext only; the hot-path entry verifies with the plaintext."""
        uid = service.create_account().uid
        issued = service.create_key(uid)
        assert issued.secret is not None
        stored = service.get_key(issued.key.api_key)
        assert stored.secret_ciphertext is not None
        assert issued.secret.reveal().encode() not in stored.secret_ciphertext
        assert issued.secret.reveal() not in repr(stored)
        entry = service.key_entry(issued.key.api_key)
        assert entry is not None

    def test_resaving_unbound_restarts_90_days(self, service: KeyService) -> None:
        """Binding removes expiry; saving unbound again expires 90 days from that moment."""
        clock = service.clock
        assert isinstance(clock, FrozenClock)
        key = service.create_key(service.create_account().uid).key
        clock.advance(30 * DAY_MS)
        bound = service.update_key(key.api_key, ips=IpAllowlist.parse("10.0.0.1"))
        assert bound.expires_at_ms is None
        clock.advance(10 * DAY_MS)
        unbound = service.update_key(key.api_key, ips=IpAllowlist())
        assert unbound.expires_at_ms == clock.now_ms() + 90 * DAY_MS

    def test_rotation_copies_settings_and_keeps_old_key(self, service: KeyService) -> None:
        """rotate issues a new key and secret with the same settings; the old stays active."""
        uid = service.create_account().uid
        old = service.create_key(
            uid,
            note="bot",
            read_only=True,
            permissions=Permissions.parse("Spot:SpotTrade"),
            ips=IpAllowlist.parse("10.0.0.0/8"),
        )
        new = service.rotate_key(old.key.api_key)
        assert new.key.api_key != old.key.api_key
        assert new.secret != old.secret
        service.update_key(old.key.api_key, rate_limits=RateOverrides.parse("order/create=3"))
        new = service.rotate_key(old.key.api_key)
        assert new.key.rate_limits.lookup("/v5/order/create", None) == 3
        for field in ("uid", "note", "read_only", "permissions", "ips"):
            assert getattr(new.key, field) == getattr(old.key, field)
        assert service.get_key(old.key.api_key).status is KeyStatus.ACTIVE

    def test_revoked_keys_stay_listed_and_cannot_change(self, service: KeyService) -> None:
        """Revocation is final; the row is kept for audit."""
        uid = service.create_account().uid
        key = service.create_key(uid).key
        service.revoke_key(key.api_key)
        assert service.get_key(key.api_key).status is KeyStatus.REVOKED
        with pytest.raises(ParameterError, match="revoked"):
            service.update_key(key.api_key, read_only=True)
        with pytest.raises(ParameterError, match="revoked"):
            service.rotate_key(key.api_key)

    def test_sub_of_sub_and_unknown_parent_refused(self, service: KeyService) -> None:
        """Only masters have sub accounts; unknown uids are NotFoundError."""
        master = service.create_account()
        sub = service.create_account(parent_uid=master.uid)
        with pytest.raises(ParameterError):
            service.create_account(parent_uid=sub.uid)
        with pytest.raises(NotFoundError):
            service.create_account(parent_uid=1)
        with pytest.raises(NotFoundError):
            service.create_key(1)
