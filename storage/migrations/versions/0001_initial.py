"""Initial schema: accounts, switches, rate decks, rated calls, ledger entries.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("parent_id", sa.String(64), nullable=True),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("billing", sa.String(16), nullable=False),
        sa.Column("credit_limit_micros", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("concurrency_limit", sa.Integer(), nullable=True),
        sa.Column("rate_deck", sa.String(64), nullable=True),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.ForeignKeyConstraint(
            ["parent_id"], ["accounts.id"], name=op.f("fk_accounts_parent_id_accounts")
        ),
        sa.CheckConstraint("billing IN ('prepaid', 'postpaid')", name=op.f("ck_accounts_billing")),
        sa.CheckConstraint(
            "status IN ('active', 'suspended', 'closed')", name=op.f("ck_accounts_status")
        ),
    )
    op.create_index(op.f("ix_accounts_parent_id"), "accounts", ["parent_id"])

    op.create_table(
        "switches",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_switches")),
        sa.CheckConstraint("kind IN ('asterisk', 'freeswitch')", name=op.f("ck_switches_kind")),
    )

    op.create_table(
        "rate_decks",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("rounding", sa.String(16), nullable=False),
        sa.Column("decimals", sa.Integer(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_rate_decks")),
    )

    op.create_table(
        "rates",
        sa.Column("deck", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(32), nullable=False),
        sa.Column("destination", sa.Text(), nullable=False),
        sa.Column("rate_micros", sa.BigInteger(), nullable=False),
        sa.Column("connect_fee_micros", sa.BigInteger(), nullable=False),
        sa.Column("initial_increment", sa.Integer(), nullable=False),
        sa.Column("subsequent_increment", sa.Integer(), nullable=False),
        sa.Column("minimum_duration", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("deck", "prefix", name=op.f("pk_rates")),
        sa.ForeignKeyConstraint(
            ["deck"], ["rate_decks.name"], name=op.f("fk_rates_deck_rate_decks")
        ),
    )

    op.create_table(
        "rated_calls",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("switch_id", sa.String(64), nullable=False),
        sa.Column("call_id", sa.String(128), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("caller", sa.Text(), nullable=False),
        sa.Column("callee", sa.Text(), nullable=False),
        sa.Column("started_at_us", sa.BigInteger(), nullable=False),
        sa.Column("answered_at_us", sa.BigInteger(), nullable=True),
        sa.Column("ended_at_us", sa.BigInteger(), nullable=False),
        sa.Column("billsec_us", sa.BigInteger(), nullable=False),
        sa.Column("billable_seconds", sa.Integer(), nullable=False),
        sa.Column("cost_micros", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("deck", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(32), nullable=False),
        sa.Column("destination", sa.Text(), nullable=False),
        sa.Column("rate_micros", sa.BigInteger(), nullable=False),
        sa.Column("disposition", sa.String(32), nullable=False),
        sa.Column("cause", sa.Text(), nullable=False),
        sa.Column("rated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rated_calls")),
        sa.UniqueConstraint("switch_id", "call_id", name=op.f("uq_rated_calls_switch_id_call_id")),
    )
    op.create_index(
        "ix_rated_calls_account_id_ended_at_us", "rated_calls", ["account_id", "ended_at_us"]
    )

    op.create_table(
        "ledger_entries",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("txn_key", sa.String(255), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("amount_micros", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("rated_call_id", BigId, nullable=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_entries")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_ledger_entries_idempotency_key")),
        sa.ForeignKeyConstraint(
            ["rated_call_id"],
            ["rated_calls.id"],
            name=op.f("fk_ledger_entries_rated_call_id_rated_calls"),
        ),
        sa.CheckConstraint(
            "kind IN ('topup', 'charge', 'adjustment')", name=op.f("ck_ledger_entries_kind")
        ),
    )
    op.create_index(op.f("ix_ledger_entries_txn_key"), "ledger_entries", ["txn_key"])
    op.create_index(op.f("ix_ledger_entries_rated_call_id"), "ledger_entries", ["rated_call_id"])
    op.create_index("ix_ledger_entries_account_id_id", "ledger_entries", ["account_id", "id"])


def downgrade() -> None:
    op.drop_table("ledger_entries")
    op.drop_table("rated_calls")
    op.drop_table("rates")
    op.drop_table("rate_decks")
    op.drop_table("switches")
    op.drop_table("accounts")
