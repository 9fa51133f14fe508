"""SqlStore: the Store protocol on SQLAlchemy Core, for SQLite (embedded default) and PostgreSQL.

Every method is one transaction. Every mutation first bumps the store_meta revision row; that
UPDATE also serialises writers (a row lock on PostgreSQL, BEGIN IMMEDIATE on SQLite), so uids and
key ids can be assigned as max + 1 inside the transaction and are the same on every backend and in
MemoryStore for the same sequence of calls.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    Engine,
    Row,
    bindparam,
    case,
    create_engine,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.dml import Insert

from keyplane.alerts.model import AlertKind, AlertRecord
from keyplane.audit.chain import AuditCheckpoint
from keyplane.audit.events import GENESIS_HASH, AuditEvent, AuditRecord, canonical_json, seal_all
from keyplane.errors import NotFoundError
from keyplane.keys.ips import IpAllowlist
from keyplane.keys.limits import RateOverrides
from keyplane.keys.model import Account, AccountStatus, ApiKey, KeyStatus, KeyType
from keyplane.keys.permissions import Permissions
from keyplane.store.memory import (
    FIRST_UID,
    MAX_API_KEY_LENGTH,
    _check_checkpoint,
    check_alert_record,
    check_key_networks,
    check_usage_by,
    check_usage_rows,
    sort_summary,
)
from keyplane.store.protocol import (
    DEFAULT_UPSTREAM,
    AccountAudit,
    PurgeResult,
    UpstreamCredentialsRecord,
)
from keyplane.store.schema import (
    REVISION_ROW,
    accounts,
    alert_log,
    api_keys,
    audit_checkpoint,
    audit_log,
    key_networks,
    store_meta,
    upstream_credentials,
    usage_log,
)
from keyplane.store.usage_copy import PreparedUsage, fit_usage_row
from keyplane.usage.model import KeyNetwork, UsageBy, UsageEvent, UsageSummaryRow

#: PostgreSQL LISTEN/NOTIFY channel carrying "<schema>:<revision>:<sent wall ms>" after writes.
REVISION_CHANNEL = "keyplane_revision"

__all__ = [
    "MIGRATIONS_DIR",
    "REVISION_CHANNEL",
    "SqlStore",
    "display_url",
    "make_engine",
    "normalize_url",
    "open_store",
    "upgrade_to_head",
]

#: the Alembic script directory shipped inside the package (env.py, versions/).
MIGRATIONS_DIR = Path(__file__).with_name("migrations")

#: execution option that makes a SQLite transaction start with BEGIN IMMEDIATE (write lock).
_WRITE_OPTION = "keyplane_write"
#: pg_advisory_xact_lock key serialising concurrent migrations ("kplane" in ASCII).
_MIGRATION_LOCK_KEY = 0x6B706C616E65
_SQLITE_BUSY_TIMEOUT_MS = 5000
#: audit rows read per query by iter_audit.
_AUDIT_PAGE = 1000


def normalize_url(url: str | URL) -> URL:
    """Parse a database URL; postgresql:// and postgres:// become postgresql+psycopg://."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def display_url(url: str | URL) -> str:
    """The URL with any password (in userinfo or a `password` query item) shown as ***."""
    parsed = make_url(url)
    if "password" in parsed.query:
        parsed = parsed.update_query_dict({"password": "***"})
    return parsed.render_as_string(hide_password=True)


def make_engine(url: str | URL) -> Engine:
    """A sync Engine for a SQLite or PostgreSQL URL, set up the way SqlStore expects.

    SQLite: creates the file's parent directory; check_same_thread=False; on every connection
    journal_mode=WAL, foreign_keys=ON, busy_timeout=5000 (ms); write transactions (engines with
    the keyplane_write execution option) begin with BEGIN IMMEDIATE. "sqlite://" (in memory)
    shares one connection. PostgreSQL: psycopg 3 with pool_pre_ping.
    """
    parsed = normalize_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True)
    database = parsed.database or ""
    in_memory = database in ("", ":memory:") or database.startswith("file::memory:")
    if in_memory:
        engine = create_engine(
            parsed, connect_args={"check_same_thread": False}, poolclass=StaticPool
        )
    else:
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"check_same_thread": False})
    _install_sqlite_hooks(engine)
    return engine


