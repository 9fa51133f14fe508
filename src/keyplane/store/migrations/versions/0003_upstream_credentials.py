"""Upstream (exchange) credentials for gateway mode, encrypted under the key-encryption key.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create upstream_credentials (one row per name; the gateway uses "default")."""
    op.create_table(
        "upstream_credentials",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("api_key", sa.String(64), nullable=False),
        sa.Column("key_type", sa.String(16), nullable=False),
        sa.Column("secret_ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("set_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_upstream_credentials"),
    )


def downgrade() -> None:
    """Drop upstream_credentials."""
    op.drop_table("upstream_credentials")
