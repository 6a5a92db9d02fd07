"""Seat table on the one ``storage.tables.metadata``: ``seat_sessions``.

``storage.tables`` imports this module at its end, so the metadata (and Alembic's
comparison with the migrated schema, migration 0008) always includes it.

One row per agent seat session on one switch: who (``seat``, display ``name``), whose
(``tenant``, '' when no rule named it), where (``switch_id``), from ``started_at_us`` to
``ended_at_us`` (epoch microseconds, NULL while the seat is live). ``end_reason`` is
``logoff`` (the agent left), ``refused`` (a login past the tenant's seat limit: a
zero-length row, the seat was logged off), ``lost`` (closed without a logoff seen), or
'' while open. A replayed login is the same row: ``(switch_id, seat, started_at_us)`` is
unique. Seat usage (peak seats, seat-days) is computed from these rows
(``balance.seat_sessions``, ``tariffs.seat_usage``).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Index,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from storage.tables import BigId, metadata

END_REASONS = ("logoff", "refused", "lost", "")

seat_sessions = Table(
    "seat_sessions",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("tenant", String(64), nullable=False),
    Column("seat", String(256), nullable=False),
    Column("switch_id", String(64), nullable=False),
    Column("name", Text, nullable=False, default=""),
    Column("started_at_us", BigInteger, nullable=False),
    Column("ended_at_us", BigInteger, nullable=True),
    Column("end_reason", String(16), nullable=False, default=""),
    CheckConstraint("end_reason IN ('logoff', 'refused', 'lost', '')", name="end_reason"),
    UniqueConstraint("switch_id", "seat", "started_at_us"),
    Index("ix_seat_sessions_tenant_started_at_us", "tenant", "started_at_us"),
)