def _install_sqlite_hooks(engine: Engine) -> None:
    """Take transaction control from pysqlite (SQLAlchemy's documented recipe) and set pragmas."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(_WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def upgrade_to_head(engine: Engine) -> None:
    """Run the packaged Alembic migrations up to head on engine, in one transaction.

    Concurrent callers are serialised (advisory lock on PostgreSQL, write lock on SQLite).
    """
    from alembic import command  # imported here: only migrating needs Alembic
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    with engine.execution_options(**{_WRITE_OPTION: True}).begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
        config.attributes["connection"] = conn
        command.upgrade(config, "head")


def open_store(url: str, *, migrate: bool = True) -> SqlStore:
    """Open (and by default migrate to head) the store at a database URL.

    url: "sqlite:///path/keyplane.db", "postgresql+psycopg://user@host/db" (plain postgresql://
    is accepted). Raises sqlalchemy.exc.OperationalError when the database cannot be reached.
    """
    engine = make_engine(url)
    try:
        if migrate:
            upgrade_to_head(engine)
    except BaseException:
        engine.dispose()
        raise
    return SqlStore(engine)


class SqlStore:
    """Store on a SQLAlchemy Engine (build it with make_engine, or use open_store).

    All times are int ms since epoch. Thread-safe: each call checks a connection out of the pool.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._writer = engine.execution_options(**{_WRITE_OPTION: True})
        self._notify = engine.dialect.name == "postgresql"

    def __repr__(self) -> str:
        return f"SqlStore({self.url_for_display!r})"

    @property
    def engine(self) -> Engine:
        """The underlying Engine."""
        return self._engine

    @property
    def url_for_display(self) -> str:
        """The database URL with its password hidden; safe to log."""
        return display_url(self._engine.url)

    @contextmanager
    def _write(self, *, bump: bool = True) -> Iterator[Connection]:
        """A write transaction that has already bumped (and so locked) the revision row.

        bump=False only locks the row (SELECT ... FOR UPDATE on PostgreSQL; SQLite's BEGIN
        IMMEDIATE already serialises writers): used to append audit rows race-free without
        invalidating key caches.

        On PostgreSQL it also queues NOTIFY keyplane_revision '<schema>:<revision>:<wall ms>' (the
        channel is database-wide, the schema tells deployments sharing a database apart), which the
        server delivers to every listening node when (and only when) the transaction commits:
        the revocation broadcast (keyplane.store.notifications).
        """
        with self._writer.begin() as conn:
            if not bump:
                conn.execute(
                    select(store_meta.c.value)
                    .where(store_meta.c.name == REVISION_ROW)
                    .with_for_update()
                )
                yield conn
                return
            revision = conn.execute(
                update(store_meta)
                .where(store_meta.c.name == REVISION_ROW)
                .values(value=store_meta.c.value + 1)
                .returning(store_meta.c.value)
            ).scalar_one()
            if self._notify:
                payload = f"{revision}:{time.time_ns() // 1_000_000}"
                conn.execute(
                    text("SELECT pg_notify(:channel, current_schema() || ':' || :payload)"),
                    {"channel": REVISION_CHANNEL, "payload": payload},
                )
            yield conn

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
        with self._write() as conn:
            if parent_uid is not None and not _account_exists(conn, parent_uid):
                raise NotFoundError(f"parent account {parent_uid} not found")
            last = conn.execute(select(func.max(accounts.c.uid))).scalar_one()
            account = Account(
                uid=FIRST_UID if last is None else max(int(last) + 1, FIRST_UID),
                parent_uid=parent_uid,
                created_at_ms=created_at_ms,
                username=username,
                note=note,
            )
            conn.execute(insert(accounts).values(_account_values(account)))
            _append_audit(conn, () if audit is None else audit(account))
            return account

    def find_account(self, uid: int) -> Account | None:
        """The account with this uid, or None."""
        with self._engine.begin() as conn:
            row = conn.execute(select(accounts).where(accounts.c.uid == uid)).first()
        return None if row is None else _account_from_row(row)

    def save_account(self, account: Account, *, audit: Sequence[AuditEvent] = ()) -> None:
        """Persist status/note/username/rate_limits of an account; bumps the revision.

        Raises NotFoundError when account.uid is unknown.
        """
        with self._write() as conn:
            result = conn.execute(
                update(accounts)
                .where(accounts.c.uid == account.uid)
                .values(
                    status=str(account.status),
                    note=account.note,
                    username=account.username,
                    rate_limits=account.rate_limits.to_text(),
                )
            )
            if result.rowcount == 0:
                raise NotFoundError(f"account {account.uid} not found")
            _append_audit(conn, audit)

    def list_accounts(self, *, parent_uid: int | None = None) -> Sequence[Account]:
        """All accounts (parent_uid None) or the sub accounts of parent_uid, by uid ascending."""
        query = select(accounts).order_by(accounts.c.uid)
        if parent_uid is not None:
            query = query.where(accounts.c.parent_uid == parent_uid)
        with self._engine.begin() as conn:
            return [_account_from_row(row) for row in conn.execute(query)]

    def count_accounts(self) -> int:
        """Number of accounts."""
        with self._engine.begin() as conn:
            return int(conn.execute(select(func.count()).select_from(accounts)).scalar_one())

    def add_key(self, key: ApiKey, *, audit: Sequence[AuditEvent] = ()) -> ApiKey:
        """Insert a key with id max(id) + 1 (first 1); returns it with that id.

        Raises NotFoundError when key.uid is unknown, ValueError on a duplicate api_key or one
        longer than 64 characters.
        """
        if len(key.api_key) > MAX_API_KEY_LENGTH:
            raise ValueError(f"api_key longer than {MAX_API_KEY_LENGTH} characters")
        try:
            with self._write() as conn:
                if not _account_exists(conn, key.uid):
                    raise NotFoundError(f"account {key.uid} not found")
                taken = conn.execute(
                    select(api_keys.c.id).where(api_keys.c.api_key == key.api_key)
                ).first()
                if taken is not None:
                    raise ValueError(f"duplicate api_key {key.api_key}")
                last = conn.execute(select(func.max(api_keys.c.id))).scalar_one()
                stored = key.with_changes(id=1 if last is None else int(last) + 1)
                conn.execute(insert(api_keys).values(id=stored.id, **_key_values(stored)))
                _append_audit(conn, audit)
        except IntegrityError as exc:  # a writer outside SqlStore raced us
            raise ValueError(f"duplicate api_key {key.api_key}") from exc
        return stored

    def find_key(self, api_key: str) -> ApiKey | None:
        """The key with this api_key, in any status (revoked rows are kept), or None."""
        with self._engine.begin() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.api_key == api_key)).first()
        return None if row is None else _key_from_row(row)

    def save_key(self, key: ApiKey, *, audit: Sequence[AuditEvent] = ()) -> None:
        """Persist every mutable field of the key with key.id; bumps the revision.

        id, api_key, uid and created_at_ms never change; last_used_at_ms only moves forwards.
        Raises NotFoundError when key.id is unknown.
        """
        values = _key_values(key)
        for fixed in ("api_key", "uid", "created_at_ms", "last_used_at_ms"):
            del values[fixed]
        with self._write() as conn:
            stmt = update(api_keys).where(api_keys.c.id == key.id).values(**values)
            if key.last_used_at_ms is not None:
                stmt = stmt.values(last_used_at_ms=_forward(key.last_used_at_ms))
            if conn.execute(stmt).rowcount == 0:
                raise NotFoundError(f"api key id {key.id} not found")
            _append_audit(conn, audit)

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
        query = select(api_keys).where(api_keys.c.id > after_id).order_by(api_keys.c.id)
        if uid is not None:
            query = query.where(api_keys.c.uid == uid)
        if not include_revoked:
            query = query.where(api_keys.c.status != str(KeyStatus.REVOKED))
        if limit is not None:
            query = query.limit(max(limit, 0))
        with self._engine.begin() as conn:
            return [_key_from_row(row) for row in conn.execute(query)]

    def record_last_used(self, last_used: Mapping[int, int]) -> None:
        """Set last_used_at_ms (ms) per key id when later than the stored one (one executemany).

        Unknown ids are ignored. Does not bump the revision.
        """
        if not last_used:
            return
        stmt = (
            update(api_keys)
            .where(api_keys.c.id == bindparam("key_id"))
            .where(
                or_(
                    api_keys.c.last_used_at_ms.is_(None),
                    api_keys.c.last_used_at_ms < bindparam("ms"),
                )
            )
            .values(last_used_at_ms=bindparam("ms"))
        )
        params = [{"key_id": key_id, "ms": ms} for key_id, ms in sorted(last_used.items())]
        with self._writer.begin() as conn:
            conn.execute(stmt, params)

    def set_upstream_credentials(
        self, record: UpstreamCredentialsRecord, *, audit: Sequence[AuditEvent] = ()
    ) -> None:
        """Insert or replace the credentials row named record.name; bumps the revision.

        Raises ValueError when record.api_key is longer than 64 characters.
        """
        if len(record.api_key) > MAX_API_KEY_LENGTH:
            raise ValueError(f"api_key longer than {MAX_API_KEY_LENGTH} characters")
        table = upstream_credentials
        with self._write() as conn:
            conn.execute(delete(table).where(table.c.name == record.name))
            conn.execute(
                insert(table).values(
                    name=record.name,
                    api_key=record.api_key,
                    key_type=record.key_type,
                    secret_ciphertext=record.secret_ciphertext,
                    set_at_ms=record.set_at_ms,
                )
            )
            _append_audit(conn, audit)

    def find_upstream_credentials(
        self, name: str = DEFAULT_UPSTREAM
    ) -> UpstreamCredentialsRecord | None:
        """The credentials row with this name, or None."""
        table = upstream_credentials
        with self._engine.begin() as conn:
            row = conn.execute(select(table).where(table.c.name == name)).first()
        if row is None:
            return None
        m = row._mapping
        return UpstreamCredentialsRecord(
            name=m["name"],
            api_key=m["api_key"],
            key_type="rsa" if m["key_type"] == "rsa" else "hmac",
            secret_ciphertext=bytes(m["secret_ciphertext"]),
            set_at_ms=int(m["set_at_ms"]),
        )

    def delete_upstream_credentials(
        self, name: str = DEFAULT_UPSTREAM, *, audit: Sequence[AuditEvent] = ()
    ) -> bool:
        """Delete the named row; True when one existed (then the revision is bumped and audit
        appended)."""
        table = upstream_credentials
        try:
            with self._write() as conn:
                if conn.execute(delete(table).where(table.c.name == name)).rowcount == 0:
                    raise _NothingChangedError  # rolls back the revision bump
                _append_audit(conn, audit)
        except _NothingChangedError:
            return False
        return True

    def append_audit(self, events: Sequence[AuditEvent]) -> Sequence[AuditRecord]:
        """Append events with no other change; returns the stored records. No revision bump."""
        if not events:
            return []
        with self._write(bump=False) as conn:
            return _append_audit(conn, events)

    def list_audit(
        self, *, target: str | None = None, since_ms: int | None = None, limit: int | None = None
    ) -> Sequence[AuditRecord]:
        """Audit records by id ascending, optionally of one target and with at_ms >= since_ms;
        limit keeps the newest `limit` (still ascending)."""
        query = select(audit_log).order_by(audit_log.c.id.desc())
        if target is not None:
            query = query.where(audit_log.c.target == target)
        if since_ms is not None:
            query = query.where(audit_log.c.at_ms >= since_ms)
        if limit is not None:
            query = query.limit(max(limit, 0))
        with self._engine.begin() as conn:
            rows = [_audit_from_row(row) for row in conn.execute(query)]
        return rows[::-1]

    def iter_audit(self) -> Iterator[AuditRecord]:
        """Every audit record by id ascending, read in pages of 1000 (one query each)."""
        after = 0
        while True:
            query = (
                select(audit_log)
                .where(audit_log.c.id > after)
                .order_by(audit_log.c.id)
                .limit(_AUDIT_PAGE)
            )
            with self._engine.begin() as conn:
                page = [_audit_from_row(row) for row in conn.execute(query)]
            yield from page
            if len(page) < _AUDIT_PAGE:
                return
            after = page[-1].id

    def find_audit_checkpoint(self) -> AuditCheckpoint | None:
        """The latest purge checkpoint (highest through_id), or None."""
        with self._engine.begin() as conn:
            return _latest_checkpoint(conn)

    def purge(
        self,
        *,
        checkpoint: AuditCheckpoint | None,
        keys_revoked_before_ms: int,
        audit: Sequence[AuditEvent] = (),
    ) -> PurgeResult:
        """Delete audit rows 1..checkpoint.through_id (storing checkpoint) and keys revoked
        before keys_revoked_before_ms (ms), then append audit; one transaction, bumps the
        revision.

        Raises ValueError for a checkpoint that does not match a stored row or goes backwards.
        """
        with self._write() as conn:
            purged_rows = 0
            if checkpoint is not None:
                row = conn.execute(
                    select(audit_log).where(audit_log.c.id == checkpoint.through_id)
                ).first()
                current = _latest_checkpoint(conn)
                _check_checkpoint(
                    checkpoint,
                    None if row is None else _audit_from_row(row),
                    [] if current is None else [current],
                )
                purged_rows = conn.execute(
                    delete(audit_log).where(audit_log.c.id <= checkpoint.through_id)
                ).rowcount
                conn.execute(
                    insert(audit_checkpoint).values(
                        through_id=checkpoint.through_id,
                        last_row_hash=checkpoint.last_row_hash,
                        at_ms=checkpoint.at_ms,
                        signature=checkpoint.signature,
                    )
                )
            revoked = (
                (api_keys.c.status == str(KeyStatus.REVOKED))
                & api_keys.c.revoked_at_ms.is_not(None)
                & (api_keys.c.revoked_at_ms < keys_revoked_before_ms)
            )
            gone = conn.execute(
                select(api_keys.c.api_key).where(revoked).order_by(api_keys.c.id)
            ).scalars()
            keys = tuple(str(k) for k in gone)
            conn.execute(
                delete(key_networks).where(
                    key_networks.c.key_id.in_(select(api_keys.c.id).where(revoked))
                )
            )
            conn.execute(delete(api_keys).where(revoked))
            _append_audit(conn, audit)
        return PurgeResult(purged_rows, keys, checkpoint)

    def prepare_usage(
        self, rows: Sequence[UsageEvent], *, onto: Sequence[UsageEvent] | None = None
    ) -> Sequence[UsageEvent]:
        """The rows ready for append_usage, no I/O (see Store.prepare_usage). PostgreSQL: a
        PreparedUsage carrying the rows' COPY text (keyplane.store.usage_copy). SQLite: a list
        of the rows with texts cut to their columns. Raises ValueError on an empty row_id."""
        check_usage_rows(rows)
        if self._engine.dialect.name == "postgresql":
            prepared = onto if isinstance(onto, PreparedUsage) else PreparedUsage()
            if onto is not None and onto is not prepared:
                prepared.add(onto)
            prepared.add(rows)
            return prepared
        fitted = onto if isinstance(onto, list) else list(onto or ())
        fitted.extend(fit_usage_row(r) for r in rows)
        return fitted

    def append_usage(self, rows: Sequence[UsageEvent]) -> int:
        """Insert rows in one transaction, skipping row_ids already stored; returns how many
        were new. No revision bump, no revision lock (usage writes never wait on key changes).

        rows: UsageEvents, or what prepare_usage made of them (then nothing is encoded here).
        PostgreSQL: one COPY of the rows' COPY text straight into usage_log (several times
        faster than INSERT); when a row_id of the batch is already there (a spill page replayed
        after a partial write), the batch is COPYed into a temporary table and moved with
        INSERT ... SELECT ... ON CONFLICT (row_id) DO NOTHING instead. SQLite: one executemany
        of INSERT ... ON CONFLICT DO NOTHING (sqlite3's C loop). Texts longer than their
        columns are cut (api_key 64, method 8, path 255, client_ip 64 characters).
        Raises ValueError on an empty row_id, and the driver's error
        (sqlalchemy.exc.OperationalError, psycopg.OperationalError, ...) when the database fails.
        """
        if not isinstance(rows, PreparedUsage):
            rows = self.prepare_usage(rows)
        if not rows:
            return 0
        if isinstance(rows, PreparedUsage):
            return self._copy_usage(rows.copy_chunks, len(rows))
        sql = _USAGE_INSERT.format(values=", ".join(["?"] * len(_USAGE_COLUMNS)))
        with self._writer.begin() as conn:
            result = conn.exec_driver_sql(sql, rows)
            return max(int(result.rowcount), 0)

    def _copy_usage(self, copy_text: Sequence[bytes], count: int) -> int:
        """PostgreSQL COPY of count usage rows (see append_usage); returns rows new to
        usage_log."""
        import psycopg.errors  # the PostgreSQL driver; only imported on PostgreSQL

        try:
            with self._writer.begin() as conn:
                _copy_text(conn, _USAGE_COPY, copy_text)
            return count
        except psycopg.errors.UniqueViolation:
            pass  # a row_id already stored: deduplicate through the staging table
        with self._writer.begin() as conn:
            conn.exec_driver_sql(_USAGE_STAGE_CREATE)
            _copy_text(conn, _USAGE_STAGE_COPY, copy_text)
            result = conn.exec_driver_sql(_USAGE_STAGE_MOVE)
            return max(int(result.rowcount), 0)

    def purge_usage(self, *, before_ms: int) -> int:
        """Delete usage rows older than before_ms (ms), _USAGE_PURGE_BATCH rows per
        transaction (through the at_ms index); returns how many went."""
        t = usage_log
        return self._delete_in_batches(t.c.row_id, t.c.at_ms < before_ms, _USAGE_PURGE_BATCH)

    def count_failures(
        self,
        api_keys: Collection[str],
        *,
        since_ms: int,
        ret_codes: Collection[int],
        excluding_node: str,
    ) -> Mapping[str, int]:
        """One GROUP BY over usage_log's (api_key, at_ms) index (see Store.count_failures)."""
        keys = sorted(set(api_keys))
        if not keys:
            return {}
        t = usage_log
        prefix = excluding_node.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = (
            select(t.c.api_key, func.count())
            .where(
                t.c.api_key.in_(keys),
                t.c.at_ms >= since_ms,
                t.c.ret_code.in_(sorted(set(ret_codes))),
                t.c.key_id.is_not(None),
                t.c.row_id.not_like(f"{prefix}-%", escape="\\"),
            )
            .group_by(t.c.api_key)
        )
        with self._engine.begin() as conn:
            return {str(k): int(n) for k, n in conn.execute(query)}

    def load_key_networks(self, key_ids: Collection[int]) -> Mapping[int, Sequence[KeyNetwork]]:
        """Stored networks per key id, by last_seen_ms (see Store.load_key_networks); one query
        per 500 ids."""
        ids = sorted(set(key_ids))
        found: dict[int, list[KeyNetwork]] = {key_id: [] for key_id in ids}
        t = key_networks
        with self._engine.begin() as conn:
            for start in range(0, len(ids), 500):
                query = (
                    select(t)
                    .where(t.c.key_id.in_(ids[start : start + 500]))
                    .order_by(t.c.key_id, t.c.last_seen_ms, t.c.network)
                )
                for row in conn.execute(query):
                    m = row._mapping
                    found[int(m["key_id"])].append(
                        KeyNetwork(
                            int(m["key_id"]),
                            m["network"],
                            int(m["first_seen_ms"]),
                            int(m["last_seen_ms"]),
                            int(m["requests"]),
                        )
                    )
        return found

    def record_key_networks(self, rows: Sequence[KeyNetwork]) -> None:
        """Upsert per (key_id, network) with INSERT ... ON CONFLICT DO UPDATE (see
        Store.record_key_networks); one transaction, no revision bump."""
        check_key_networks(rows)
        if not rows:
            return
        t = key_networks
        dialect = self._engine.dialect.name
        upsert = (pg_insert if dialect == "postgresql" else sqlite_insert)(t)
        new = upsert.excluded
        stmt = upsert.on_conflict_do_update(
            index_elements=[t.c.key_id, t.c.network],
            set_={
                "requests": t.c.requests + new.requests,
                "first_seen_ms": case(
                    (new.first_seen_ms < t.c.first_seen_ms, new.first_seen_ms),
                    else_=t.c.first_seen_ms,
                ),
                "last_seen_ms": case(
                    (new.last_seen_ms > t.c.last_seen_ms, new.last_seen_ms),
                    else_=t.c.last_seen_ms,
                ),
            },
        )
        merged: dict[tuple[int, str], KeyNetwork] = {}
        for row in rows:  # one statement row per pair (ON CONFLICT may not touch a row twice)
            old = merged.get((row.key_id, row.network))
            merged[(row.key_id, row.network)] = (
                row
                if old is None
                else KeyNetwork(
                    row.key_id,
                    row.network,
                    min(old.first_seen_ms, row.first_seen_ms),
                    max(old.last_seen_ms, row.last_seen_ms),
                    old.requests + row.requests,
                )
            )
        params = [
            {
                "key_id": r.key_id,
                "network": r.network,
                "first_seen_ms": r.first_seen_ms,
                "last_seen_ms": r.last_seen_ms,
                "requests": r.requests,
            }
            for r in merged.values()
        ]
        with self._writer.begin() as conn:
            conn.execute(stmt, params)

    def usage_summary(
        self, *, api_key: str | None = None, since_ms: int | None = None, by: UsageBy = "endpoint"
    ) -> Sequence[UsageSummaryRow]:
        """Two queries: one GROUP BY (endpoint: method, path; status: http_status, ret_code)
        for counts, average and maximum; one window query (ROW_NUMBER and COUNT over each
        group, ordered by latency) picking the nearest-rank p50 and p99 rows."""
        check_usage_by(by)
        t = usage_log
        keys = [t.c.method, t.c.path] if by == "endpoint" else [t.c.http_status, t.c.ret_code]
        error = case(((t.c.ret_code != 0) | (t.c.http_status >= 400), 1), else_=0)
        where = []
        if api_key is not None:
            where.append(t.c.api_key == api_key)
        if since_ms is not None:
            where.append(t.c.at_ms >= since_ms)
        totals = (
            select(
                *keys,
                func.count().label("requests"),
                func.sum(error).label("errors"),
                func.sum(t.c.latency_us).label("total_us"),
                func.max(t.c.latency_us).label("max_us"),
            )
            .where(*where)
            .group_by(*keys)
        )
        ranked = (
            select(
                *keys,
                t.c.latency_us,
                func.row_number().over(partition_by=keys, order_by=t.c.latency_us).label("rn"),
                func.count().over(partition_by=keys).label("n"),
            )
            .where(*where)
            .subquery()
        )
        # nearest rank ceil(p/100 * n) = (p * n + 99) // 100 (integer division in SQL)
        p50_rank, p99_rank = (ranked.c.n * 50 + 99) // 100, (ranked.c.n * 99 + 99) // 100
        picks = select(
            *[ranked.c[k.name] for k in keys],
            ranked.c.latency_us,
            (ranked.c.rn == p50_rank).label("is_p50"),
            (ranked.c.rn == p99_rank).label("is_p99"),
        ).where(or_(ranked.c.rn == p50_rank, ranked.c.rn == p99_rank))
        with self._engine.begin() as conn:
            found = conn.execute(totals).all()
            percentiles: dict[tuple[Any, Any], dict[int, int]] = {}
            for row in conn.execute(picks):
                chosen = percentiles.setdefault((row[0], row[1]), {})
                if row.is_p50:
                    chosen[50] = int(row.latency_us)
                if row.is_p99:
                    chosen[99] = int(row.latency_us)
        summary = []
        for row in found:
            chosen = percentiles.get((row[0], row[1]), {})
            summary.append(
                UsageSummaryRow(
                    group=f"{row[0]} {row[1]}" if by == "endpoint" else f"{row[0]}/{row[1]}",
                    requests=int(row.requests),
                    errors=int(row.errors or 0),
                    avg_latency_us=int(row.total_us or 0) // int(row.requests),
                    max_latency_us=int(row.max_us or 0),
                    p50_latency_us=chosen.get(50, 0),
                    p99_latency_us=chosen.get(99, 0),
                )
            )
        return sort_summary(summary)

    def count_usage(self, *, api_key: str, since_ms: int) -> int:
        """One COUNT(*) over usage_log on its (api_key, at_ms) index."""
        t = usage_log
        query = select(func.count()).where(
            (t.c.api_key == api_key)
            & (t.c.at_ms >= since_ms)
            & t.c.authenticated.is_(True)
            & (t.c.ret_code == 0)
        )
        with self._engine.begin() as conn:
            return int(conn.execute(query).scalar_one())

    def record_alert(self, record: AlertRecord) -> bool:
        """One INSERT ... ON CONFLICT (key_id, condition, window_ms) DO NOTHING (SQLite and
        PostgreSQL); True when it inserted the row. No revision bump or lock."""
        check_alert_record(record)
        values = {
            "key_id": record.key_id,
            "api_key": record.api_key,
            "uid": record.uid,
            "kind": record.kind.value,
            "condition": record.condition,
            "window_ms": record.window_ms,
            "at_ms": record.at_ms,
            "summary": record.summary,
            "details_json": canonical_json(record.details),
        }
        unique = ["key_id", "condition", "window_ms"]
        statement: Insert
        if self._engine.dialect.name == "postgresql":
            statement = (
                pg_insert(alert_log).values(**values).on_conflict_do_nothing(index_elements=unique)
            )
        else:
            statement = (
                sqlite_insert(alert_log)
                .values(**values)
                .on_conflict_do_nothing(index_elements=unique)
            )
        with self._writer.begin() as conn:  # RETURNING: rowcount is not reliable with psycopg
            return conn.execute(statement.returning(alert_log.c.id)).first() is not None

    def list_alerts(
        self, *, api_key: str | None = None, since_ms: int | None = None, limit: int | None = None
    ) -> Sequence[AlertRecord]:
        """One SELECT ordered by (at_ms, id); the newest `limit` when limit is given."""
        t = alert_log
        query = select(t)
        if api_key is not None:
            query = query.where(t.c.api_key == api_key)
        if since_ms is not None:
            query = query.where(t.c.at_ms >= since_ms)
        if limit is not None:
            query = query.order_by(t.c.at_ms.desc(), t.c.id.desc()).limit(max(limit, 0))
        else:
            query = query.order_by(t.c.at_ms, t.c.id)
        with self._engine.begin() as conn:
            rows = conn.execute(query).all()
        records = [_alert_from_row(row) for row in rows]
        return records[::-1] if limit is not None else records

    def purge_alerts(self, *, before_ms: int) -> int:
        """Delete alert rows with at_ms and window_ms both < before_ms (ms),
        _ALERT_PURGE_BATCH rows per transaction (through the at_ms index); returns how many
        went (see Store.purge_alerts)."""
        t = alert_log
        old = (t.c.at_ms < before_ms) & (t.c.window_ms < before_ms)
        return self._delete_in_batches(t.c.id, old, _ALERT_PURGE_BATCH)

    def _delete_in_batches(
        self, key: Column[Any], where: ColumnElement[bool], batch_rows: int
    ) -> int:
        """DELETE the rows of key's table matching where, batch_rows per transaction (short
        transactions that never hold up writers); returns how many went."""
        table = key.table
        batch = select(key).where(where).limit(batch_rows)
        gone = 0
        while True:
            with self._writer.begin() as conn:
                deleted = conn.execute(delete(table).where(key.in_(batch))).rowcount
            gone += max(int(deleted), 0)
            if deleted < batch_rows:
                return gone

    def revision(self) -> int:
        """Monotonic counter bumped by every key or account change; 0 for a new store."""
        with self._engine.begin() as conn:
            value = conn.execute(
                select(store_meta.c.value).where(store_meta.c.name == REVISION_ROW)
            ).scalar_one()
        return int(value)

    def close(self) -> None:
        """Dispose of the engine's connection pool."""
        self._engine.dispose()


