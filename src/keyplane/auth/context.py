"""What a verified request carries into the route handlers."""

from __future__ import annotations

from typing import NamedTuple

from keyplane.keys.model import Account, ApiKey

__all__ = ["AUTH_SCOPE_KEY", "PARAMS_SCOPE_KEY", "AuthContext"]

#: ASGI scope keys set by the auth middleware.
AUTH_SCOPE_KEY = "keyplane.auth"
PARAMS_SCOPE_KEY = "keyplane.params"


class AuthContext(NamedTuple):
    """The verified caller: its key, account and the client IP it came from."""

    key: ApiKey
    account: Account
    client_ip: str

    @property
    def uid(self) -> int:
        """The account uid the key belongs to."""
        return self.key.uid

    @property
    def is_master(self) -> bool:
        """True when the key belongs to a master account."""
        return self.account.is_master
