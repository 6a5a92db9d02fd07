"""Reseller-chain table on the one ``storage.tables.metadata``: ``rated_call_charges``.

``storage.tables`` imports this module at its end, so the metadata (and Alembic's
comparison with the migrated schema, migration 0006) always includes it.

One row per reseller level of a rated call: ``level`` 1 is the customer's reseller,
2 that reseller's reseller, and so on (the customer's own retail cost is on the rated
call itself). ``cost_micros`` is what the reseller of that level paid (its wholesale
cost, priced by its own ``deck`` at ``rate_micros`` per minute); the reseller's margin
on the call is the cost of the level below (the rated call's ``cost_micros`` for level
1) minus its own. Written in the same transaction as the rated call and its ledger
entries, only for a call that transaction newly wrote (``balance.chain_ledger``).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Integer, String, Table

from storage.tables import BigId, metadata

rated_call_charges = Table(
    "rated_call_charges",
    metadata,
    # rated_calls.id; no foreign key, as ledger_entries.rated_call_id (hot write path)
    Column("rated_call_id", BigId, primary_key=True, autoincrement=False),
    Column("level", Integer, primary_key=True, autoincrement=False),
    Column("account_id", String(64), nullable=False),
    Column("cost_micros", BigInteger, nullable=False),
    Column("deck", String(64), nullable=False),
    Column("rate_micros", BigInteger, nullable=False),
)