class _NothingChangedError(Exception):
    """Raised inside a write transaction to roll it back when it changed nothing."""


def _latest_checkpoint(conn: Connection) -> AuditCheckpoint | None:
    row = conn.execute(
        select(audit_checkpoint).order_by(audit_checkpoint.c.through_id.desc()).limit(1)
    ).first()
    if row is None:
        return None
    m = row._mapping
    return AuditCheckpoint(
        through_id=int(m["through_id"]),
        last_row_hash=m["last_row_hash"],
        at_ms=int(m["at_ms"]),
        signature=m["signature"],
    )


def _append_audit(conn: Connection, events: Sequence[AuditEvent]) -> list[AuditRecord]:
    """Chain events after the last row (or the latest checkpoint, or genesis) and insert them.

    Call inside a write transaction (the revision row lock makes reading the head race-free).
    """
    if not events:
        return []
    head = conn.execute(
        select(audit_log.c.id, audit_log.c.row_hash).order_by(audit_log.c.id.desc()).limit(1)
    ).first()
    if head is not None:
        next_id, prev = int(head.id) + 1, str(head.row_hash)
    else:
        checkpoint = _latest_checkpoint(conn)
        next_id = 1 if checkpoint is None else checkpoint.through_id + 1
        prev = GENESIS_HASH if checkpoint is None else checkpoint.last_row_hash
    stored = seal_all(events, first_id=next_id, prev_hash=prev)
    conn.execute(insert(audit_log), [_audit_values(r) for r in stored])
    return stored


