"""The SQL schema: one ``metadata`` for every table (Alembic migrations mirror it).

Money is integer micro-units in BIGINT columns; call times are BIGINT epoch
microseconds; wall-clock stamps (``created_at`` ...) are timezone-aware UTC datetimes
on both backends (``UTCDateTime``). Constraint names follow ``NAMING_CONVENTION`` so
migrations can refer to them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# BIGINT everywhere, but INTEGER on SQLite so an id primary key is the rowid (autoincrement).
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite stores it naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime refused (use UTC): {value!r}")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


accounts = Table(
    "accounts",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", Text, nullable=False, default=""),
    Column("parent_id", String(64), ForeignKey("accounts.id"), nullable=True, index=True),
    Column("currency", String(3), nullable=False),
    Column("billing", String(16), nullable=False),
    Column("credit_limit_micros", BigInteger, nullable=False, default=0),
    Column("status", String(16), nullable=False),
    Column("concurrency_limit", Integer, nullable=True),
    Column("rate_deck", String(64), nullable=True),
    Column("timezone", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # real-time caps and trials (migration 0009); NULL = no cap
    Column("cps_limit", Integer, nullable=True),
    Column("seat_limit", Integer, nullable=True),
    Column("concurrency_package", Integer, nullable=True),
    Column("overage_rate_micros", BigInteger, nullable=True),
    Column("customers_concurrency_limit", Integer, nullable=True),
    Column("customers_cps_limit", Integer, nullable=True),
    Column("trial_ends_at", UTCDateTime, nullable=True),
    Column("status_reason", String(64), nullable=False, default="", server_default=""),
    Column("low_balance", Text, nullable=False, default="", server_default=""),
    CheckConstraint("billing IN ('prepaid', 'postpaid')", name="billing"),
    CheckConstraint("status IN ('active', 'suspended', 'closed')", name="status"),
)

switches = Table(
    "switches",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("created_at", UTCDateTime, nullable=False),
    CheckConstraint("kind IN ('asterisk', 'freeswitch')", name="kind"),
)

rate_decks = Table(
    "rate_decks",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("currency", String(3), nullable=False),
    Column("rounding", String(16), nullable=False),
    Column("decimals", Integer, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # JSON [[name, [weekday, ...], start_minute, end_minute], ...] (migration 0003)
    Column("bands", Text, nullable=False, server_default="[]"),
)

rates = Table(
    "rates",
    metadata,
    Column("deck", String(64), ForeignKey("rate_decks.name"), primary_key=True),
    Column("seq", Integer, primary_key=True),  # the rate's place in its deck (0, 1, ...)
    Column("prefix", String(32), nullable=False),  # several rates: one per band and window
    Column("destination", Text, nullable=False),
    Column("rate_micros", BigInteger, nullable=False),
    Column("connect_fee_micros", BigInteger, nullable=False),
    Column("initial_increment", Integer, nullable=False),
    Column("subsequent_increment", Integer, nullable=False),
    Column("minimum_duration", Integer, nullable=False),
    # JSON [[start_s, rate_micros, increment_s], ...]; NULL = the classic two intervals
    Column("intervals", Text, nullable=True),
    Column("min_cost_micros", BigInteger, nullable=False, server_default="0"),
    Column("max_cost_micros", BigInteger, nullable=True),  # NULL = no cap
    Column("band", String(32), nullable=False, server_default=""),  # '' = any time
    Column("effective_from", UTCDateTime, nullable=True),  # inclusive; NULL = open
    Column("effective_to", UTCDateTime, nullable=True),  # exclusive; NULL = open
)

rated_calls = Table(
    "rated_calls",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("switch_id", String(64), nullable=False),
    Column("call_id", String(128), nullable=False),
    Column("account_id", String(64), nullable=False),
    Column("caller", Text, nullable=False),
    Column("callee", Text, nullable=False),
    Column("started_at_us", BigInteger, nullable=False),
    Column("answered_at_us", BigInteger, nullable=True),
    Column("ended_at_us", BigInteger, nullable=False),
    Column("billsec_us", BigInteger, nullable=False),
    Column("billable_seconds", Integer, nullable=False),
    Column("cost_micros", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("deck", String(64), nullable=False),
    Column("prefix", String(32), nullable=False),
    Column("destination", Text, nullable=False),
    Column("rate_micros", BigInteger, nullable=False),
    Column("disposition", String(32), nullable=False),
    Column("cause", Text, nullable=False),
    # the LCR carrier assumed for the call, its buy cost and cost - buy cost (migration 0004)
    Column("carrier", String(64), nullable=False, default="", server_default=""),
    Column("buy_cost_micros", BigInteger, nullable=False, default=0, server_default="0"),
    Column("margin_micros", BigInteger, nullable=False, default=0, server_default="0"),
    # the bundle whose seconds the call used ('' = none) and how many (migration 0005)
    Column("bundle", String(64), nullable=False, default="", server_default=""),
    Column("bundle_seconds", BigInteger, nullable=False, default=0, server_default="0"),
    # the tier counter's position the call was priced at; NULL: no tier plan (migration 0007)
    Column("tier_usage", BigInteger, nullable=True),
    Column("rated_at", UTCDateTime, nullable=False),
    UniqueConstraint("switch_id", "call_id"),
    Index("ix_rated_calls_account_id_ended_at_us", "account_id", "ended_at_us"),
    # the API's listings by start time (migration 0011)
    Index("ix_rated_calls_account_id_started_at_us", "account_id", "started_at_us", "id"),
)

# Every index and constraint here is paid on each of the two entries of every rated call
# (the hot write path): only what a query or an invariant needs is kept (migration 0002).
# ``txn_key`` and ``rated_call_id`` are read only by ``Ledger.audit``'s full-table
# aggregates, so they have no index. ``rated_call_id`` has no foreign key: its per-row
# check cost about a third of the entries' insert on PostgreSQL, and the one writer of the
# column (``balance.rated_calls``) takes it from the call the same statement inserted;
# rated calls are never deleted.
ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("idempotency_key", String(255), nullable=False, unique=True),
    Column("txn_key", String(255), nullable=False),
    Column("account_id", String(64), nullable=False),  # not a FK: sys:* accounts
    Column("amount_micros", BigInteger, nullable=False),  # + credit, - debit
    Column("kind", String(16), nullable=False),
    Column("rated_call_id", BigId, nullable=True),  # rated_calls.id of a call's charge
    Column("description", Text, nullable=False, default=""),
    Column("created_at", UTCDateTime, nullable=False),
    CheckConstraint("kind IN ('topup', 'charge', 'adjustment')", name="kind"),
    Index("ix_ledger_entries_account_id_id", "account_id", "id"),
)

import storage.api_key_tables as _api_key_tables  # noqa: E402, F401  (api_keys)
import storage.carrier_tables  # noqa: E402, F401  (carriers, margin_guards: same metadata)
import storage.chain_tables as _chain_tables  # noqa: E402, F401  (rated_call_charges)
import storage.plan_tables as _plan_tables  # noqa: E402, F401  (tier_plans, bundles, ...)
import storage.seat_tables as _seat_tables  # noqa: E402, F401  (seat_sessions)
