"""Per-key and per-account overrides of route rate limits.

Text form (CLI and storage): "/v5/order/create:spot=50,/v5/account/wallet-balance=200", where a
route is a V5 path, optionally ":category"; the number replaces the route's default request
count and keeps its window (per second for most routes, per minute for inter-transfer).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from keyplane.errors import ParameterError

__all__ = ["RateOverrides", "normalize_route"]


def normalize_route(route: str) -> str:
    """ "order/create:spot" or "/v5/order/create:spot" -> "/v5/order/create:spot"."""
    route = route.strip()
    path, _, category = route.partition(":")
    path = "/" + path.strip("/")
    if not path.startswith("/v5/"):
        path = "/v5" + path
    return f"{path}:{category.strip()}" if category.strip() else path


@dataclass(frozen=True, slots=True)
class RateOverrides:
    """route ("/v5/path" or "/v5/path:category") -> request count per the route's window."""

    limits: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, items: str | Iterable[str]) -> RateOverrides:
        """Parse "route=N,route=N" (or a list of "route=N"); N a positive integer.

        Raises ParameterError (10001) on a malformed item.
        """
        parts = items.split(",") if isinstance(items, str) else list(items)
        limits: dict[str, int] = {}
        for part in (p.strip() for p in parts):
            if not part:
                continue
            route, sep, number = part.rpartition("=")
            if not sep or not route.strip() or not number.strip().isdigit() or int(number) <= 0:
                raise ParameterError(f"rate limit must look like ROUTE=N (N > 0), got {part!r}")
            limits[normalize_route(route)] = int(number)
        return cls(limits)

    def merged(self, other: RateOverrides) -> RateOverrides:
        """These overrides with other's entries added or replacing."""
        return RateOverrides({**self.limits, **other.limits})

    def lookup(self, path: str, category: str | None) -> int | None:
        """The override for path with category (most specific first), else for path, else None."""
        if category:
            found = self.limits.get(f"{path}:{category}")
            if found is not None:
                return found
        return self.limits.get(path)

    def to_text(self) -> str:
        """The storage form, sorted by route."""
        return ",".join(f"{route}={n}" for route, n in sorted(self.limits.items()))

    def __hash__(self) -> int:
        return hash(self.to_text())