def _audit_values(record: AuditRecord) -> dict[str, Any]:
    event = record.event
    return {
        "id": record.id,
        "at_ms": event.at_ms,
        "actor": event.actor,
        "action": str(event.action),
        "target": event.target,
        "before_json": canonical_json(event.before),
        "after_json": canonical_json(event.after),
        "source_ip": event.source_ip,
        "prev_hash": record.prev_hash,
        "row_hash": record.row_hash,
    }


def _audit_from_row(row: Row[Any]) -> AuditRecord:
    """The stored row as a record, exactly as stored (verify_chain recomputes the hash).

    A row edited into something that is not an event (bad JSON, a forbidden field) is read with
    the raw text under "_unreadable", so verification reports it instead of crashing.
    """
    m = row._mapping
    fields = {
        "at_ms": int(m["at_ms"]),
        "actor": m["actor"],
        "action": m["action"],
        "target": m["target"],
        "source_ip": m["source_ip"],
    }
    try:
        event = AuditEvent(
            **fields, before=_json_object(m["before_json"]), after=_json_object(m["after_json"])
        )
    except (ValueError, TypeError):
        event = AuditEvent(**fields, before={"_unreadable": str(m["before_json"])[:200]})
    return AuditRecord(
        id=int(m["id"]), event=event, prev_hash=m["prev_hash"], row_hash=m["row_hash"]
    )


