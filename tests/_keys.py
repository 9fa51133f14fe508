"""Issuing test keys the way every test suite here needs them."""

from __future__ import annotations

from keyplane.keys import IpAllowlist, Permissions
from keyplane.service import KeyService

__all__ = ["TRADE_PERMISSIONS", "issue_key"]

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
