"""Rates v2: interval rates, min/max cost, effective windows, time bands.

A prefix may now have several rates (one per time band and effective window), so the
primary key of ``rates`` becomes ``(deck, seq)``, ``seq`` being the rate's place in its
deck (existing rates are numbered in prefix order). New columns:

- ``rates.intervals``: JSON text ``[[start_s, rate_micros_per_min, increment_s], ...]``,
  NULL for a classic rate (``rate_micros`` and the two increments say it all);
- ``rates.min_cost_micros`` (0) / ``rates.max_cost_micros`` (NULL: no cap);
- ``rates.band`` ('' = any time), ``rates.effective_from`` / ``rates.effective_to``
  (NULL = open);
- ``rate_decks.bands``: JSON text ``[[name, [weekday, ...], start_min, end_min], ...]``.

The numbering uses ``UPDATE ... FROM`` with a window function (PostgreSQL, SQLite >=
3.33). On SQLite the primary key change goes through Alembic's batch mode (the table is
copied once). Downgrade keeps, per deck and prefix, the first rate only (lossy).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)

NUMBER_RATES = """
UPDATE rates SET seq = numbered.n
FROM (
    SELECT deck, prefix, ROW_NUMBER() OVER (PARTITION BY deck ORDER BY prefix) - 1 AS n
    FROM rates
) AS numbered
WHERE rates.deck = numbered.deck AND rates.prefix = numbered.prefix
"""

KEEP_FIRST_RATE = """
DELETE FROM rates WHERE EXISTS (
    SELECT 1 FROM rates AS earlier
    WHERE earlier.deck = rates.deck AND earlier.prefix = rates.prefix
    AND earlier.seq < rates.seq
)
"""


def upgrade() -> None:
    op.add_column(
        "rate_decks", sa.Column("bands", sa.Text(), nullable=False, server_default="[]")
    )
    op.add_column("rates", sa.Column("seq", sa.Integer(), nullable=True))
    op.execute(NUMBER_RATES)
    with op.batch_alter_table("rates") as batch:
        batch.alter_column("seq", existing_type=sa.Integer(), nullable=False)
        batch.drop_constraint("pk_rates", type_="primary")
        batch.create_primary_key("pk_rates", ["deck", "seq"])
        batch.add_column(sa.Column("intervals", sa.Text(), nullable=True))
        batch.add_column(
            sa.Column("min_cost_micros", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("max_cost_micros", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("band", sa.String(32), nullable=False, server_default=""))
        batch.add_column(sa.Column("effective_from", TS, nullable=True))
        batch.add_column(sa.Column("effective_to", TS, nullable=True))


def downgrade() -> None:
    op.execute(KEEP_FIRST_RATE)
    with op.batch_alter_table("rates") as batch:
        batch.drop_constraint("pk_rates", type_="primary")
        batch.create_primary_key("pk_rates", ["deck", "prefix"])
        for column in (
            "effective_to",
            "effective_from",
            "band",
            "max_cost_micros",
            "min_cost_micros",
            "intervals",
            "seq",
        ):
            batch.drop_column(column)
    # plain SQL (SQLite >= 3.35, PostgreSQL): a batch copy of rate_decks would drop a
    # table that rates refers to
    op.execute("ALTER TABLE rate_decks DROP COLUMN bands")