def _alert_from_row(row: Row[Any]) -> AlertRecord:
    m = row._mapping
    return AlertRecord(
        key_id=int(m["key_id"]),
        api_key=m["api_key"],
        uid=int(m["uid"]),
        kind=AlertKind(m["kind"]),
        condition=m["condition"],
        window_ms=int(m["window_ms"]),
        at_ms=int(m["at_ms"]),
        summary=m["summary"],
        details=_json_object(m["details_json"]),
    )


def _json_object(text: str) -> dict[str, Any]:
    """Parse a JSON object; raises ValueError for anything else."""
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


#: usage rows deleted per transaction by purge_usage.
_USAGE_PURGE_BATCH = 20_000
#: alert rows deleted per transaction by purge_alerts.
_ALERT_PURGE_BATCH = 20_000
#: usage_log columns in UsageEvent's field order (a UsageEvent is its own parameter tuple).
_USAGE_COLUMNS = UsageEvent._fields
_USAGE_COLUMN_LIST = ", ".join(_USAGE_COLUMNS)
#: the usage INSERT with {values} = one DBAPI marker per column (SQLite: "?").
_USAGE_INSERT = (
    f"INSERT INTO usage_log ({_USAGE_COLUMN_LIST}) "  # noqa: S608
    "VALUES ({values}) ON CONFLICT (row_id) DO NOTHING"
)
_USAGE_COPY = f"COPY usage_log ({_USAGE_COLUMN_LIST}) FROM STDIN"
#: per-connection staging table for batches holding already-stored row_ids (emptied at commit).
_USAGE_STAGE_CREATE = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS usage_log_stage ON COMMIT DELETE ROWS AS "  # noqa: S608
    f"SELECT {_USAGE_COLUMN_LIST} FROM usage_log WITH NO DATA"
)
_USAGE_STAGE_COPY = f"COPY usage_log_stage ({_USAGE_COLUMN_LIST}) FROM STDIN"
_USAGE_STAGE_MOVE = (
    f"INSERT INTO usage_log ({_USAGE_COLUMN_LIST}) SELECT {_USAGE_COLUMN_LIST} "  # noqa: S608
    "FROM usage_log_stage ON CONFLICT (row_id) DO NOTHING"
)


