"""The public surface does not drift by accident: changing it means changing this test and the
CHANGELOG together. Every exported error also carries its Bybit retCode."""

from __future__ import annotations

import importlib

import pytest

from keyplane import errors

PUBLIC = {
    "keyplane.errors": {
        "ApiKeyExpiredError",
        "AuthenticationFailedError",
        "DuplicateRequestError",
        "InsufficientBalanceError",
        "InvalidApiKeyError",
        "KeyplaneError",
        "NotFoundError",
        "ParameterError",
        "PermissionDeniedError",
        "RateLimitedError",
        "RouteNotFoundError",
        "SignatureMismatchError",
        "TimestampWindowError",
        "UnmatchedIpError",
    },
    "keyplane.keys": {
        "Account",
        "AccountStatus",
        "ApiKey",
        "DAY_MS",
        "GROUPS",
        "IpAllowlist",
        "KeyEncryptionKey",
        "KeyStatus",
        "KeyType",
        "Permissions",
        "RateOverrides",
        "SecretDecryptionError",
        "UNBOUND_KEY_LIFETIME_MS",
        "expiry_for",
        "iso_utc",
        "new_api_key",
        "new_hmac_secret",
    },
    "keyplane.store": {"MemoryStore", "SqlStore", "Store", "open_store"},
    "keyplane.build": {"HOT_PATH_MODULES", "compiled_modules", "hot_path_build"},
    "keyplane.signing": {
        "HmacKey",
        "load_rsa_private_key",
        "load_rsa_public_key",
        "sign_hmac",
        "sign_rsa",
        "string_to_sign",
        "verify_hmac",
        "verify_rsa",
        "ws_string_to_sign",
    },
    "keyplane.clock": {"Clock", "FrozenClock", "OffsetClock", "SystemClock"},
    "keyplane.testing": {
        "FrozenClock",
        "MemoryStore",
        "NodeProcess",
        "free_port",
        "node_process",
        "postgres_schema",
        "running_server",
    },
    "keyplane.service": {
        "InitResult",
        "IssuedKey",
        "KeyService",
        "MASTER_KEY_EXCLUDED",
        "MIN_ALERT_RETENTION_DAYS",
    },
}

RET_CODES = {
    "ParameterError": 10001,
    "TimestampWindowError": 10002,
    "InvalidApiKeyError": 10003,
    "SignatureMismatchError": 10004,
    "PermissionDeniedError": 10005,
    "RateLimitedError": 10006,
    "AuthenticationFailedError": 10007,
    "UnmatchedIpError": 10010,
    "DuplicateRequestError": 10014,
    "KeyplaneError": 10016,
    "RouteNotFoundError": 10017,
    "ApiKeyExpiredError": 33004,
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_exports_are_locked(module: str) -> None:
    """__all__ of each public module is exactly the documented set, and every name exists."""
    mod = importlib.import_module(module)
    assert set(mod.__all__) == PUBLIC[module]
    for name in mod.__all__:
        assert hasattr(mod, name), name


@pytest.mark.parametrize(("name", "code"), sorted(RET_CODES.items()))
def test_errors_carry_bybit_ret_codes(name: str, code: int) -> None:
    """Each error class maps to the retCode in DESIGN.md §3."""
    assert getattr(errors, name).ret_code == code
