"""usage_log for fast ingest: row_id is the primary key (no serial id), one (api_key, at_ms) index.

The serial id cost a sequence call per row and, with the key_id and api_key indexes, held
PostgreSQL COPY ingest near 45,000 rows/s; keyed by row_id with indexes on at_ms and
(api_key, at_ms) (what `keyplane usage --key K --since ...` filters on) it goes above 75,000.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
#: fixed column names (no input reaches these statements)
_COLUMNS = (
    "row_id, at_ms, key_id, uid, api_key, method, path, http_status, ret_code, request_bytes, "
    "response_bytes, latency_us, client_ip, authenticated"
)


def _create(name: str, *, serial_id: bool) -> None:
    columns: list[sa.schema.SchemaItem] = [
        sa.Column("row_id", sa.String(64), nullable=False),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.Column("key_id", _Id, nullable=True),
        sa.Column("uid", _Id, nullable=True),
        sa.Column("api_key", sa.String(64), nullable=False),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("path", sa.String(255), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=False),
        sa.Column("ret_code", sa.Integer(), nullable=False),
        sa.Column("request_bytes", sa.BigInteger(), nullable=False),
        sa.Column("response_bytes", sa.BigInteger(), nullable=False),
        sa.Column("latency_us", sa.BigInteger(), nullable=False),
        sa.Column("client_ip", sa.String(64), nullable=False),
        sa.Column("authenticated", sa.Boolean(), nullable=False),
    ]
    if serial_id:
        op.create_table(
            name,
            sa.Column("id", _Id, autoincrement=True, nullable=False),
            *columns,
            sa.PrimaryKeyConstraint("id", name="pk_usage_log"),
            sa.UniqueConstraint("row_id", name="uq_usage_log_row_id"),
        )
    else:
        op.create_table(name, *columns, sa.PrimaryKeyConstraint("row_id", name="pk_usage_log"))


def upgrade() -> None:
    """Rebuild usage_log keyed by row_id (rows kept); indexes at_ms and (api_key, at_ms)."""
    for index in ("ix_usage_log_api_key", "ix_usage_log_key_id", "ix_usage_log_at_ms"):
        op.drop_index(index, table_name="usage_log")
    op.rename_table("usage_log", "usage_log_0005")
    if op.get_bind().dialect.name == "postgresql":  # the old table's key name is still taken
        op.execute("ALTER TABLE usage_log_0005 RENAME CONSTRAINT pk_usage_log TO pk_usage_log_0005")
    _create("usage_log", serial_id=False)
    op.execute(f"INSERT INTO usage_log ({_COLUMNS}) SELECT {_COLUMNS} FROM usage_log_0005")  # noqa: S608
    op.drop_table("usage_log_0005")
    op.create_index("ix_usage_log_at_ms", "usage_log", ["at_ms"], unique=False)
    op.create_index("ix_usage_log_api_key_at_ms", "usage_log", ["api_key", "at_ms"], unique=False)


def downgrade() -> None:
    """Back to the 0005 layout (serial id, unique row_id, indexes at_ms, key_id, api_key)."""
    op.drop_index("ix_usage_log_api_key_at_ms", table_name="usage_log")
    op.drop_index("ix_usage_log_at_ms", table_name="usage_log")
    op.rename_table("usage_log", "usage_log_0007")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE usage_log_0007 RENAME CONSTRAINT pk_usage_log TO pk_usage_log_0007")
    _create("usage_log", serial_id=True)
    op.execute(f"INSERT INTO usage_log ({_COLUMNS}) SELECT {_COLUMNS} FROM usage_log_0007")  # noqa: S608
    op.drop_table("usage_log_0007")
    op.create_index("ix_usage_log_at_ms", "usage_log", ["at_ms"], unique=False)
    op.create_index("ix_usage_log_key_id", "usage_log", ["key_id"], unique=False)
    op.create_index("ix_usage_log_api_key", "usage_log", ["api_key"], unique=False)
