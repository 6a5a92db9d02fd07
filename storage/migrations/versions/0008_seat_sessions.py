"""Seats: one row per agent seat session, for the seat cap's record and seat billing.

New table ``seat_sessions`` (``tenant``, ``seat``, ``switch_id``, ``name``,
``started_at_us``, ``ended_at_us`` NULL while live, ``end_reason`` 'logoff' | 'refused'
| 'lost' | ''), unique per ``(switch_id, seat, started_at_us)`` so that a replayed login
is one row, with an index on ``(tenant, started_at_us)`` for listings and seat usage.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "seat_sessions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("seat", sa.String(256), nullable=False),
        sa.Column("switch_id", sa.String(64), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("started_at_us", sa.BigInteger(), nullable=False),
        sa.Column("ended_at_us", sa.BigInteger(), nullable=True),
        sa.Column("end_reason", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_seat_sessions")),
        sa.UniqueConstraint("switch_id", "seat", "started_at_us",
                            name=op.f("uq_seat_sessions_switch_id_seat_started_at_us")),
        sa.CheckConstraint("end_reason IN ('logoff', 'refused', 'lost', '')",
                           name=op.f("ck_seat_sessions_end_reason")),
    )  # fmt: skip
    op.create_index(
        "ix_seat_sessions_tenant_started_at_us",
        "seat_sessions",
        ["tenant", "started_at_us"],
    )


def downgrade() -> None:
    op.drop_index("ix_seat_sessions_tenant_started_at_us", table_name="seat_sessions")
    op.drop_table("seat_sessions")
