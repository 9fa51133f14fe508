"""API keys: the record, permissions, IP binding, expiry, generation and secrets at rest."""

from keyplane.keys.encryption import KeyEncryptionKey, SecretDecryptionError
from keyplane.keys.generation import new_api_key, new_hmac_secret
from keyplane.keys.ips import IpAllowlist
from keyplane.keys.limits import RateOverrides
from keyplane.keys.model import (
    DAY_MS,
    UNBOUND_KEY_LIFETIME_MS,
    Account,
    AccountStatus,
    ApiKey,
    KeyStatus,
    KeyType,
    expiry_for,
    iso_utc,
)
from keyplane.keys.permissions import GROUPS, Permissions

__all__ = [
    "DAY_MS",
    "GROUPS",
    "UNBOUND_KEY_LIFETIME_MS",
    "Account",
    "AccountStatus",
    "ApiKey",
    "IpAllowlist",
    "KeyEncryptionKey",
    "KeyStatus",
    "KeyType",
    "Permissions",
    "RateOverrides",
    "SecretDecryptionError",
    "expiry_for",
    "iso_utc",
    "new_api_key",
    "new_hmac_secret",
]
