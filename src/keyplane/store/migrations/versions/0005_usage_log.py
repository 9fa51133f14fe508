"""The usage log: one row per request that named an api key.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create usage_log (unique row_id; indexed by at_ms, key_id and api_key)."""
    op.create_table(
        "usage_log",
        sa.Column("id", _Id, autoincrement=True, nullable=False),
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
        sa.PrimaryKeyConstraint("id", name="pk_usage_log"),
        sa.UniqueConstraint("row_id", name="uq_usage_log_row_id"),
    )
    op.create_index("ix_usage_log_at_ms", "usage_log", ["at_ms"], unique=False)
    op.create_index("ix_usage_log_key_id", "usage_log", ["key_id"], unique=False)
    op.create_index("ix_usage_log_api_key", "usage_log", ["api_key"], unique=False)


def downgrade() -> None:
    """Drop usage_log and its indexes."""
    op.drop_index("ix_usage_log_api_key", table_name="usage_log")
    op.drop_index("ix_usage_log_key_id", table_name="usage_log")
    op.drop_index("ix_usage_log_at_ms", table_name="usage_log")
    op.drop_table("usage_log")
