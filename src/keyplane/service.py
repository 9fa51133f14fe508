"""Key lifecycle: accounts, issuing, updating, rotating and revoking API keys.

This is the one place that turns operator or API requests into store writes. Secrets are
generated here, encrypted under the key-encryption key before they reach the store, and handed
back exactly once (IssuedKey.secret).

Every mutation also builds its AuditEvent (actor, action, target, changed fields before/after,
source IP; never a secret) and hands it to the store, which writes it in the same transaction
as the change (keyplane.audit, keyplane.store). actor: "admin:<name>" (CLI), "key:<api_key>"
(the calling key on /v5/user/*) or "system:<rule>".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from keyplane.audit import AuditAction, AuditEvent, ChainReport, CheckpointSigner, verify_chain
from keyplane.audit.changes import account_fields, changed, key_fields
from keyplane.auth.pipeline import KeyEntry, RsaVerifier, Verifier
from keyplane.clock import Clock
from keyplane.errors import NotFoundError, ParameterError
from keyplane.keys import (
    DAY_MS,
    Account,
    AccountStatus,
    ApiKey,
    IpAllowlist,
    KeyEncryptionKey,
    KeyStatus,
    KeyType,
    Permissions,
    RateOverrides,
    expiry_for,
    new_api_key,
    new_hmac_secret,
)
from keyplane.policy import check_rate_overrides
from keyplane.secret import Secret
from keyplane.signing import HmacKey, load_rsa_public_key
from keyplane.store.protocol import PurgeResult, Store

__all__ = [
    "MASTER_KEY_EXCLUDED",
    "MIN_ALERT_RETENTION_DAYS",
    "InitResult",
    "IssuedKey",
    "KeyService",
]

#: actor of changes made without a named caller (library use, tests).
DEFAULT_ACTOR = "admin:cli"

#: The first master key gets every permission except these (withdrawals need an explicit grant).
MASTER_KEY_EXCLUDED = frozenset({("Wallet", "Withdraw")})
#: shortest alert-log retention, days: a quota or rate alert's window is one UTC day (the row
#: dedupes it until the day ends), so a row must outlive its day with a day of margin for
#: nodes whose clocks differ; expiry rows are kept until the key's expiry (Store.purge_alerts).
MIN_ALERT_RETENTION_DAYS = 2
_MAX_NOTE = 64
_NO_PERMISSIONS = Permissions()
_UNBOUND = IpAllowlist()
_NO_OVERRIDES = RateOverrides()


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A freshly issued key. secret: the HMAC secret, shown once; None for RSA keys."""

    key: ApiKey
    secret: Secret[str] | None


@dataclass(frozen=True, slots=True)
class InitResult:
    """What `keyplane init` made on an empty store."""

    account: Account
    issued: IssuedKey


