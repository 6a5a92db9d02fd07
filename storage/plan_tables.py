"""Plan tables on the one ``storage.tables.metadata``: tier plans, bundles, assignments.

``storage.tables`` imports this module at its end, so the metadata (and Alembic's
comparison with the migrated schema, migration 0005) always includes them.

- ``tier_plans``: one volume-tier plan per account; ``tiers`` is JSON
  ``[[threshold, discount_basis_points], ...]`` (20 % = 2000).
- ``bundles``: bundled minutes, ``seconds`` per period for the JSON list ``prefixes``.
- ``bundle_assignments``: which account holds which bundle, from ``valid_from``
  (inclusive) to ``valid_to`` (exclusive, NULL = open).

There is no counter table: a period's usage is read from the rated calls themselves
(``balance.usage``), and so are the bundled seconds used (``rated_calls.bundle_seconds``).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, CheckConstraint, Column, ForeignKey, String, Table, Text

from storage.tables import UTCDateTime, metadata

tier_plans = Table(
    "tier_plans",
    metadata,
    Column("account_id", String(64), ForeignKey("accounts.id"), primary_key=True),
    Column("name", String(64), nullable=False),
    Column("counter", String(16), nullable=False),
    Column("mode", String(16), nullable=False),
    Column("period", String(16), nullable=False),
    Column("tiers", Text, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint("counter IN ('calls', 'minutes')", name="counter"),
    CheckConstraint("mode IN ('graduated', 'all_units')", name="mode"),
    CheckConstraint("period IN ('month')", name="period"),
)

bundles = Table(
    "bundles",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("seconds", BigInteger, nullable=False),
    Column("prefixes", Text, nullable=False),
    Column("period", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint("seconds >= 0", name="seconds"),
    CheckConstraint("period IN ('month')", name="period"),
)

bundle_assignments = Table(
    "bundle_assignments",
    metadata,
    Column("account_id", String(64), ForeignKey("accounts.id"), primary_key=True),
    Column("bundle", String(64), ForeignKey("bundles.name"), primary_key=True),
    Column("valid_from", UTCDateTime, primary_key=True),
    Column("valid_to", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
)
