"""key_networks: the source networks of each key, shared history of the anomaly rules.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create key_networks, keyed by (key_id, network)."""
    op.create_table(
        "key_networks",
        sa.Column("key_id", _Id, autoincrement=False, nullable=False),
        sa.Column("network", sa.String(64), nullable=False),
        sa.Column("first_seen_ms", sa.BigInteger(), nullable=False),
        sa.Column("last_seen_ms", sa.BigInteger(), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key_id", "network", name="pk_key_networks"),
    )


def downgrade() -> None:
    """Drop key_networks."""
    op.drop_table("key_networks")