def _copy_text(conn: Connection, sql: str, chunks: Sequence[bytes]) -> None:
    """COPY ... FROM STDIN of ready COPY text through the psycopg connection under conn, inside
    conn's transaction (psycopg sends it in pieces, waiting with the GIL released)."""
    driver = conn.connection.driver_connection
    assert driver is not None
    with driver.cursor() as cursor, cursor.copy(sql) as copy:
        for chunk in chunks:
            copy.write(chunk)


def _forward(ms: int) -> ColumnElement[Any]:
    """SQL for "ms when later than the stored last_used_at_ms, else the stored value"."""
    col = api_keys.c.last_used_at_ms
    return case((or_(col.is_(None), col < ms), ms), else_=col)


def _account_exists(conn: Connection, uid: int) -> bool:
    return conn.execute(select(accounts.c.uid).where(accounts.c.uid == uid)).first() is not None


def _account_values(account: Account) -> dict[str, Any]:
    return {
        "uid": account.uid,
        "parent_uid": account.parent_uid,
        "username": account.username,
        "note": account.note,
        "status": str(account.status),
        "created_at_ms": account.created_at_ms,
        "rate_limits": account.rate_limits.to_text(),
    }


def _account_from_row(row: Row[Any]) -> Account:
    m = row._mapping
    return Account(
        uid=int(m["uid"]),
        parent_uid=None if m["parent_uid"] is None else int(m["parent_uid"]),
        created_at_ms=int(m["created_at_ms"]),
        username=m["username"],
        note=m["note"],
        status=AccountStatus(m["status"]),
        rate_limits=RateOverrides.parse(m["rate_limits"]),
    )


