"""LCR: carriers, margin guards, and the carrier side of every rated call.

New tables ``carriers`` (buy deck, dial template, priority, weight) and ``margin_guards``
(per account, scope ``account`` or ``reseller``; micro-units and basis points). Rated
calls gain ``carrier``, ``buy_cost_micros`` and ``margin_micros``, added with server
defaults ('' and 0) so existing rows and older writers stay valid; plain ``ADD COLUMN``
on both backends (no table copy on SQLite).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
RATED_CALL_COLUMNS = ("carrier", "buy_cost_micros", "margin_micros")


def upgrade() -> None:
    op.create_table(
        "carriers",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("buy_deck", sa.String(64), nullable=False),
        sa.Column("dial_template", sa.Text(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("weight", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_carriers")),
    )
    op.create_table(
        "margin_guards",
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("min_margin_micros", sa.BigInteger(), nullable=False),
        sa.Column("min_margin_percent_bp", sa.Integer(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("scope", "account_id", name=op.f("pk_margin_guards")),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_margin_guards_account_id_accounts")
        ),
        sa.CheckConstraint(
            "scope IN ('account', 'reseller')", name=op.f("ck_margin_guards_scope")
        ),
    )
    op.add_column(
        "rated_calls", sa.Column("carrier", sa.String(64), nullable=False, server_default="")
    )
    op.add_column(
        "rated_calls",
        sa.Column("buy_cost_micros", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.add_column(
        "rated_calls",
        sa.Column("margin_micros", sa.BigInteger(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    with op.batch_alter_table("rated_calls") as batch:
        for column in reversed(RATED_CALL_COLUMNS):
            batch.drop_column(column)
    op.drop_table("margin_guards")
    op.drop_table("carriers")
