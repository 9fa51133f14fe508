"""MemoryStore: the Store protocol held in process memory, for tests and single-node demos.

Behaves exactly like SqlStore (the contract suite in tests/store/ runs against both): uids are
assigned from 100001 upwards, key ids from 1, and every create/save bumps the revision.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import replace

from keyplane.alerts.model import AlertRecord
from keyplane.audit.chain import AuditCheckpoint
from keyplane.audit.events import GENESIS_HASH, AuditEvent, AuditRecord, seal_all
from keyplane.errors import NotFoundError
from keyplane.keys.model import Account, ApiKey, KeyStatus
from keyplane.store.protocol import (
    DEFAULT_UPSTREAM,
    AccountAudit,
    PurgeResult,
    UpstreamCredentialsRecord,
)
from keyplane.usage.model import (
    KeyNetwork,
    UsageBy,
    UsageEvent,
    UsageSummaryRow,
    percentile_rank,
)

__all__ = ["FIRST_UID", "MAX_API_KEY_LENGTH", "MemoryStore"]

#: the first uid a store assigns (Bybit-style numeric uids); later uids are max(uid) + 1.
FIRST_UID = 100_001
#: api_key column width; longer values are refused with ValueError by every store.
MAX_API_KEY_LENGTH = 64


class MemoryStore:
    """Thread-safe in-memory Store. All times are int ms since epoch."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._accounts: dict[int, Account] = {}
        self._keys: dict[int, ApiKey] = {}
        self._by_api_key: dict[str, int] = {}
        self._upstreams: dict[str, UpstreamCredentialsRecord] = {}
        self._revision = 0
        self._audit: list[AuditRecord] = []
        self._checkpoints: list[AuditCheckpoint] = []
        self._usage: list[UsageEvent] = []
        self._usage_ids: set[str] = set()
        self._networks: dict[tuple[int, str], KeyNetwork] = {}
        self._alerts: list[AlertRecord] = []
        self._alert_ids: set[tuple[int, str, int]] = set()

    def create_account(
        self,
        *,
        parent_uid: int | None,
        created_at_ms: int,
        username: str = "",
        note: str = "",
        audit: AccountAudit | None = None,
    ) -> Account:
        """Insert an account with uid max(uid) + 1 (first 100001).

        Raises NotFoundError if parent_uid is given and unknown.
        """
        with self._lock:
            if parent_uid is not None and parent_uid not in self._accounts:
                raise NotFoundError(f"parent account {parent_uid} not found")
            uid = max(self._accounts, default=FIRST_UID - 1) + 1
            account = Account(
                uid=uid,
                parent_uid=parent_uid,
                created_at_ms=created_at_ms,
                username=username,
                note=note,
            )
            events = () if audit is None else audit(account)
            self._accounts[uid] = account
            self._revision += 1
            self._append_locked(events)
            return account

    def find_account(self, uid: int) -> Account | None:
        """The account with this uid, or None."""
        with self._lock:
            return self._accounts.get(uid)

    def save_account(self, account: Account, *, audit: Sequence[AuditEvent] = ()) -> None:
        """Persist status/note/username/rate_limits of an account; bumps the revision.

        Raises NotFoundError when account.uid is unknown.
        """
        with self._lock:
            current = self._accounts.get(account.uid)
            if current is None:
                raise NotFoundError(f"account {account.uid} not found")
            self._accounts[account.uid] = replace(
                current,
                status=account.status,
                note=account.note,
                username=account.username,
                rate_limits=account.rate_limits,
            )
            self._revision += 1
            self._append_locked(audit)

    def list_accounts(self, *, parent_uid: int | None = None) -> Sequence[Account]:
        """All accounts (parent_uid None) or the sub accounts of parent_uid, by uid ascending."""
        with self._lock:
            return [
                a
                for _, a in sorted(self._accounts.items())
                if parent_uid is None or a.parent_uid == parent_uid
            ]

    def count_accounts(self) -> int:
        """Number of accounts."""
        with self._lock:
            return len(self._accounts)

    def add_key(self, key: ApiKey, *, audit: Sequence[AuditEvent] = ()) -> ApiKey:
        """Insert a key with id max(id) + 1 (first 1); returns it with that id.

        Raises NotFoundError when key.uid is unknown, ValueError on a duplicate api_key or one
        longer than 64 characters.
        """
        with self._lock:
            if len(key.api_key) > MAX_API_KEY_LENGTH:
                raise ValueError(f"api_key longer than {MAX_API_KEY_LENGTH} characters")
            if key.uid not in self._accounts:
                raise NotFoundError(f"account {key.uid} not found")
            if key.api_key in self._by_api_key:
                raise ValueError(f"duplicate api_key {key.api_key}")
            stored = replace(key, id=max(self._keys, default=0) + 1)
            self._keys[stored.id] = stored
            self._by_api_key[stored.api_key] = stored.id
            self._revision += 1
            self._append_locked(audit)
            return stored

    def find_key(self, api_key: str) -> ApiKey | None:
        """The key with this api_key, in any status, or None."""
        with self._lock:
            key_id = self._by_api_key.get(api_key)
            return None if key_id is None else self._keys[key_id]

    def save_key(self, key: ApiKey, *, audit: Sequence[AuditEvent] = ()) -> None:
        """Persist every mutable field of the key with key.id; bumps the revision.

        id, api_key, uid and created_at_ms never change; last_used_at_ms only moves forwards.
        Raises NotFoundError when key.id is unknown.
        """
        with self._lock:
            current = self._keys.get(key.id)
            if current is None:
                raise NotFoundError(f"api key id {key.id} not found")
            self._keys[key.id] = replace(
                key,
                api_key=current.api_key,
                uid=current.uid,
                created_at_ms=current.created_at_ms,
                last_used_at_ms=_later(current.last_used_at_ms, key.last_used_at_ms),
            )
            self._revision += 1
            self._append_locked(audit)

    def list_keys(
        self,
        *,
        uid: int | None = None,
        include_revoked: bool = True,
        after_id: int = 0,
        limit: int | None = None,
    ) -> Sequence[ApiKey]:
        """Keys ordered by id ascending, optionally of one uid, with id > after_id.

        limit None means no limit.
        """
        with self._lock:
            found: list[ApiKey] = []
            for key_id in sorted(self._keys):
                key = self._keys[key_id]
                if key_id <= after_id or (uid is not None and key.uid != uid):
                    continue
                if not include_revoked and key.status == KeyStatus.REVOKED:
                    continue
                if limit is not None and len(found) >= limit:
                    break
                found.append(key)
            return found

    def record_last_used(self, last_used: Mapping[int, int]) -> None:
        """Set last_used_at_ms (ms) per key id when later than the stored one.

        Unknown ids are ignored. Does not bump the revision.
        """
        with self._lock:
            for key_id, ms in last_used.items():
                key = self._keys.get(key_id)
                if key is not None:
                    self._keys[key_id] = replace(
                        key, last_used_at_ms=_later(key.last_used_at_ms, ms)
                    )

    def set_upstream_credentials(
        self, record: UpstreamCredentialsRecord, *, audit: Sequence[AuditEvent] = ()
    ) -> None:
        """Insert or replace the credentials row named record.name; bumps the revision.

        Raises ValueError when record.api_key is longer than 64 characters.
        """
        if len(record.api_key) > MAX_API_KEY_LENGTH:
            raise ValueError(f"api_key longer than {MAX_API_KEY_LENGTH} characters")
        with self._lock:
            self._upstreams[record.name] = record
            self._revision += 1
            self._append_locked(audit)

    def find_upstream_credentials(
        self, name: str = DEFAULT_UPSTREAM
    ) -> UpstreamCredentialsRecord | None:
        """The credentials row with this name, or None."""
        with self._lock:
            return self._upstreams.get(name)

    def delete_upstream_credentials(
        self, name: str = DEFAULT_UPSTREAM, *, audit: Sequence[AuditEvent] = ()
    ) -> bool:
        """Delete the named row; True when one existed (then the revision is bumped and audit
        appended)."""
        with self._lock:
            if self._upstreams.pop(name, None) is None:
                return False
            self._revision += 1
            self._append_locked(audit)
            return True

    def append_audit(self, events: Sequence[AuditEvent]) -> Sequence[AuditRecord]:
        """Append events with no other change; returns the stored records. No revision bump."""
        with self._lock:
            return self._append_locked(events)

    def list_audit(
        self, *, target: str | None = None, since_ms: int | None = None, limit: int | None = None
    ) -> Sequence[AuditRecord]:
        """Audit records by id ascending, optionally of one target and with at_ms >= since_ms;
        limit keeps the newest `limit` (still ascending)."""
        with self._lock:
            found = [
                r
                for r in self._audit
                if (target is None or r.event.target == target)
                and (since_ms is None or r.event.at_ms >= since_ms)
            ]
        if limit is not None:
            found = found[len(found) - max(limit, 0) :] if limit > 0 else []
        return found

    def iter_audit(self) -> Iterator[AuditRecord]:
        """Every audit record by id ascending (a snapshot)."""
        with self._lock:
            snapshot = list(self._audit)
        return iter(snapshot)

    def find_audit_checkpoint(self) -> AuditCheckpoint | None:
        """The latest purge checkpoint, or None."""
        with self._lock:
            return self._checkpoints[-1] if self._checkpoints else None

    def purge(
        self,
        *,
        checkpoint: AuditCheckpoint | None,
        keys_revoked_before_ms: int,
        audit: Sequence[AuditEvent] = (),
    ) -> PurgeResult:
        """Delete audit rows 1..checkpoint.through_id (storing checkpoint) and keys revoked
        before keys_revoked_before_ms (ms), then append audit; bumps the revision.

        Raises ValueError for a checkpoint that does not match a stored row or goes backwards.
        """
        with self._lock:
            purged_rows = 0
            if checkpoint is not None:
                row = next((r for r in self._audit if r.id == checkpoint.through_id), None)
                _check_checkpoint(checkpoint, row, self._checkpoints[-1:])
                purged_rows = sum(1 for r in self._audit if r.id <= checkpoint.through_id)
                self._audit = [r for r in self._audit if r.id > checkpoint.through_id]
                self._checkpoints.append(checkpoint)
            gone = [
                k
                for _, k in sorted(self._keys.items())
                if k.status is KeyStatus.REVOKED
                and k.revoked_at_ms is not None
                and k.revoked_at_ms < keys_revoked_before_ms
            ]
            for key in gone:
                del self._keys[key.id]
                del self._by_api_key[key.api_key]
                for pair in [p for p in self._networks if p[0] == key.id]:
                    del self._networks[pair]
            self._revision += 1
            self._append_locked(audit)
            return PurgeResult(purged_rows, tuple(k.api_key for k in gone), checkpoint)

    def _append_locked(self, events: Sequence[AuditEvent]) -> list[AuditRecord]:
        """Chain events after the last row, the checkpoint or genesis; caller holds the lock."""
        if self._audit:
            next_id, prev = self._audit[-1].id + 1, self._audit[-1].row_hash
        elif self._checkpoints:
            next_id = self._checkpoints[-1].through_id + 1
            prev = self._checkpoints[-1].last_row_hash
        else:
            next_id, prev = 1, GENESIS_HASH
        stored = seal_all(events, first_id=next_id, prev_hash=prev)
        self._audit.extend(stored)
        return stored

    def prepare_usage(
        self, rows: Sequence[UsageEvent], *, onto: Sequence[UsageEvent] | None = None
    ) -> Sequence[UsageEvent]:
        """The rows as they are (nothing to encode in memory), after onto's; raises ValueError
        on an empty row_id."""
        check_usage_rows(rows)
        return [*onto, *rows] if onto else list(rows)

    def append_usage(self, rows: Sequence[UsageEvent]) -> int:
        """Store rows whose row_id is new; returns how many. Raises ValueError on an empty
        row_id (then nothing is stored)."""
        check_usage_rows(rows)
        with self._lock:
            added = 0
            for row in rows:
                if row.row_id not in self._usage_ids:
                    self._usage_ids.add(row.row_id)
                    self._usage.append(row)
                    added += 1
            return added

    def usage_summary(
        self, *, api_key: str | None = None, since_ms: int | None = None, by: UsageBy = "endpoint"
    ) -> Sequence[UsageSummaryRow]:
        """Rows grouped by endpoint or status (see Store.usage_summary)."""
        check_usage_by(by)
        groups: dict[str, list[UsageEvent]] = {}
        with self._lock:
            for row in self._usage:
                if api_key is not None and row.api_key != api_key:
                    continue
                if since_ms is not None and row.at_ms < since_ms:
                    continue
                groups.setdefault(usage_group(row, by), []).append(row)
        summary = []
        for group, rows in groups.items():
            latencies = sorted(r.latency_us for r in rows)
            summary.append(
                UsageSummaryRow(
                    group=group,
                    requests=len(rows),
                    errors=sum(1 for r in rows if is_usage_error(r.http_status, r.ret_code)),
                    avg_latency_us=sum(latencies) // len(rows),
                    max_latency_us=latencies[-1],
                    p50_latency_us=latencies[percentile_rank(50, len(rows)) - 1],
                    p99_latency_us=latencies[percentile_rank(99, len(rows)) - 1],
                )
            )
        return sort_summary(summary)

    def purge_usage(self, *, before_ms: int) -> int:
        """Delete usage rows older than before_ms (ms); returns how many went."""
        with self._lock:
            kept = [r for r in self._usage if r.at_ms >= before_ms]
            gone = len(self._usage) - len(kept)
            self._usage = kept
            self._usage_ids = {r.row_id for r in kept}
        return gone

    def count_failures(
        self,
        api_keys: Collection[str],
        *,
        since_ms: int,
        ret_codes: Collection[int],
        excluding_node: str,
    ) -> Mapping[str, int]:
        """Failure rows per api key from other nodes (see Store.count_failures)."""
        wanted, codes, own = set(api_keys), set(ret_codes), f"{excluding_node}-"
        counts: dict[str, int] = {}
        with self._lock:
            for r in self._usage:
                if (
                    r.api_key in wanted
                    and r.at_ms >= since_ms
                    and r.ret_code in codes
                    and r.key_id is not None
                    and not r.row_id.startswith(own)
                ):
                    counts[r.api_key] = counts.get(r.api_key, 0) + 1
        return counts

    def load_key_networks(self, key_ids: Collection[int]) -> Mapping[int, Sequence[KeyNetwork]]:
        """Stored networks per key id, by last_seen_ms (see Store.load_key_networks)."""
        wanted = set(key_ids)
        found: dict[int, list[KeyNetwork]] = {key_id: [] for key_id in wanted}
        with self._lock:
            for (key_id, _), row in self._networks.items():
                if key_id in wanted:
                    found[key_id].append(row)
        for rows in found.values():
            rows.sort(key=lambda r: (r.last_seen_ms, r.network))
        return found

    def record_key_networks(self, rows: Sequence[KeyNetwork]) -> None:
        """Upsert per (key_id, network) (see Store.record_key_networks)."""
        check_key_networks(rows)
        with self._lock:
            for row in rows:
                old = self._networks.get((row.key_id, row.network))
                if old is not None:
                    row = KeyNetwork(
                        row.key_id,
                        row.network,
                        min(old.first_seen_ms, row.first_seen_ms),
                        max(old.last_seen_ms, row.last_seen_ms),
                        old.requests + row.requests,
                    )
                self._networks[(row.key_id, row.network)] = row

    def count_usage(self, *, api_key: str, since_ms: int) -> int:
        """Authenticated retCode-0 rows of api_key at or after since_ms (see Store.count_usage)."""
        with self._lock:
            return sum(
                1
                for r in self._usage
                if r.api_key == api_key
                and r.at_ms >= since_ms
                and r.authenticated
                and not r.ret_code
            )

    def record_alert(self, record: AlertRecord) -> bool:
        """Store record unless its (key_id, condition, window_ms) is stored; True when stored."""
        check_alert_record(record)
        unique = (record.key_id, record.condition, record.window_ms)
        with self._lock:
            if unique in self._alert_ids:
                return False
            self._alert_ids.add(unique)
            self._alerts.append(record)
            return True

    def list_alerts(
        self, *, api_key: str | None = None, since_ms: int | None = None, limit: int | None = None
    ) -> Sequence[AlertRecord]:
        """Alert records by (at_ms, insertion) ascending (see Store.list_alerts)."""
        with self._lock:
            found = [
                r
                for r in self._alerts
                if (api_key is None or r.api_key == api_key)
                and (since_ms is None or r.at_ms >= since_ms)
            ]
        found.sort(key=lambda r: r.at_ms)  # stable: insertion order breaks ties, like id
        return found if limit is None else found[-limit:] if limit > 0 else []

    def purge_alerts(self, *, before_ms: int) -> int:
        """Delete alert rows with at_ms and window_ms both < before_ms (ms) (see
        Store.purge_alerts); returns how many went."""
        with self._lock:
            kept = [r for r in self._alerts if r.at_ms >= before_ms or r.window_ms >= before_ms]
            gone = len(self._alerts) - len(kept)
            self._alerts = kept
            self._alert_ids = {(r.key_id, r.condition, r.window_ms) for r in kept}
        return gone

    def revision(self) -> int:
        """Monotonic counter bumped by every key, account or upstream-credentials change; 0 for a
        new store."""
        with self._lock:
            return self._revision

    def close(self) -> None:
        """Nothing to release."""