def _key_values(key: ApiKey) -> dict[str, Any]:
    """Column values of a key, without id."""
    return {
        "api_key": key.api_key,
        "uid": key.uid,
        "key_type": str(key.key_type),
        "read_only": key.read_only,
        "permissions": key.permissions.to_text(),
        "ips": key.ips.to_text(),
        "note": key.note,
        "status": str(key.status),
        "secret_ciphertext": key.secret_ciphertext,
        "rsa_public_key": key.rsa_public_key,
        "created_at_ms": key.created_at_ms,
        "expires_at_ms": key.expires_at_ms,
        "revoked_at_ms": key.revoked_at_ms,
        "last_used_at_ms": key.last_used_at_ms,
        "updated_at_ms": key.updated_at_ms,
        "rate_limits": key.rate_limits.to_text(),
        "daily_quota": key.daily_quota,
        "replay_guard": key.replay_guard,
    }


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _key_from_row(row: Row[Any]) -> ApiKey:
    m = row._mapping
    ciphertext = m["secret_ciphertext"]
    return ApiKey(
        id=int(m["id"]),
        api_key=m["api_key"],
        uid=int(m["uid"]),
        key_type=KeyType(m["key_type"]),
        read_only=bool(m["read_only"]),
        permissions=Permissions.parse(m["permissions"]),
        ips=IpAllowlist.parse(m["ips"]),
        created_at_ms=int(m["created_at_ms"]),
        expires_at_ms=_opt_int(m["expires_at_ms"]),
        note=m["note"],
        status=KeyStatus(m["status"]),
        secret_ciphertext=None if ciphertext is None else bytes(ciphertext),
        rsa_public_key=m["rsa_public_key"],
        revoked_at_ms=_opt_int(m["revoked_at_ms"]),
        last_used_at_ms=_opt_int(m["last_used_at_ms"]),
        updated_at_ms=_opt_int(m["updated_at_ms"]),
        rate_limits=RateOverrides.parse(m["rate_limits"]),
        daily_quota=_opt_int(m["daily_quota"]),
        replay_guard=bool(m["replay_guard"]),
    )
