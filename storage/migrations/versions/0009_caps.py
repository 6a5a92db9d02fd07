"""Real-time caps and trials: account and carrier columns.

Accounts: ``cps_limit``, ``seat_limit``, ``concurrency_package`` (calls included; the
burst limit is ``concurrency_limit``), ``overage_rate_micros`` (per channel-minute above
the package), ``customers_concurrency_limit`` / ``customers_cps_limit`` (a reseller's cap
over all its customers), ``trial_ends_at``, ``status_reason`` (why an account is
suspended) and ``low_balance`` (JSON thresholds, '' = the configured defaults).
Carriers (trunks): ``concurrency_limit`` and ``cps_limit``. NULL is "no cap" everywhere.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.tables import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_ACCOUNT_INTS = (
    "cps_limit",
    "seat_limit",
    "concurrency_package",
    "customers_concurrency_limit",
    "customers_cps_limit",
)


def upgrade() -> None:
    for name in _ACCOUNT_INTS:
        op.add_column("accounts", sa.Column(name, sa.Integer(), nullable=True))
    op.add_column("accounts", sa.Column("overage_rate_micros", sa.BigInteger(), nullable=True))
    op.add_column("accounts", sa.Column("trial_ends_at", UTCDateTime(), nullable=True))
    op.add_column(
        "accounts",
        sa.Column("status_reason", sa.String(64), nullable=False, server_default=""),
    )
    op.add_column(
        "accounts", sa.Column("low_balance", sa.Text(), nullable=False, server_default="")
    )
    op.add_column("carriers", sa.Column("concurrency_limit", sa.Integer(), nullable=True))
    op.add_column("carriers", sa.Column("cps_limit", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("carriers") as batch:
        batch.drop_column("cps_limit")
        batch.drop_column("concurrency_limit")
    with op.batch_alter_table("accounts") as batch:
        for name in (
            "low_balance",
            "status_reason",
            "trial_ends_at",
            "overage_rate_micros",
            *_ACCOUNT_INTS,
        ):
            batch.drop_column(name)
