"""The alert log: one row per alert condition met by a key in a window.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create alert_log, unique on (key_id, condition, window_ms)."""
    op.create_table(
        "alert_log",
        sa.Column("id", _Id, autoincrement=True, nullable=False),
        sa.Column("key_id", _Id, nullable=False),
        sa.Column("api_key", sa.String(64), nullable=False),
        sa.Column("uid", _Id, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("condition", sa.String(128), nullable=False),
        sa.Column("window_ms", sa.BigInteger(), nullable=False),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("details_json", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alert_log"),
        sa.UniqueConstraint("key_id", "condition", "window_ms", name="uq_alert_log_key_id"),
    )
    op.create_index("ix_alert_log_api_key", "alert_log", ["api_key"])
    op.create_index("ix_alert_log_at_ms", "alert_log", ["at_ms"])


def downgrade() -> None:
    """Drop alert_log."""
    op.drop_index("ix_alert_log_at_ms", table_name="alert_log")
    op.drop_index("ix_alert_log_api_key", table_name="alert_log")
    op.drop_table("alert_log")