def _check_checkpoint(
    checkpoint: AuditCheckpoint,
    row: AuditRecord | None,
    current: Sequence[AuditCheckpoint],
) -> None:
    """Raise ValueError unless checkpoint names the stored row (by id and row_hash) and lies
    beyond the current checkpoint (shared by every store)."""
    if current and checkpoint.through_id <= current[-1].through_id:
        raise ValueError("the checkpoint does not lie beyond the current one")
    if row is None or row.row_hash != checkpoint.last_row_hash:
        raise ValueError(f"the checkpoint does not match audit row {checkpoint.through_id}")


def _later(a: int | None, b: int | None) -> int | None:
    """The larger of two optional ms values (None is earliest)."""
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


#: alert_log.condition column width.
MAX_ALERT_CONDITION_LENGTH = 128


def check_alert_record(record: AlertRecord) -> None:
    """Raise ValueError when a field does not fit its column (shared by every store)."""
    if len(record.condition) > MAX_ALERT_CONDITION_LENGTH:
        raise ValueError(f"alert condition longer than {MAX_ALERT_CONDITION_LENGTH} characters")
    if len(record.api_key) > MAX_API_KEY_LENGTH:
        raise ValueError(f"api_key longer than {MAX_API_KEY_LENGTH} characters")


def check_usage_rows(rows: Sequence[UsageEvent]) -> None:
    """Raise ValueError when a usage row has no row_id (shared by every store)."""
    for row in rows:
        if not row.row_id:
            raise ValueError("usage rows need a row_id (assigned by the usage writer)")


