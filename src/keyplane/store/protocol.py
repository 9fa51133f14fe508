"""The store port: accounts and API keys. Implementations: SqlStore (SQLite, PostgreSQL) and
MemoryStore; both pass the one contract suite in tests/store/.

Every mutation bumps a store-wide revision counter; nodes poll `revision()` to invalidate their
key caches (the SQLite form of the revocation broadcast).

Audit trail: every mutating method takes `audit`, the AuditEvents describing the change, and
appends them to the hash-chained audit log in the SAME transaction as the change (so a change is
never stored without its record, nor a record without its change). Rows get contiguous ids from
1 (continuing after a purge checkpoint) and row_hash = sha256(prev_hash + canonical content)
(keyplane.audit.events).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from keyplane.alerts.model import AlertRecord
from keyplane.audit.chain import AuditCheckpoint
from keyplane.audit.events import AuditEvent, AuditRecord
from keyplane.keys.model import Account, ApiKey
from keyplane.usage.model import KeyNetwork, UsageBy, UsageEvent, UsageSummaryRow

__all__ = [
    "DEFAULT_UPSTREAM",
    "AccountAudit",
    "PurgeResult",
    "Store",
    "UpstreamCredentialsRecord",
]

#: audit events of an account creation, built from the account once the store assigned its uid.
AccountAudit = Callable[[Account], Sequence[AuditEvent]]


@dataclass(frozen=True, slots=True)
class PurgeResult:
    """What a purge removed: audit rows (count), revoked keys (api_keys), the checkpoint,
    usage rows and alert rows (counts; set by KeyService.purge, 0 from Store.purge)."""

    audit_rows: int
    keys: tuple[str, ...]
    checkpoint: AuditCheckpoint | None
    usage_rows: int = 0
    alert_rows: int = 0


#: name of the one upstream-credentials row a gateway uses.
DEFAULT_UPSTREAM = "default"


@dataclass(frozen=True, slots=True)
class UpstreamCredentialsRecord:
    """The exchange credentials a gateway signs forwarded requests with, as stored.

    name: row key ("default"). api_key: the upstream (exchange) api key, public.
    key_type: "hmac" (secret_ciphertext holds the HMAC secret) or "rsa" (it holds the PEM
    private key). secret_ciphertext: AES-256-GCM blob under the key-encryption key (see
    keyplane.gateway.credentials for the associated data). set_at_ms: int, ms since epoch.
    """

    name: str
    api_key: str
    key_type: Literal["hmac", "rsa"]
    secret_ciphertext: bytes = field(repr=False)
    set_at_ms: int


class Store(Protocol):
    """Repository of accounts and keys. All times are int ms since epoch."""

    def create_account(
        self,
        *,
        parent_uid: int | None,
        created_at_ms: int,
        username: str = "",
        note: str = "",
        audit: AccountAudit | None = None,
    ) -> Account:
        """Insert an account; the store assigns uid. Raises NotFoundError if parent is unknown.

        audit(account) gives the events to append in the same transaction.
        """
        ...

    def find_account(self, uid: int) -> Account | None:
        """The account with this uid, or None."""
        ...

    def save_account(self, account: Account, *, audit: Sequence[AuditEvent] = ()) -> None:
        """Persist status/note/username/rate_limits of an account; bumps the revision."""
        ...

    def list_accounts(self, *, parent_uid: int | None = None) -> Sequence[Account]:
        """All accounts (parent_uid None) or the sub accounts of parent_uid, by uid ascending."""
        ...

    def count_accounts(self) -> int:
        """Number of accounts."""
        ...

    def add_key(self, key: ApiKey, *, audit: Sequence[AuditEvent] = ()) -> ApiKey:
        """Insert a key (its id is ignored); returns it with the assigned id.

        Raises NotFoundError when key.uid is unknown, ValueError on a duplicate api_key.
        """
        ...

    def find_key(self, api_key: str) -> ApiKey | None:
        """The key with this api_key, in any status (revoked rows are kept), or None."""
        ...

    def save_key(self, key: ApiKey, *, audit: Sequence[AuditEvent] = ()) -> None:
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

    def set_upstream_credentials(
        self, record: UpstreamCredentialsRecord, *, audit: Sequence[AuditEvent] = ()
    ) -> None:
        """Insert or replace the credentials row named record.name; bumps the revision.

        Raises ValueError when record.api_key is longer than 64 characters.
        """
        ...

    def find_upstream_credentials(
        self, name: str = DEFAULT_UPSTREAM
    ) -> UpstreamCredentialsRecord | None:
        """The credentials row with this name, or None."""
        ...

    def delete_upstream_credentials(
        self, name: str = DEFAULT_UPSTREAM, *, audit: Sequence[AuditEvent] = ()
    ) -> bool:
        """Delete the named row; True when one existed (then the revision is bumped and audit
        appended; otherwise nothing is written)."""
        ...

    def append_audit(self, events: Sequence[AuditEvent]) -> Sequence[AuditRecord]:
        """Append events with no other change (security events); returns the stored records.

        Does not bump the revision.
        """
        ...

    def list_audit(
        self, *, target: str | None = None, since_ms: int | None = None, limit: int | None = None
    ) -> Sequence[AuditRecord]:
        """Audit records by id ascending, optionally only of one target and with at_ms >=
        since_ms; limit keeps the newest `limit` of them (still ascending)."""
        ...

    def iter_audit(self) -> Iterator[AuditRecord]:
        """Every audit record by id ascending (streamed in pages)."""
        ...

    def find_audit_checkpoint(self) -> AuditCheckpoint | None:
        """The latest purge checkpoint (highest through_id), or None if never purged."""
        ...

    def purge(
        self,
        *,
        checkpoint: AuditCheckpoint | None,
        keys_revoked_before_ms: int,
        audit: Sequence[AuditEvent] = (),
    ) -> PurgeResult:
        """In one transaction: delete audit rows 1..checkpoint.through_id and store checkpoint
        (None: no audit rows purged), delete keys revoked before keys_revoked_before_ms (ms),
        then append audit. Bumps the revision.

        Raises ValueError when the checkpoint does not name a stored row with that row_hash, or
        does not lie beyond the current checkpoint.
        """
        ...

    def prepare_usage(
        self, rows: Sequence[UsageEvent], *, onto: Sequence[UsageEvent] | None = None
    ) -> Sequence[UsageEvent]:
        """The rows in the form append_usage sends fastest (same rows, same order), with the
        per-row work done now and no I/O: the usage writer calls it on the event loop, a
        thousand rows at a time, so the thread that runs append_usage only waits on the
        database and seldom needs the GIL. onto: an earlier result to extend (it may be
        extended in place), so one batch can be prepared in pieces. Raises ValueError for a
        row with an empty row_id.
        """
        ...

    def append_usage(self, rows: Sequence[UsageEvent]) -> int:
        """Store usage rows (as given, or as prepare_usage returned them) in one transaction;
        returns how many were new.

        Rows whose row_id is already stored are skipped (a replayed spill file is idempotent).
        Does not bump the revision. Raises ValueError for a row with an empty row_id.
        """
        ...

    def usage_summary(
        self, *, api_key: str | None = None, since_ms: int | None = None, by: UsageBy = "endpoint"
    ) -> Sequence[UsageSummaryRow]:
        """Usage rows grouped by endpoint ("GET /v5/...") or status ("<http>/<retCode>"),
        optionally of one api_key and with at_ms >= since_ms (ms); most requests first, then by
        group. Raises ValueError for another `by`."""
        ...

    def purge_usage(self, *, before_ms: int) -> int:
        """Delete usage rows with at_ms < before_ms (ms), in batches (short transactions that
        never hold up the usage writer); returns how many went."""
        ...

    def count_failures(
        self,
        api_keys: Collection[str],
        *,
        since_ms: int,
        ret_codes: Collection[int],
        excluding_node: str,
    ) -> Mapping[str, int]:
        """Per api key: usage rows with at_ms >= since_ms (ms), one of ret_codes and a known key
        (key_id set), not written by node excluding_node (row_id "<node>-<n>"); keys without
        any are left out. What other nodes saw of a failed-signature burst."""
        ...

    def load_key_networks(self, key_ids: Collection[int]) -> Mapping[int, Sequence[KeyNetwork]]:
        """The stored source networks of each key id (ids without any map to an empty list);
        each key's networks by last_seen_ms ascending."""
        ...

    def record_key_networks(self, rows: Sequence[KeyNetwork]) -> None:
        """Upsert per (key_id, network): requests added to the stored count, first_seen_ms the
        earlier and last_seen_ms the later of stored and given (ms). One transaction; no
        revision bump. Raises ValueError for a network longer than 64 characters."""

    def count_usage(self, *, api_key: str, since_ms: int) -> int:
        """Usage rows of api_key with at_ms >= since_ms (ms) that were authenticated and answered
        retCode 0: the requests a daily quota counts (seed after a restart, keyplane.quota)."""
        ...

    def record_alert(self, record: AlertRecord) -> bool:
        """Store record unless (key_id, condition, window_ms) is already stored; True when this
        call stored it (the caller then sends the alert), False when it already was. Atomic
        across processes (unique constraint); does not bump the revision. Raises ValueError for
        a condition longer than 128 characters or an api_key longer than 64."""
        ...

    def list_alerts(
        self, *, api_key: str | None = None, since_ms: int | None = None, limit: int | None = None
    ) -> Sequence[AlertRecord]:
        """Alert records ordered by (at_ms, id) ascending, optionally of one api_key and with
        at_ms >= since_ms (ms); limit keeps the newest `limit` of them (still ascending)."""
        ...

    def purge_alerts(self, *, before_ms: int) -> int:
        """Delete alert rows recorded before before_ms (at_ms < before_ms, ms) whose window also
        started before it (window_ms < before_ms), in batches (short transactions that never
        hold up record_alert); returns how many went. The window test keeps an expiry row
        (window_ms: the key's expiry, after at_ms) until that expiry is past, so the alert is
        never sent twice; a day window (window_ms <= at_ms) needs a cutoff at least a day old,
        which `keyplane maintenance purge` enforces (2 days or more)."""
        ...

    def revision(self) -> int:
        """Monotonic counter bumped by every key, account or upstream-credentials change."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
