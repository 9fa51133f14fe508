"""Per-key daily request quota and replay-guard flag.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add api_keys.daily_quota (NULL = no quota) and api_keys.replay_guard (default off)."""
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("daily_quota", sa.BigInteger(), nullable=True))
        batch.add_column(
            sa.Column("replay_guard", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    """Drop the two columns."""
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("replay_guard")
        batch.drop_column("daily_quota")
