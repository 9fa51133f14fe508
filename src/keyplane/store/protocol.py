"""The store port: accounts and API keys. Implementations: SqlStore (SQLite, PostgreSQL) and
MemoryStore; both pass the one contract suite in tests/store/.

Every mutation bumps a store-wide revision counter; nodes poll `revision()` to invalidate their
key caches (the SQLite form of the revocation broadcast).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from keyplane.keys.model import Account, ApiKey

__all__ = ["Store"]


class Store(Protocol):
    """Repository of accounts and keys. All times are int ms since epoch."""

    def create_account(
        self, *, parent_uid: int | None, created_at_ms: int, username: str = "", note: str = ""
    ) -> Account:
        """Insert an account; the store assigns uid. Raises NotFoundError if parent is unknown."""
        ...

    def find_account(self, uid: int) -> Account | None:
        """The account with this uid, or None."""
        ...

    def save_account(self, account: Account) -> None:
        """Persist status/note/username/rate_limits of an account; bumps the revision."""
        ...

    def list_accounts(self, *, parent_uid: int | None = None) -> Sequence[Account]:
        """All accounts (parent_uid None) or the sub accounts of parent_uid, by uid ascending."""
        ...

    def count_accounts(self) -> int:
        """Number of accounts."""
        ...

    def add_key(self, key: ApiKey) -> ApiKey:
        """Insert a key (its id is ignored); returns it with the assigned id.

        Raises NotFoundError when key.uid is unknown, ValueError on a duplicate api_key.
        """
        ...

    def find_key(self, api_key: str) -> ApiKey | None:
        """The key with this api_key, in any status (revoked rows are kept), or None."""
        ...

    def save_key(self, key: ApiKey) -> None:
        """Persist every mutable field of an existing key (matched by id); bumps the revision."""
        ...

    def list_keys(
        self,
        *,
        uid: int | None = None,
        include_revoked: bool = True,
        after_id: int = 0,
        limit: int | None = None,
    ) -> Sequence[ApiKey]:
        """Keys ordered by id ascending, optionally of one uid, with id > after_id."""
        ...

    def record_last_used(self, last_used: Mapping[int, int]) -> None:
        """Set last_used_at_ms for key ids (never moves backwards); does not bump the revision."""
        ...

    def revision(self) -> int:
        """Monotonic counter bumped by every key or account change."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
