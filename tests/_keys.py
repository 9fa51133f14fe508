"""Issuing test keys the way every test suite here needs them."""

from __future__ import annotations

from typing import ClassVar

from keyplane.keys import IpAllowlist, Permissions
from keyplane.service import KeyService

__all__ = ["TRADE_PERMISSIONS", "KeyIssuer", "issue_key"]

TRADE_PERMISSIONS = "Spot:SpotTrade,ContractTrade:Order,Wallet:AccountTransfer"


def issue_key(
    service: KeyService,
    uid: int,
    *,
    permissions: str = TRADE_PERMISSIONS,
    read_only: bool = False,
    ips: str = "*",
    rsa_public_key: str | None = None,
) -> tuple[str, str]:
    """(apiKey, secret) of a fresh key of account uid ("" secret for an RSA key)."""
    issued = service.create_key(
        uid,
        permissions=Permissions.parse(permissions),
        read_only=read_only,
        ips=IpAllowlist.parse(ips),
        rsa_public_key=rsa_public_key,
    )
    return issued.key.api_key, issued.secret.reveal() if issued.secret else ""


class KeyIssuer:
    """Mixin for server fixtures that have a `service` and a master `uid`: new_key()."""

    service: KeyService
    uid: int
    default_permissions: ClassVar[str] = TRADE_PERMISSIONS

    def new_key(
        self,
        *,
        permissions: str | None = None,
        read_only: bool = False,
        ips: str = "*",
        uid: int | None = None,
        rsa_public_key: str | None = None,
    ) -> tuple[str, str]:
        """(apiKey, secret) of a fresh key on the master account (or uid); "" secret for RSA."""
        return issue_key(
            self.service,
            uid or self.uid,
            permissions=permissions or self.default_permissions,
            read_only=read_only,
            ips=ips,
            rsa_public_key=rsa_public_key,
        )
