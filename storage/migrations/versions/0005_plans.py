"""Plans: volume tiers, bundled minutes, and the bundle side of every rated call.

New tables ``tier_plans`` (one per account; tiers as JSON ``[[threshold, basis_points],
...]``), ``bundles`` (seconds per period for a JSON list of prefixes) and
``bundle_assignments`` (account -> bundle, from/to). Rated calls gain ``bundle`` (the
bundle whose seconds the call used, '' = none) and ``bundle_seconds`` (how many), added
with server defaults so existing rows and older writers stay valid; plain ``ADD
COLUMN`` on both backends (no table copy on SQLite).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
RATED_CALL_COLUMNS = ("bundle", "bundle_seconds")


def upgrade() -> None:
    op.create_table(
        "tier_plans",
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("counter", sa.String(16), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("period", sa.String(16), nullable=False),
        sa.Column("tiers", sa.Text(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_tier_plans")),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_tier_plans_account_id_accounts")
        ),
        sa.CheckConstraint(
            "counter IN ('calls', 'minutes')", name=op.f("ck_tier_plans_counter")
        ),
        sa.CheckConstraint(
            "mode IN ('graduated', 'all_units')", name=op.f("ck_tier_plans_mode")
        ),
        sa.CheckConstraint("period IN ('month')", name=op.f("ck_tier_plans_period")),
    )
    op.create_table(
        "bundles",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("seconds", sa.BigInteger(), nullable=False),
        sa.Column("prefixes", sa.Text(), nullable=False),
        sa.Column("period", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_bundles")),
        sa.CheckConstraint("seconds >= 0", name=op.f("ck_bundles_seconds")),
        sa.CheckConstraint("period IN ('month')", name=op.f("ck_bundles_period")),
    )
    op.create_table(
        "bundle_assignments",
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("bundle", sa.String(64), nullable=False),
        sa.Column("valid_from", TS, nullable=False),
        sa.Column("valid_to", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint(
            "account_id", "bundle", "valid_from", name=op.f("pk_bundle_assignments")
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_bundle_assignments_account_id_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["bundle"], ["bundles.name"], name=op.f("fk_bundle_assignments_bundle_bundles")
        ),
    )
    op.add_column(
        "rated_calls", sa.Column("bundle", sa.String(64), nullable=False, server_default="")
    )
    op.add_column(
        "rated_calls",
        sa.Column("bundle_seconds", sa.BigInteger(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    with op.batch_alter_table("rated_calls") as batch:
        for column in reversed(RATED_CALL_COLUMNS):
            batch.drop_column(column)
    op.drop_table("bundle_assignments")
    op.drop_table("bundles")
    op.drop_table("tier_plans")
