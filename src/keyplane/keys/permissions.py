"""Bybit V5 permission groups and values, with Bybit's names exactly.

Source: Bybit V5 "Create Sub UID API Key" / "Get API Key Information" (permissions object).
A key's permissions are a mapping group -> set of values; every group is always present on the
wire, `[]` when empty.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from keyplane.errors import ParameterError

__all__ = [
    "GROUPS",
    "MASTER_ONLY",
    "SUB_ONLY",
    "Permissions",
]

#: group -> allowed values (master and sub keys together); order is the wire order.
GROUPS: dict[str, tuple[str, ...]] = {
    "ContractTrade": ("Order", "Position"),
    "Spot": ("SpotTrade",),
    "Wallet": ("AccountTransfer", "SubMemberTransfer", "SubMemberTransferList", "Withdraw"),
    "Options": ("OptionsTrade",),
    "Derivatives": ("DerivativesTrade",),
    "CopyTrading": ("CopyTrading",),
    "BlockTrade": (),
    "Exchange": ("ExchangeHistory",),
    "NFT": ("NFTQueryProductList",),
    "Affiliate": (),
    "Earn": ("Earn",),
}

#: (group, value) pairs only a master account's key may hold.
MASTER_ONLY = frozenset({("Wallet", "SubMemberTransfer"), ("Wallet", "Withdraw")})
#: (group, value) pairs only a sub account's key may hold.
SUB_ONLY = frozenset({("Wallet", "SubMemberTransferList")})


@dataclass(frozen=True, slots=True)
class Permissions:
    """An immutable set of (group, value) grants."""

    grants: frozenset[tuple[str, str]] = frozenset()

    @classmethod
    def from_mapping(cls, data: Mapping[str, Iterable[str]]) -> Permissions:
        """Build from {"Spot": ["SpotTrade"], ...}.

        Raises ParameterError (10001) on an unknown group or value.
        """
        grants: set[tuple[str, str]] = set()
        for group, values in data.items():
            if group not in GROUPS:
                raise ParameterError(f"unknown permission group: {group}")
            if isinstance(values, str):
                raise ParameterError(f"permission group {group} must be a list")
            for value in values:
                if value not in GROUPS[group]:
                    raise ParameterError(f"unknown permission {group}:{value}")
                grants.add((group, value))
        return cls(frozenset(grants))

    @classmethod
    def parse(cls, text: str) -> Permissions:
        """Parse the CLI form "Spot:SpotTrade,ContractTrade:Order"; "" means none.

        Raises ParameterError (10001) on a malformed item or an unknown name.
        """
        mapping: dict[str, list[str]] = {}
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            group, sep, value = item.partition(":")
            if not sep or not value:
                raise ParameterError(f"permission must look like Group:Value, got {item!r}")
            mapping.setdefault(group.strip(), []).append(value.strip())
        return cls.from_mapping(mapping)

    @classmethod
    def all_for(cls, *, is_master: bool, without: Iterable[tuple[str, str]] = ()) -> Permissions:
        """Every grant an account of that kind may hold, less `without`."""
        excluded = set(without) | (SUB_ONLY if is_master else MASTER_ONLY)
        return cls(
            frozenset(
                (g, v) for g, values in GROUPS.items() for v in values if (g, v) not in excluded
            )
        )

    def to_wire(self) -> dict[str, list[str]]:
        """Every group present, values in Bybit's order: {"ContractTrade": ["Order"], ...}."""
        return {g: [v for v in values if (g, v) in self.grants] for g, values in GROUPS.items()}

    def to_text(self) -> str:
        """The CLI form, "Group:Value,..." in wire order."""
        return ",".join(f"{g}:{v}" for g, vs in self.to_wire().items() for v in vs)

    def has(self, group: str, value: str) -> bool:
        """True when the grant (group, value) is present."""
        return (group, value) in self.grants

    def has_any(self, required: Iterable[tuple[str, str]]) -> bool:
        """True when at least one of `required` is granted."""
        return any(r in self.grants for r in required)

    def check_account_kind(self, *, is_master: bool) -> None:
        """Raise ParameterError (10001) when a grant is not allowed for this account kind."""
        forbidden = self.grants & (SUB_ONLY if is_master else MASTER_ONLY)
        if forbidden:
            names = ", ".join(sorted(f"{g}:{v}" for g, v in forbidden))
            kind = "master" if is_master else "sub"
            raise ParameterError(f"permission not allowed for a {kind} account key: {names}")
