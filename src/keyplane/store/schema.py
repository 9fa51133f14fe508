"""The SQL schema of the store, as SQLAlchemy Core tables.

The Alembic migrations in keyplane/store/migrations/versions/ build exactly this schema; a test
(tests/store/test_migrations.py) compares the two on SQLite and PostgreSQL.

Times are BIGINT ms since epoch. Enums are stored as their text values; permissions in the CLI form
("Spot:SpotTrade,..."), IP lists in the wire form ("*" when unbound, else "1.2.3.4,10.0.0.0/8").
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)

__all__ = [
    "REVISION_ROW",
    "accounts",
    "alert_log",
    "api_keys",
    "audit_checkpoint",
    "audit_log",
    "key_networks",
    "metadata",
    "store_meta",
    "upstream_credentials",
    "usage_log",
]

#: constraint names are deterministic so migrations can refer to them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: name of the store_meta row holding the store-wide revision counter.
REVISION_ROW = "revision"

metadata = MetaData(naming_convention=NAMING_CONVENTION)

#: BIGINT on PostgreSQL; INTEGER on SQLite so the column is the rowid and autoincrements.
_Id = BigInteger().with_variant(Integer, "sqlite")

accounts = Table(
    "accounts",
    metadata,
    Column("uid", _Id, primary_key=True, autoincrement=True),
    Column("parent_uid", _Id, ForeignKey("accounts.uid"), nullable=True, index=True),
    Column("username", Text, nullable=False, default=""),
    Column("note", Text, nullable=False, default=""),
    Column("status", String(16), nullable=False),
    Column("created_at_ms", BigInteger, nullable=False),
    Column("rate_limits", Text, nullable=False, server_default=""),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("api_key", String(64), nullable=False, unique=True, index=True),
    Column("uid", _Id, ForeignKey("accounts.uid"), nullable=False, index=True),
    Column("key_type", String(16), nullable=False),
    Column("read_only", Boolean, nullable=False),
    Column("permissions", Text, nullable=False),
    Column("ips", Text, nullable=False),
    Column("note", Text, nullable=False, default=""),
    Column("status", String(16), nullable=False),
    Column("secret_ciphertext", LargeBinary, nullable=True),
    Column("rsa_public_key", Text, nullable=True),
    Column("created_at_ms", BigInteger, nullable=False),
    Column("expires_at_ms", BigInteger, nullable=True),
    Column("revoked_at_ms", BigInteger, nullable=True),
    Column("last_used_at_ms", BigInteger, nullable=True),
    Column("updated_at_ms", BigInteger, nullable=True),
    Column("rate_limits", Text, nullable=False, server_default=""),
    Column("daily_quota", BigInteger, nullable=True),
    Column("replay_guard", Boolean, nullable=False, server_default=false()),
)

store_meta = Table(
    "store_meta",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

#: exchange credentials of gateway mode (keyplane serve --upstream-kind bybit); one row per name.
upstream_credentials = Table(
    "upstream_credentials",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("api_key", String(64), nullable=False),
    Column("key_type", String(16), nullable=False),
    Column("secret_ciphertext", LargeBinary, nullable=False),
    Column("set_at_ms", BigInteger, nullable=False),
)

#: the hash-chained audit trail (keyplane.audit): ids are assigned 1, 2, ... by the store (no
#: gaps, continuing after a purge checkpoint); before/after are canonical JSON text.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=False),
    Column("at_ms", BigInteger, nullable=False, index=True),
    Column("actor", String(128), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(128), nullable=False, index=True),
    Column("before_json", Text, nullable=False),
    Column("after_json", Text, nullable=False),
    Column("source_ip", String(64), nullable=True),
    Column("prev_hash", String(64), nullable=False),
    Column("row_hash", String(64), nullable=False),
)

#: one row per purge: rows 1..through_id were deleted, the last had last_row_hash; signature is
#: HMAC-SHA256 hex under a KEK-derived key (keyplane.audit.chain).
audit_checkpoint = Table(
    "audit_checkpoint",
    metadata,
    Column("through_id", _Id, primary_key=True, autoincrement=False),
    Column("last_row_hash", String(64), nullable=False),
    Column("at_ms", BigInteger, nullable=False),
    Column("signature", String(64), nullable=False),
)

#: one row per request that named an api key (keyplane.usage): row_id is unique per row across
#: nodes ("<node id>-<sequence>") so a replayed spill file never stores a row twice; it is the
#: primary key (no serial id: a sequence call per row halved PostgreSQL COPY ingest). at_ms is
#: ms since epoch, latency_us µs inside keyplane, request/response_bytes body sizes in bytes.
usage_log = Table(
    "usage_log",
    metadata,
    Column("row_id", String(64), primary_key=True),
    Column("at_ms", BigInteger, nullable=False, index=True),
    Column("key_id", _Id, nullable=True),
    Column("uid", _Id, nullable=True),
    Column("api_key", String(64), nullable=False),
    Column("method", String(8), nullable=False),
    Column("path", String(255), nullable=False),
    Column("http_status", Integer, nullable=False),
    Column("ret_code", Integer, nullable=False),
    Column("request_bytes", BigInteger, nullable=False),
    Column("response_bytes", BigInteger, nullable=False),
    Column("latency_us", BigInteger, nullable=False),
    Column("client_ip", String(64), nullable=False),
    Column("authenticated", Boolean, nullable=False),
    Index("ix_usage_log_api_key_at_ms", "api_key", "at_ms"),
)

#: per key, the source networks (IPv4 /24, IPv6 /48) its authenticated requests came from: the
#: anomaly rules' history (keyplane.anomaly.history), shared by every node. Rows of a purged key
#: are purged with it.
key_networks = Table(
    "key_networks",
    metadata,
    Column("key_id", _Id, primary_key=True, autoincrement=False),
    Column("network", String(64), primary_key=True),
    Column("first_seen_ms", BigInteger, nullable=False),
    Column("last_seen_ms", BigInteger, nullable=False),
    Column("requests", BigInteger, nullable=False),
)

#: one row per alert condition met by a key in a window (keyplane.alerts.model.AlertRecord);
#: the unique (key_id, condition, window_ms) makes "record unless already recorded" one INSERT
#: ... ON CONFLICT DO NOTHING, so one alert is sent per key per condition per window across
#: nodes and restarts. window_ms / at_ms are ms since epoch; details_json canonical JSON text.
alert_log = Table(
    "alert_log",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("key_id", _Id, nullable=False),
    Column("api_key", String(64), nullable=False, index=True),
    Column("uid", _Id, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("condition", String(128), nullable=False),
    Column("window_ms", BigInteger, nullable=False),
    Column("at_ms", BigInteger, nullable=False, index=True),
    Column("summary", Text, nullable=False),
    Column("details_json", Text, nullable=False),
    UniqueConstraint("key_id", "condition", "window_ms"),
)