#: widest network text stored (an IPv6 /48 in CIDR form needs at most 43 characters).
MAX_NETWORK_LENGTH = 64


def check_key_networks(rows: Sequence[KeyNetwork]) -> None:
    """Raise ValueError for a network text longer than MAX_NETWORK_LENGTH (every store)."""
    for row in rows:
        if len(row.network) > MAX_NETWORK_LENGTH:
            raise ValueError(f"network longer than {MAX_NETWORK_LENGTH} characters")


def check_usage_by(by: str) -> None:
    """Raise ValueError unless by is "endpoint" or "status"."""
    if by not in ("endpoint", "status"):
        raise ValueError(f"usage summary groups by endpoint or status, not {by!r}")


def usage_group(row: UsageEvent, by: UsageBy) -> str:
    """The summary group of a row: "METHOD /path" or "<http status>/<retCode>"."""
    if by == "endpoint":
        return f"{row.method} {row.path}"
    return f"{row.http_status}/{row.ret_code}"


def is_usage_error(http_status: int, ret_code: int) -> bool:
    """A usage row counts as an error when retCode != 0 or the HTTP status is >= 400."""
    return ret_code != 0 or http_status >= 400


def sort_summary(rows: Sequence[UsageSummaryRow]) -> list[UsageSummaryRow]:
    """Most requests first, then by group name."""
    return sorted(rows, key=lambda r: (-r.requests, r.group))
