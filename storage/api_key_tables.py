"""API key table on the one ``storage.tables.metadata``: ``api_keys``.

``storage.tables`` imports this module at its end, so the metadata (and Alembic's
comparison with the migrated schema, migration 0010) always includes it.

One row per management-API key. The key itself is never stored: ``hash`` is the hex
SHA-256 of the whole key, ``prefix`` its first 8 characters (to find the row and to
show in listings and logs). ``role`` is ``operator`` (no ``account_id``), ``reseller``
or ``customer`` (an ``account_id``, the account the key acts for). A revoked key keeps
its row with ``revoked_at`` set (an audit trail); it no longer authenticates.
"""

from __future__ import annotations

from sqlalchemy import CheckConstraint, Column, ForeignKey, Index, String, Table, Text

from storage.tables import BigId, UTCDateTime, metadata

API_KEY_ROLES = ("operator", "reseller", "customer")

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("prefix", String(8), nullable=False),
    Column("hash", String(64), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    Column("account_id", String(64), ForeignKey("accounts.id"), nullable=True),
    Column("name", Text, nullable=False, default=""),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
    CheckConstraint("role IN ('operator', 'reseller', 'customer')", name="role"),
    CheckConstraint(
        "(role = 'operator' AND account_id IS NULL)"
        " OR (role <> 'operator' AND account_id IS NOT NULL)",
        name="role_account",
    ),
    Index("ix_api_keys_prefix", "prefix"),
)
