"""Key lifecycle: accounts, issuing, updating, rotating and revoking API keys.

This is the one place that turns operator or API requests into store writes. Secrets are
generated here, encrypted under the key-encryption key before they reach the store, and handed
back exactly once (IssuedKey.secret).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from keyplane.auth.pipeline import HmacVerifier, KeyEntry, RsaVerifier, Verifier
from keyplane.clock import Clock
from keyplane.errors import NotFoundError, ParameterError
from keyplane.keys import (
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
from keyplane.signing import load_rsa_public_key
from keyplane.store.protocol import Store

__all__ = ["MASTER_KEY_EXCLUDED", "InitResult", "IssuedKey", "KeyService"]

#: The first master key gets every permission except these (withdrawals need an explicit grant).
MASTER_KEY_EXCLUDED = frozenset({("Wallet", "Withdraw")})
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
        self, *, parent_uid: int | None = None, username: str = "", note: str = ""
    ) -> Account:
        """A master account, or a sub account of parent_uid (which must be a master).

        Raises NotFoundError (10001) for an unknown parent, ParameterError when the parent is
        itself a sub account.
        """
        if parent_uid is not None:
            parent = self.get_account(parent_uid)
            if not parent.is_master:
                raise ParameterError("a sub account cannot have sub accounts")
        return self.store.create_account(
            parent_uid=parent_uid, created_at_ms=self.clock.now_ms(), username=username, note=note
        )

    def update_account_limits(
        self, uid: int, rate_limits: RateOverrides, *, clear: bool = False
    ) -> Account:
        """Merge rate-limit overrides into an account (they apply to all its keys that have no
        override of their own); clear drops the old ones first."""
        account = self.get_account(uid)
        base = RateOverrides() if clear else account.rate_limits
        updated = replace(account, rate_limits=base.merged(_checked(rate_limits)))
        self.store.save_account(updated)
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
        account = self.create_account(note="first master account")
        permissions = Permissions.all_for(is_master=True, without=MASTER_KEY_EXCLUDED)
        issued = self.create_key(account.uid, note="master key", permissions=permissions)
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
    ) -> IssuedKey:
        """Issue a key for account uid: HMAC with a new secret, or RSA with the given PEM.

        Raises NotFoundError for an unknown uid; ParameterError (10001) for a grant the account
        kind may not hold, a note over 64 chars, or an invalid RSA public key.
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
        )
        return IssuedKey(key=self.store.add_key(draft), secret=secret)

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
    ) -> ApiKey:
        """Change a live key's settings; None leaves a field as it is.

        rate_limits are merged into the key's overrides (clear_rate_limits drops the old ones
        first); each must name a rate-limited route (keyplane.policy).

        Saving ips restarts the expiry rule: unbound -> 90 days from now, bound -> never.
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
        updated = key.with_changes(**changes)
        self.store.save_key(updated)
        return updated

    def rotate_key(self, api_key: str) -> IssuedKey:
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
        )

    def revoke_key(self, api_key: str) -> ApiKey:
        """Revoke a key for good (the row is kept for audit). Revoking twice is a no-op."""
        key = self.get_key(api_key)
        if key.status is KeyStatus.REVOKED:
            return key
        now = self.clock.now_ms()
        revoked = key.with_changes(status=KeyStatus.REVOKED, revoked_at_ms=now, updated_at_ms=now)
        self.store.save_key(revoked)
        return revoked

    def suspend_key(self, api_key: str) -> ApiKey:
        """Suspend a key: every node refuses it with retCode 10007 within 1 s until resumed.

        Suspending a suspended key is a no-op; raises ParameterError (10001) for a revoked key
        and NotFoundError for an unknown one.
        """
        return self._set_key_status(api_key, KeyStatus.SUSPENDED)

    def resume_key(self, api_key: str) -> ApiKey:
        """Lift a suspension (the key works again on every node within 1 s). Resuming an active
        key is a no-op; raises ParameterError (10001) for a revoked key."""
        return self._set_key_status(api_key, KeyStatus.ACTIVE)

    def _set_key_status(self, api_key: str, status: KeyStatus) -> ApiKey:
        key = self.get_key(api_key)
        if key.status is KeyStatus.REVOKED:
            raise ParameterError(f"key {api_key} is revoked; a revoked key cannot change status")
        if key.status is status:
            return key
        changed = key.with_changes(status=status, updated_at_ms=self.clock.now_ms())
        self.store.save_key(changed)
        return changed

    def set_account_frozen(self, uid: int, frozen: bool) -> Account:
        """Freeze (every key of the account gets retCode 10007) or unfreeze an account."""
        account = self.get_account(uid)
        status = AccountStatus.FROZEN if frozen else AccountStatus.ACTIVE
        if account.status is status:
            return account
        changed = replace(account, status=status)
        self.store.save_account(changed)
        return changed

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
        return HmacVerifier.from_secret(
            self.kek.decrypt(key.secret_ciphertext or b"", associated=key.api_key)
        )

    def _live_key(self, api_key: str) -> ApiKey:
        key = self.get_key(api_key)
        if key.status is KeyStatus.REVOKED:
            raise ParameterError(f"api key {api_key} is revoked")
        return key


def _checked(overrides: RateOverrides) -> RateOverrides:
    check_rate_overrides(overrides)
    return overrides


def _check_note(note: str) -> None:
    if len(note) > _MAX_NOTE:
        raise ParameterError(f"note must be at most {_MAX_NOTE} characters")
