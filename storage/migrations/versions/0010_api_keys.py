"""Management API keys.

New table ``api_keys`` (``prefix``: the key's first 8 characters, indexed for lookup;
``hash``: hex SHA-256 of the whole key, unique; ``role`` 'operator' | 'reseller' |
'customer'; ``account_id`` NULL exactly for operators, else a foreign key to
``accounts``; ``name``; ``created_at``; ``revoked_at`` NULL while the key is valid).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.tables import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  autoincrement=True, nullable=False),
        sa.Column("prefix", sa.String(8), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("hash", name=op.f("uq_api_keys_hash")),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_api_keys_account_id_accounts")
        ),
        sa.CheckConstraint(
            "role IN ('operator', 'reseller', 'customer')", name=op.f("ck_api_keys_role")
        ),
        sa.CheckConstraint(
            "(role = 'operator' AND account_id IS NULL)"
            " OR (role <> 'operator' AND account_id IS NOT NULL)",
            name=op.f("ck_api_keys_role_account"),
        ),
    )  # fmt: skip
    op.create_index("ix_api_keys_prefix", "api_keys", ["prefix"])


def downgrade() -> None:
    op.drop_index("ix_api_keys_prefix", table_name="api_keys")
    op.drop_table("api_keys")
