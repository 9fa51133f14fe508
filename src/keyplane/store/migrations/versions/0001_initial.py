"""Initial schema: accounts, api_keys and store_meta (revision counter starts at 0).

Revision ID: 0001
Revises:
Create Date: 2024-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copy of the id type at this revision (do not import keyplane.store.schema here).
_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create the three tables and the store_meta row revision=0."""
    op.create_table(
        "accounts",
        sa.Column("uid", _Id, autoincrement=True, nullable=False),
        sa.Column("parent_uid", _Id, nullable=True),
        sa.Column("username", sa.Text(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["parent_uid"], ["accounts.uid"], name="fk_accounts_parent_uid_accounts"
        ),
        sa.PrimaryKeyConstraint("uid", name="pk_accounts"),
    )
    op.create_index("ix_accounts_parent_uid", "accounts", ["parent_uid"], unique=False)

    op.create_table(
        "api_keys",
        sa.Column("id", _Id, autoincrement=True, nullable=False),
        sa.Column("api_key", sa.String(length=64), nullable=False),
        sa.Column("uid", _Id, nullable=False),
        sa.Column("key_type", sa.String(length=16), nullable=False),
        sa.Column("read_only", sa.Boolean(), nullable=False),
        sa.Column("permissions", sa.Text(), nullable=False),
        sa.Column("ips", sa.Text(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("secret_ciphertext", sa.LargeBinary(), nullable=True),
        sa.Column("rsa_public_key", sa.Text(), nullable=True),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("expires_at_ms", sa.BigInteger(), nullable=True),
        sa.Column("revoked_at_ms", sa.BigInteger(), nullable=True),
        sa.Column("last_used_at_ms", sa.BigInteger(), nullable=True),
        sa.Column("updated_at_ms", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["uid"], ["accounts.uid"], name="fk_api_keys_uid_accounts"),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
    )
    op.create_index("ix_api_keys_api_key", "api_keys", ["api_key"], unique=True)
    op.create_index("ix_api_keys_uid", "api_keys", ["uid"], unique=False)

    store_meta = op.create_table(
        "store_meta",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_store_meta"),
    )
    op.bulk_insert(store_meta, [{"name": "revision", "value": 0}])


def downgrade() -> None:
    """Drop everything this revision created."""
    op.drop_table("store_meta")
    op.drop_index("ix_api_keys_uid", table_name="api_keys")
    op.drop_index("ix_api_keys_api_key", table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_index("ix_accounts_parent_uid", table_name="accounts")
    op.drop_table("accounts")