class KeyService:
    """Lifecycle operations over a Store; times from the injected clock (ms since epoch)."""

    def __init__(self, store: Store, kek: KeyEncryptionKey, clock: Clock) -> None:
        self.store = store
        self.kek = kek
        self.clock = clock

    # accounts -------------------------------------------------------------------------------
    def create_account(
        self,
        *,
        parent_uid: int | None = None,
        username: str = "",
        note: str = "",
        actor: str = DEFAULT_ACTOR,
        source_ip: str | None = None,
    ) -> Account:
        """A master account, or a sub account of parent_uid (which must be a master).

        Audited as account.create by actor. Raises NotFoundError (10001) for an unknown parent,
        ParameterError when the parent is itself a sub account.
        """
        if parent_uid is not None:
            parent = self.get_account(parent_uid)
            if not parent.is_master:
                raise ParameterError("a sub account cannot have sub accounts")
        now = self.clock.now_ms()

        def audit(account: Account) -> list[AuditEvent]:
            after = account_fields(account)
            return [_event(now, actor, AuditAction.ACCOUNT_CREATE, account, {}, after, source_ip)]

        return self.store.create_account(
            parent_uid=parent_uid, created_at_ms=now, username=username, note=note, audit=audit
        )

    def update_account_limits(
        self,
        uid: int,
        rate_limits: RateOverrides,
        *,
        clear: bool = False,
        actor: str = DEFAULT_ACTOR,
        source_ip: str | None = None,
    ) -> Account:
        """Merge rate-limit overrides into an account (they apply to all its keys that have no
        override of their own); clear drops the old ones first. Audited as account.update."""
        account = self.get_account(uid)
        base = RateOverrides() if clear else account.rate_limits
        updated = replace(account, rate_limits=base.merged(_checked(rate_limits)))
        before, after = changed(account_fields(account), account_fields(updated))
        event = _event(
            self.clock.now_ms(),
            actor,
            AuditAction.ACCOUNT_UPDATE,
            account,
            before,
            after,
            source_ip,
        )
        self.store.save_account(updated, audit=[event])
        return updated

    def get_account(self, uid: int) -> Account:
        """The account uid; raises NotFoundError (10001) when unknown."""
        account = self.store.find_account(uid)
        if account is None:
            raise NotFoundError(f"account {uid} does not exist")
        return account

    def initialize(self) -> InitResult | None:
        """On an empty store: create the first master account and its master key.

        The key has every permission a master may hold except Wallet:Withdraw, and is unbound
        (so it expires in 90 days). Returns None when the store already has accounts.
        """
        if self.store.count_accounts() > 0:
            return None
        actor = "system:init"
        account = self.create_account(note="first master account", actor=actor)
        permissions = Permissions.all_for(is_master=True, without=MASTER_KEY_EXCLUDED)
        issued = self.create_key(
            account.uid, note="master key", permissions=permissions, actor=actor
        )
        return InitResult(account=account, issued=issued)

    # keys -----------------------------------------------------------------------------------
    def create_key(
        self,
        uid: int,
        *,
        note: str = "",
        read_only: bool = False,
        permissions: Permissions = _NO_PERMISSIONS,
        ips: IpAllowlist = _UNBOUND,
        rsa_public_key: str | None = None,
        rate_limits: RateOverrides = _NO_OVERRIDES,
        daily_quota: int | None = None,
        replay_guard: bool = False,
        actor: str = DEFAULT_ACTOR,
        source_ip: str | None = None,
        rotated_from: str | None = None,
    ) -> IssuedKey:
        """Issue a key for account uid: HMAC with a new secret, or RSA with the given PEM.

        Audited as key.create (after: the key's settings, never the secret); with rotated_from
        (an api_key) also as key.rotate on that key, in the same transaction.
        daily_quota: requests per UTC day, None or 0 for none. replay_guard: refuse repeated
        signatures (10014). Raises NotFoundError for an unknown uid; ParameterError (10001) for a
        grant the account kind may not hold, a note over 64 chars, a negative quota, or an
        invalid RSA public key.
        """
        account = self.get_account(uid)
        permissions.check_account_kind(is_master=account.is_master)
        _check_note(note)
        now = self.clock.now_ms()
        api_key = new_api_key()
        secret: Secret[str] | None = None
        ciphertext: bytes | None = None
        if rsa_public_key is not None:
            try:
                load_rsa_public_key(rsa_public_key)
            except ValueError as exc:
                raise ParameterError(f"invalid RSA public key: {exc}") from exc
            key_type = KeyType.RSA
            rsa_public_key = rsa_public_key.strip() + "\n"
        else:
            key_type = KeyType.HMAC
            secret = new_hmac_secret()
            ciphertext = self.kek.encrypt(secret, associated=api_key)
        draft = ApiKey(
            id=0,
            api_key=api_key,
            uid=uid,
            key_type=key_type,
            read_only=read_only,
            permissions=permissions,
            ips=ips,
            created_at_ms=now,
            expires_at_ms=expiry_for(ips, since_ms=now),
            note=note,
            secret_ciphertext=ciphertext,
            rsa_public_key=rsa_public_key,
            updated_at_ms=now,
            rate_limits=_checked(rate_limits),
            daily_quota=_checked_quota(daily_quota),
            replay_guard=replay_guard,
        )
        after = key_fields(draft)
        events = [_event(now, actor, AuditAction.KEY_CREATE, draft, {}, after, source_ip)]
        if rotated_from is not None:
            events[0] = replace(events[0], after={**after, "rotatedFrom": rotated_from})
            events.append(
                AuditEvent(
                    at_ms=now,
                    actor=actor,
                    action=AuditAction.KEY_ROTATE,
                    target=f"key:{rotated_from}",
                    after={"rotatedTo": api_key},
                    source_ip=source_ip,
                )
            )
        return IssuedKey(key=self.store.add_key(draft, audit=events), secret=secret)

    def find_key(self, api_key: str) -> ApiKey | None:
        """The key record (any status), or None."""
        return self.store.find_key(api_key)

    def get_key(self, api_key: str) -> ApiKey:
        """The key record; raises NotFoundError (10001) when unknown."""
        key = self.store.find_key(api_key)
        if key is None:
            raise NotFoundError(f"api key {api_key} does not exist")
        return key

    def update_key(
        self,
        api_key: str,
        *,
        read_only: bool | None = None,
        permissions: Permissions | None = None,
        ips: IpAllowlist | None = None,
        note: str | None = None,
        rate_limits: RateOverrides | None = None,
        clear_rate_limits: bool = False,
        daily_quota: int | None = None,
        replay_guard: bool | None = None,
        actor: str = DEFAULT_ACTOR,
        source_ip: str | None = None,
    ) -> ApiKey:
        """Change a live key's settings; None leaves a field as it is.

        rate_limits are merged into the key's overrides (clear_rate_limits drops the old ones
        first); each must name a rate-limited route (keyplane.policy). daily_quota: requests
        per UTC day, 0 removes the quota. replay_guard: refuse repeated signatures (10014).

        Saving ips restarts the expiry rule: unbound -> 90 days from now, bound -> never.
        Audited as key.update with the changed fields before/after.
        Raises NotFoundError, ParameterError (revoked key, grant not allowed, note too long).
        """
        key = self._live_key(api_key)
        account = self.get_account(key.uid)
        changes: dict[str, object] = {"updated_at_ms": self.clock.now_ms()}
        if read_only is not None:
            changes["read_only"] = read_only
        if permissions is not None:
            permissions.check_account_kind(is_master=account.is_master)
            changes["permissions"] = permissions
        if ips is not None:
            changes["ips"] = ips
            changes["expires_at_ms"] = expiry_for(ips, since_ms=self.clock.now_ms())
        if note is not None:
            _check_note(note)
            changes["note"] = note
        if rate_limits is not None or clear_rate_limits:
            base = RateOverrides() if clear_rate_limits else key.rate_limits
            changes["rate_limits"] = base.merged(_checked(rate_limits or RateOverrides()))
        if daily_quota is not None:
            changes["daily_quota"] = _checked_quota(daily_quota)
        if replay_guard is not None:
            changes["replay_guard"] = replay_guard
        updated = key.with_changes(**changes)
        before, after = changed(key_fields(key), key_fields(updated))
        event = _event(
            self.clock.now_ms(), actor, AuditAction.KEY_UPDATE, key, before, after, source_ip
        )
        self.store.save_key(updated, audit=[event])
        return updated

    def rotate_key(
        self, api_key: str, *, actor: str = DEFAULT_ACTOR, source_ip: str | None = None
    ) -> IssuedKey:
        """Issue a new key with the same account, permissions, IPs, readOnly, note and limits.

        The old key stays valid until revoked (zero-downtime rotation). RSA keys cannot be
        rotated here: upload a new public key instead (ParameterError).
        """
        old = self._live_key(api_key)
        if old.key_type is KeyType.RSA:
            raise ParameterError("RSA keys are rotated by creating a key with a new public key")
        return self.create_key(
            old.uid,
            note=old.note,
            read_only=old.read_only,
            permissions=old.permissions,
            ips=old.ips,
            rate_limits=old.rate_limits,
            daily_quota=old.daily_quota,
            replay_guard=old.replay_guard,
            actor=actor,
            source_ip=source_ip,
            rotated_from=old.api_key,
        )

    def revoke_key(
        self,
        api_key: str,
        *,
        actor: str = DEFAULT_ACTOR,
        source_ip: str | None = None,
        deleted: bool = False,
    ) -> ApiKey:
        """Revoke a key for good (the row is kept, listed as revoked, until `keyplane
        maintenance purge`). Audited as key.revoke, or key.delete when deleted (the
        /v5/user/delete-* routes). Revoking twice is a no-op and writes nothing."""
        key = self.get_key(api_key)
        if key.status is KeyStatus.REVOKED:
            return key
        now = self.clock.now_ms()
        revoked = key.with_changes(status=KeyStatus.REVOKED, revoked_at_ms=now, updated_at_ms=now)
        action = AuditAction.KEY_DELETE if deleted else AuditAction.KEY_REVOKE
        before, after = changed(key_fields(key), key_fields(revoked))
        self.store.save_key(
            revoked, audit=[_event(now, actor, action, key, before, after, source_ip)]
        )
        return revoked

    def suspend_key(
        self,
        api_key: str,
        *,
        actor: str = DEFAULT_ACTOR,
        source_ip: str | None = None,
        preceding: Sequence[AuditEvent] = (),
    ) -> ApiKey:
        """Suspend a key: every node refuses it with retCode 10007 within 1 s until resumed.

        preceding: audit events stored just before the key.suspend event, in the same
        transaction (the anomaly flag that caused it); stored even when the key was already
        suspended. Suspending a suspended key is otherwise a no-op; raises ParameterError (10001)
        for a revoked key and NotFoundError for an unknown one (then nothing is stored).
        """
        return self._set_key_status(api_key, KeyStatus.SUSPENDED, actor, source_ip, preceding)

    def resume_key(
        self, api_key: str, *, actor: str = DEFAULT_ACTOR, source_ip: str | None = None
    ) -> ApiKey:
        """Lift a suspension (the key works again on every node within 1 s). Resuming an active
        key is a no-op; raises ParameterError (10001) for a revoked key."""
        return self._set_key_status(api_key, KeyStatus.ACTIVE, actor, source_ip)

    def _set_key_status(
        self,
        api_key: str,
        status: KeyStatus,
        actor: str,
        source_ip: str | None,
        preceding: Sequence[AuditEvent] = (),
    ) -> ApiKey:
        key = self.get_key(api_key)
        if key.status is KeyStatus.REVOKED:
            raise ParameterError(f"key {api_key} is revoked; a revoked key cannot change status")
        if key.status is status:
            if preceding:
                self.store.append_audit(preceding)
            return key
        now = self.clock.now_ms()
        updated = key.with_changes(status=status, updated_at_ms=now)
        action = (
            AuditAction.KEY_SUSPEND if status is KeyStatus.SUSPENDED else AuditAction.KEY_RESUME
        )
        before, after = changed(key_fields(key), key_fields(updated))
        self.store.save_key(
            updated, audit=[*preceding, _event(now, actor, action, key, before, after, source_ip)]
        )
        return updated

    def set_account_frozen(
        self,
        uid: int,
        frozen: bool,
        *,
        actor: str = DEFAULT_ACTOR,
        source_ip: str | None = None,
    ) -> Account:
        """Freeze (every key of the account gets retCode 10007) or unfreeze an account.

        Audited as account.freeze / account.unfreeze; a no-op change writes nothing.
        """
        account = self.get_account(uid)
        status = AccountStatus.FROZEN if frozen else AccountStatus.ACTIVE
        if account.status is status:
            return account
        updated = replace(account, status=status)
        action = AuditAction.ACCOUNT_FREEZE if frozen else AuditAction.ACCOUNT_UNFREEZE
        before, after = changed(account_fields(account), account_fields(updated))
        event = _event(self.clock.now_ms(), actor, action, account, before, after, source_ip)
        self.store.save_account(updated, audit=[event])
        return updated

    # audit ----------------------------------------------------------------------------------
    def record_security_event(
        self,
        action: str,
        *,
        target: str,
        actor: str,
        details: Mapping[str, Any] | None = None,
        source_ip: str | None = None,
    ) -> None:
        """Append a security event (anomaly flag, signature burst, admin login) with no other
        change; details go in `after` (never secrets: ValueError for a secret field)."""
        self.store.append_audit(
            [
                self.security_event(
                    action, target=target, actor=actor, details=details, source_ip=source_ip
                )
            ]
        )

    def security_event(
        self,
        action: str,
        *,
        target: str,
        actor: str,
        details: Mapping[str, Any] | None = None,
        source_ip: str | None = None,
    ) -> AuditEvent:
        """The AuditEvent record_security_event would append (at_ms: now), for callers that
        store it with another change (suspend_key's `preceding`)."""
        return AuditEvent(
            at_ms=self.clock.now_ms(),
            actor=actor,
            action=action,
            target=target,
            after=dict(details or {}),
            source_ip=source_ip,
        )

    def verify_audit(self) -> ChainReport:
        """Walk the whole audit chain from the latest purge checkpoint (its signature checked
        under this KEK) and report the first broken row, if any."""
        return verify_chain(
            self.store.iter_audit(), self.store.find_audit_checkpoint(), CheckpointSigner(self.kek)
        )

    def purge(
        self,
        *,
        retention_days: int,
        usage_retention_days: int | None = None,
        alert_retention_days: int | None = None,
        actor: str = DEFAULT_ACTOR,
    ) -> PurgeResult:
        """Delete audit rows and revoked keys older than retention_days (days before now),
        usage rows older than usage_retention_days and alert rows older than
        alert_retention_days (None: keep them; Store.purge_alerts: an expiry alert also stays
        until its key's expiry is that old, so no alert is ever sent twice).

        The audit rows purged are the longest prefix of the chain older than the cutoff; a
        checkpoint of its last row, signed under the KEK, keeps the rest verifiable. Audited as
        maintenance.purge (in the same transaction as the audit and key deletion; usage and
        alert rows go first, in their own batches, and are counted in that event). Raises
        ParameterError when a retention is below 1 day, or the alert retention below
        MIN_ALERT_RETENTION_DAYS (2).
        """
        if retention_days < 1 or (usage_retention_days is not None and usage_retention_days < 1):
            raise ParameterError("retention must be at least 1 day")
        if alert_retention_days is not None and alert_retention_days < MIN_ALERT_RETENTION_DAYS:
            raise ParameterError(
                f"alert retention must be at least {MIN_ALERT_RETENTION_DAYS} days"
            )
        now = self.clock.now_ms()
        usage_rows = 0
        if usage_retention_days is not None:
            usage_rows = self.store.purge_usage(before_ms=now - usage_retention_days * DAY_MS)
        alert_rows = 0
        if alert_retention_days is not None:
            alert_rows = self.store.purge_alerts(before_ms=now - alert_retention_days * DAY_MS)
        cutoff = now - retention_days * DAY_MS
        last = None
        for record in self.store.iter_audit():
            if record.event.at_ms >= cutoff:
                break
            last = record
        checkpoint = None
        if last is not None:
            signer = CheckpointSigner(self.kek)
            checkpoint = signer.sign(through_id=last.id, last_row_hash=last.row_hash, at_ms=now)
        keys = [
            k.api_key
            for k in self.store.list_keys()
            if k.status is KeyStatus.REVOKED
            and k.revoked_at_ms is not None
            and k.revoked_at_ms < cutoff
        ]
        after = {
            "retentionDays": retention_days,
            "cutoffMs": cutoff,
            "auditThroughId": 0 if last is None else last.id,
            "keys": keys,
            "usageRows": usage_rows,
            "alertRows": alert_rows,
        }
        event = AuditEvent(now, actor, AuditAction.MAINTENANCE_PURGE, "", after=after)
        result = self.store.purge(
            checkpoint=checkpoint, keys_revoked_before_ms=cutoff, audit=[event]
        )
        return replace(result, usage_rows=usage_rows, alert_rows=alert_rows)

    def key_entry(self, api_key: str) -> KeyEntry | None:
        """Load a key with its account and verifier for the hot path; None when unknown.

        Decrypts the HMAC secret (raises SecretDecryptionError under a wrong KEK).
        """
        key = self.store.find_key(api_key)
        if key is None:
            return None
        account = self.store.find_account(key.uid)
        if account is None:
            return None
        return KeyEntry(key=key, account=account, verifier=self._verifier(key))

    def _verifier(self, key: ApiKey) -> Verifier:
        if key.key_type is KeyType.RSA:
            return RsaVerifier(load_rsa_public_key(key.rsa_public_key or ""))
        return HmacKey(self.kek.decrypt(key.secret_ciphertext or b"", associated=key.api_key))

    def _live_key(self, api_key: str) -> ApiKey:
        key = self.get_key(api_key)
        if key.status is KeyStatus.REVOKED:
            raise ParameterError(f"api key {api_key} is revoked")
        return key


def _event(
    at_ms: int,
    actor: str,
    action: AuditAction,
    subject: ApiKey | Account,
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    source_ip: str | None,
) -> AuditEvent:
    """An event about a key (target "key:<api_key>") or an account ("account:<uid>")."""
    target = f"key:{subject.api_key}" if isinstance(subject, ApiKey) else f"account:{subject.uid}"
    return AuditEvent(at_ms, actor, action, target, before, after, source_ip)


def _checked(overrides: RateOverrides) -> RateOverrides:
    check_rate_overrides(overrides)
    return overrides


def _check_note(note: str) -> None:
    if len(note) > _MAX_NOTE:
        raise ParameterError(f"note must be at most {_MAX_NOTE} characters")


#: largest daily request quota accepted (about 11.5k requests per second, all day).
MAX_DAILY_QUOTA = 1_000_000_000


def _checked_quota(quota: int | None) -> int | None:
    """A daily quota as stored: None for no quota (given None or 0); ParameterError when
    negative or above MAX_DAILY_QUOTA."""
    if not quota:
        return None
    if quota < 0 or quota > MAX_DAILY_QUOTA:
        raise ParameterError(f"daily quota must be between 0 (none) and {MAX_DAILY_QUOTA}")
    return quota
