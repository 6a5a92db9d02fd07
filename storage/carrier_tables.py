"""LCR tables on the one ``storage.tables.metadata``: ``carriers`` and ``margin_guards``.

``storage.tables`` imports this module at its end, so the metadata (and Alembic's
comparison with the migrated schema, migration 0004) always includes them. Money is
integer micro-units; the relative margin is in basis points (10 % = 1000).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Integer,
    String,
    Table,
    Text,
)

from storage.tables import UTCDateTime, metadata

carriers = Table(
    "carriers",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", Text, nullable=False, default=""),
    Column("buy_deck", String(64), nullable=False),  # a rate deck name; may be loaded later
    Column("dial_template", Text, nullable=False),
    Column("priority", Integer, nullable=False, default=0),
    Column("weight", Integer, nullable=False, default=0),
    Column("enabled", Boolean, nullable=False, default=True),
    # trunk caps (migration 0009); NULL = no cap
    Column("concurrency_limit", Integer, nullable=True),
    Column("cps_limit", Integer, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# scope 'account': the account's own calls; scope 'reseller': the calls of its customers
margin_guards = Table(
    "margin_guards",
    metadata,
    Column("scope", String(16), primary_key=True),
    Column("account_id", String(64), ForeignKey("accounts.id"), primary_key=True),
    Column("min_margin_micros", BigInteger, nullable=False),
    Column("min_margin_percent_bp", Integer, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint("scope IN ('account', 'reseller')", name="scope"),
)
