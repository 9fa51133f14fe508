"""Before/after field dicts of keys and accounts for audit events (never secrets).

Field names are Bybit's where Bybit has one (readOnly, permissions as the permission object,
ips as a list); the rest are keyplane's (status, rateLimits, expiresAtMs).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from keyplane.keys.model import Account, ApiKey

__all__ = ["account_fields", "changed", "key_fields"]


def key_fields(key: ApiKey) -> dict[str, Any]:
    """The audited fields of a key: never secret_ciphertext or the RSA public key body."""
    return {
        "uid": key.uid,
        "type": str(key.key_type),
        "readOnly": int(key.read_only),
        "permissions": key.permissions.to_wire(),
        "ips": key.ips.to_list(),
        "note": key.note,
        "status": str(key.status),
        "rateLimits": dict(key.rate_limits.limits),
        "dailyQuota": key.daily_quota,
        "replayGuard": int(key.replay_guard),
        "expiresAtMs": key.expires_at_ms,
    }


def account_fields(account: Account) -> dict[str, Any]:
    """The audited fields of an account."""
    return {
        "uid": account.uid,
        "parentUid": account.parent_uid,
        "username": account.username,
        "note": account.note,
        "status": str(account.status),
        "rateLimits": dict(account.rate_limits.limits),
    }


def changed(
    before: Mapping[str, Any], after: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(before, after) restricted to the fields whose values differ."""
    names = [n for n in after if before.get(n) != after[n]]
    return {n: before.get(n) for n in names}, {n: after[n] for n in names}
