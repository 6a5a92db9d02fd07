"""Rated calls listed by start time: an index for the management API's listings.

``GET /v1/accounts/{id}/rated-calls`` pages an account's calls by start time (newest
first, then id); the index ``ix_rated_calls_account_id_started_at_us`` on (account_id,
started_at_us, id) serves it without a sort. Rating and rerating keep using the index on
(account_id, ended_at_us).

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_rated_calls_account_id_started_at_us",
        "rated_calls",
        ["account_id", "started_at_us", "id"],
    )


def downgrade() -> None:
    op.drop_index("ix_rated_calls_account_id_started_at_us", table_name="rated_calls")
