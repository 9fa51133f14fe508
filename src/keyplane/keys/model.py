"""Accounts and API keys as immutable records, plus the expiry rule for unbound keys."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum

from keyplane.keys.ips import IpAllowlist
from keyplane.keys.limits import RateOverrides
from keyplane.keys.permissions import Permissions

__all__ = [
    "DAY_MS",
    "UNBOUND_KEY_LIFETIME_MS",
    "Account",
    "AccountStatus",
    "ApiKey",
    "KeyStatus",
    "KeyType",
    "expiry_for",
    "iso_utc",
]

DAY_MS = 86_400_000
#: rule: Bybit, "API keys without IP binding expire after 90 days".
UNBOUND_KEY_LIFETIME_MS = 90 * DAY_MS


class KeyType(StrEnum):
    """How a key signs: HMAC-SHA256 with a system secret, or RSA with the user's private key."""

    HMAC = "hmac"
    RSA = "rsa"


class KeyStatus(StrEnum):
    """Lifecycle state. Revoked is final; suspended can be resumed."""

    ACTIVE = "active"
    SUSPENDED = "suspended"
    REVOKED = "revoked"


class AccountStatus(StrEnum):
    """Account state; a frozen account's keys fail with retCode 10007."""

    ACTIVE = "active"
    FROZEN = "frozen"


@dataclass(frozen=True, slots=True)
class Account:
    """A master account (parent_uid None) or a sub account of one.

    uid: int; created_at_ms: int, ms since epoch.
    """

    uid: int
    parent_uid: int | None
    created_at_ms: int
    username: str = ""
    note: str = ""
    status: AccountStatus = AccountStatus.ACTIVE
    rate_limits: RateOverrides = field(default_factory=RateOverrides)

    @property
    def is_master(self) -> bool:
        """True for a master account."""
        return self.parent_uid is None


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One API key. Holds no plaintext secret: HMAC secrets live only as `secret_ciphertext`.

    id: int, assigned by the store (0 before insert). api_key: str, 18 alphanumerics.
    created_at_ms / expires_at_ms / revoked_at_ms / last_used_at_ms: int ms since epoch or None.
    daily_quota: int requests per UTC day, or None for no quota (keyplane.quota; 10006 once spent).
    replay_guard: bool, refuse a signature seen before inside its window (10014); off by default
    because Bybit itself accepts a repeated signature.
    """

    id: int
    api_key: str
    uid: int
    key_type: KeyType
    read_only: bool
    permissions: Permissions
    ips: IpAllowlist
    created_at_ms: int
    expires_at_ms: int | None
    note: str = ""
    status: KeyStatus = KeyStatus.ACTIVE
    secret_ciphertext: bytes | None = field(default=None, repr=False)
    rsa_public_key: str | None = field(default=None, repr=False)
    revoked_at_ms: int | None = None
    last_used_at_ms: int | None = None
    updated_at_ms: int | None = None
    rate_limits: RateOverrides = field(default_factory=RateOverrides)
    daily_quota: int | None = None
    replay_guard: bool = False

    def with_changes(self, **changes: object) -> ApiKey:
        """A copy with the given fields replaced."""
        return replace(self, **changes)  # type: ignore[arg-type]

    def is_expired(self, now_ms: int) -> bool:
        """True when the key has an expiry and now_ms is at or past it."""
        return self.expires_at_ms is not None and now_ms >= self.expires_at_ms

    def deadline_days(self, now_ms: int) -> int:
        """Days left before expiry (rounded up), 0 when expired or never expiring."""
        if self.expires_at_ms is None:
            return 0
        return max(0, math.ceil((self.expires_at_ms - now_ms) / DAY_MS))


def expiry_for(ips: IpAllowlist, *, since_ms: int) -> int | None:
    """expires_at_ms for a key saved at since_ms: unbound keys 90 days later, bound keys never.

    rule: Bybit, unbound keys expire 90 days after creation; re-saving "no IP" restarts the 90 days.
    """
    return None if ips.is_bound else since_ms + UNBOUND_KEY_LIFETIME_MS


def iso_utc(ms: int | None) -> str:
    """ms since epoch -> "2023-11-14T22:13:20Z" (Bybit's createdAt form); None -> ""."""
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
