"""IP binding: a key's list of IPs and CIDR blocks (IPv4 and IPv6); empty or "*" = unbound.

Source: Bybit V5 "Create Sub UID API Key", field ips ("*" means no IP bound; up to 1000 IPs).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from keyplane.errors import ParameterError

__all__ = ["MAX_IPS", "IpAllowlist"]

MAX_IPS = 1000

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class IpAllowlist:
    """Normalised networks a key may be used from; no networks means unbound (any IP)."""

    networks: tuple[_Network, ...] = ()

    @classmethod
    def parse(cls, items: str | Iterable[str]) -> IpAllowlist:
        """Parse "1.2.3.4,10.0.0.0/8,2001:db8::/32" or a list of such; "*" or "" = unbound.

        Raises ParameterError (10001) on an invalid address, host bits set in a CIDR, a "*"
        mixed with addresses, or more than 1000 entries.
        """
        raw = items.split(",") if isinstance(items, str) else list(items)
        parts = [p.strip() for p in raw if p.strip()]
        if not parts or parts == ["*"]:
            return cls()
        if "*" in parts:
            raise ParameterError('"*" (unbound) cannot be combined with IP addresses')
        if len(parts) > MAX_IPS:
            raise ParameterError(f"at most {MAX_IPS} IPs may be bound to a key")
        networks: list[_Network] = []
        for part in parts:
            try:
                net = ipaddress.ip_network(part, strict=True)
            except ValueError as exc:
                raise ParameterError(f"invalid IP address or CIDR: {part!r}") from exc
            if net not in networks:
                networks.append(net)
        return cls(tuple(networks))

    @property
    def is_bound(self) -> bool:
        """True when at least one network is listed."""
        return bool(self.networks)

    def allows(self, client_ip: str) -> bool:
        """True when unbound, or client_ip (text form) lies in one of the networks.

        An unparsable client_ip is never allowed by a bound list (fails closed).
        """
        if not self.networks:
            return True
        try:
            addr = ipaddress.ip_address(client_ip)
        except ValueError:
            return False
        candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [addr]
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            candidates.append(addr.ipv4_mapped)
        return any(a.version == n.version and a in n for a in candidates for n in self.networks)

    def to_list(self) -> list[str]:
        """Wire form: ["*"] when unbound, else addresses (single hosts without /32 or /128)."""
        if not self.networks:
            return ["*"]
        return [str(n.network_address) if n.num_addresses == 1 else str(n) for n in self.networks]

    def to_text(self) -> str:
        """Comma-separated wire form, as stored."""
        return ",".join(self.to_list())
