"""Volume tiers: the tier usage a rated call was priced with.

New nullable column ``rated_calls.tier_usage``: the position of the account's tier
counter (answered calls, or billable seconds for a minutes counter) the call's tier
discount was computed from; NULL for a call of an account without a tier plan, and for
every call rated before this migration. Rerating re-prices a tiered call at that usage
(``balance.rerate``).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("rated_calls", sa.Column("tier_usage", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rated_calls") as batch:  # SQLite rebuilds the table
        batch.drop_column("tier_usage")
