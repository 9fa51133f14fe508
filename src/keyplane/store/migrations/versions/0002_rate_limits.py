"""Per-key and per-account rate-limit overrides ("route=N,..." text, "" = route defaults).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add rate_limits to accounts and api_keys."""
    for table in ("accounts", "api_keys"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("rate_limits", sa.Text(), nullable=False, server_default=""))


def downgrade() -> None:
    """Drop the rate_limits columns."""
    for table in ("api_keys", "accounts"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("rate_limits")
