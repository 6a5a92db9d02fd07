"""Lean ledger writes: drop two ledger indexes and one foreign key no query needs.

Every rated call writes two ledger entries, and each index or constraint of
``ledger_entries`` is paid on each of them. ``ix_ledger_entries_txn_key`` and
``ix_ledger_entries_rated_call_id`` serve no query (only ``Ledger.audit`` reads those
columns, in full-table aggregates); the foreign key on ``rated_call_id`` cost about a
third of the entries' insert time on PostgreSQL (a per-row trigger and row lock), while
its one writer takes the id from the call inserted by the same statement. On SQLite the
foreign key goes through Alembic's batch mode (the table is copied once).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

FK_NAME = "fk_ledger_entries_rated_call_id_rated_calls"


def upgrade() -> None:
    with op.batch_alter_table("ledger_entries") as batch:
        batch.drop_index("ix_ledger_entries_txn_key")
        batch.drop_index("ix_ledger_entries_rated_call_id")
        batch.drop_constraint(FK_NAME, type_="foreignkey")


def downgrade() -> None:
    with op.batch_alter_table("ledger_entries") as batch:
        batch.create_foreign_key(FK_NAME, "rated_calls", ["rated_call_id"], ["id"])
        batch.create_index("ix_ledger_entries_rated_call_id", ["rated_call_id"])
        batch.create_index("ix_ledger_entries_txn_key", ["txn_key"])
