"""Reseller chains: the wholesale cost of every reseller level of a rated call.

New table ``rated_call_charges`` (``rated_call_id``, ``level``, ``account_id``,
``cost_micros``, ``deck``, ``rate_micros``), one row per reseller of the call's chain
(level 1 = the customer's reseller), so reports show each reseller's margin. No foreign
key to ``rated_calls`` (written in the same transaction as the call, on the hot path).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rated_call_charges",
        sa.Column("rated_call_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  nullable=False, autoincrement=False),
        sa.Column("level", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("cost_micros", sa.BigInteger(), nullable=False),
        sa.Column("deck", sa.String(64), nullable=False),
        sa.Column("rate_micros", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("rated_call_id", "level", name=op.f("pk_rated_call_charges")),
    )  # fmt: skip


def downgrade() -> None:
    op.drop_table("rated_call_charges")
