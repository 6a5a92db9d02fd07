"""Rerating: re-price rated calls after a deck correction, post only the difference.

For every rated call of a window (``since <= started_at < until``, optionally of one
account and/or rated with one deck) the call is priced again with the CURRENT content of
the deck it was rated with (the deck NAME stored on the call, not the deck its account
uses today: a deck correction fixes the calls priced by that deck, while moving an
account to another deck is a plan change that applies from then on, never backwards).
A call that has no deck (it was never priced), whose deck or prefix is gone, or whose
deck now bills another currency is skipped and counted, never refunded.

Plans: a call of an account with a volume tier plan is skipped (reason ``tiered``: its
discount depended on the month's usage when it ran, which is not stored yet); a call
that used bundled minutes is re-priced with the same bundled seconds
(``tariffs.bundles.split_call``): only its paid seconds change price.

The rated call and its charge entries are never touched (the ledger is append-only).
The difference ``new cost - effective cost`` goes in as an adjustment pair, like a
charge's: the account ``-difference``, ``sys:revenue`` ``+difference``, kind
``adjustment``, ``rated_call_id`` set. The effective cost of a call is its rated cost
plus every earlier rerate adjustment of it, so a second run changes nothing and a second
correction posts only the new difference.

Idempotency: the n-th rerate adjustment of a call has the keys
``rerate:{rated_call_id}:{n}:account`` and ``...:revenue`` (transaction
``rerate:{rated_call_id}:{n}``), where ``n`` counts the call's earlier rerate
adjustments. ``n`` stands for the effective cost before (the sum of adjustments 0..n-1),
and the key deliberately leaves out the new cost: two runs that read the same history
claim the same slot, and only one of them can write it, even when they priced the call
with different versions of a deck (with the new cost in the key both would apply). The
loser counts the call as ``raced``; a later run sees the winner's adjustment. The history
is read by exact key (the unique index), never by scanning ``rated_call_id``.

Calls go in chunks of ``chunk_size``, one SQL transaction per chunk: a failure leaves
no half-written chunk (the chunks before it stay committed and synced to Redis). After
each commit the hot balance in Redis follows by the same amounts, once per transaction
key: a refund is ``LiveState.credit`` (marker ``credited:rerate:...``), an extra charge
``LiveState.settle`` of a call key that holds no reservation (marker
``settled:rerate:...``), so a running daemon sees the new balance at once. A Redis
failure there is counted in ``RerateReport.live_unsynced`` (SQL is the truth; the next
rebuild of the live state corrects Redis).

Errors (stable codes)::

    RerateError          RERATE_ERROR
    ├── InvalidWindow    INVALID_RERATE_WINDOW  naive datetimes, or since >= until
    └── RepriceFailed    REPRICE_FAILED         a call could not be priced (names it);
                                                its chunk is not written

Driver failures are raised as ``storage.engine.StorageError`` chained ``from`` the driver.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from balance.ledger import SYS_REVENUE
from balance.live import LiveState, LiveStateError
from storage.engine import insert_ignoring_conflicts, wrap_driver_errors
from storage.plan_tables import tier_plans
from storage.tables import accounts, ledger_entries, rated_calls, utcnow
from tariffs.bundles import split_call
from tariffs.money import MoneyError, format_money, to_micros
from tariffs.rating import RatingError, call_cost

if TYPE_CHECKING:  # only its ``price`` is used: balance does not import the daemon
    from daemon.tariff_catalog import TariffCatalog

log = structlog.get_logger(__name__)

DEFAULT_CHUNK_SIZE = 500
MAX_CHUNK_SIZE = 1_000  # 2 entries x 8 columns per call: within every backend's bind limit

__all__ = [
    "AccountDifference",
    "CallToRerate",
    "InvalidWindow",
    "RepriceFailed",
    "Repriced",
    "RerateError",
    "RerateReport",
    "Rerater",
    "reprice",
    "rerate_txn_key",
]


class RerateError(Exception):
    """Base of rerating errors."""

    code = "RERATE_ERROR"


class InvalidWindow(RerateError, ValueError):
    """The window's bounds are naive datetimes, or ``since`` is not before ``until``."""

    code = "INVALID_RERATE_WINDOW"


class RepriceFailed(RerateError):
    """A call could not be priced again (the message names the call)."""

    code = "REPRICE_FAILED"


@dataclass(frozen=True, slots=True)
class CallToRerate:
    """What rerating reads of one rated call (times in epoch µs, money in micro-units)."""

    id: int
    switch_id: str
    call_id: str
    account_id: str
    callee: str
    started_at_us: int
    billsec_us: int
    cost_micros: int
    currency: str
    deck: str
    bundle_seconds: int  # billable seconds the call took from a bundle
    timezone: str  # the account's, for time bands ("UTC" when the account is gone)
    tiered: bool = False  # the account has a volume tier plan

    @property
    def started_at(self) -> datetime:
        """The call's start as an aware UTC datetime."""
        return datetime.fromtimestamp(self.started_at_us / 1_000_000, UTC)

    @property
    def billsec(self) -> Decimal:
        """The billed duration in seconds, exactly (0 for an unanswered call)."""
        return Decimal(self.billsec_us).scaleb(-6)


@dataclass(frozen=True, slots=True)
class Repriced:
    """A call's price under the current deck."""

    cost_micros: int
    currency: str
    prefix: str
    destination: str


def reprice(catalog: TariffCatalog, call: CallToRerate) -> Repriced | None:
    """The call's cost under the catalog's current deck of the name it was rated with.

    The ONE place where rerating uses the rating engine: the rate in force at the call's
    START, in the account's time zone (its band and effective window), as rating did.
    None when the deck or the callee's prefix is gone.
    """
    try:
        priced = catalog.price(call.deck, call.callee, call.started_at, call.timezone)
    except ValueError:  # an unknown time zone: rated as if in UTC, like the daemon does
        priced = catalog.price(call.deck, call.callee, call.started_at)
    if priced is None:
        return None
    if call.bundle_seconds > 0:
        cost = split_call(priced.info, priced.rate, call.billsec, call.bundle_seconds).cost
    else:
        cost = call_cost(priced.info, priced.rate, call.billsec)
    return Repriced(
        cost_micros=to_micros(cost),
        currency=priced.info.currency,
        prefix=priced.rate.prefix,
        destination=priced.rate.destination,
    )


def rerate_txn_key(rated_call_id: int, sequence: int) -> str:
    """The transaction key of the ``sequence``-th (from 0) rerate adjustment of a call."""
    return f"rerate:{rated_call_id}:{sequence}"


@dataclass(frozen=True, slots=True)
class AccountDifference:
    """The total difference posted (or, in a dry run, to post) for one account."""

    account_id: str
    currency: str
    calls: int
    difference_micros: int  # new - effective: > 0 the customer pays more


@dataclass(frozen=True, slots=True)
class RerateReport:
    """What a rerate run examined and changed."""

    dry_run: bool
    examined: int
    changed: int  # adjustments written (or, in a dry run, that would be)
    unchanged: int
    skipped: dict[str, int]  # reason (no_deck, tiered, no_rate, currency) -> calls
    raced: int  # another run adjusted the call first (a later run sees its adjustment)
    live_unsynced: int  # adjustments whose Redis update failed (fixed by the next rebuild)
    differences: tuple[AccountDifference, ...]  # by account, then currency


@dataclass(frozen=True, slots=True)
class _Change:
    call: CallToRerate
    sequence: int
    before_micros: int
    after: Repriced

    @property
    def difference(self) -> int:
        return self.after.cost_micros - self.before_micros

    @property
    def txn_key(self) -> str:
        return rerate_txn_key(self.call.id, self.sequence)


@dataclass
class _Tally:
    examined: int = 0
    unchanged: int = 0
    raced: int = 0
    live_unsynced: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    micros: Counter[tuple[str, str]] = field(default_factory=Counter)

    def applied(self, change: _Change) -> None:
        key = (change.call.account_id, change.call.currency)
        self.calls[key] += 1
        self.micros[key] += change.difference

    def report(self, dry_run: bool) -> RerateReport:
        return RerateReport(
            dry_run=dry_run,
            examined=self.examined,
            changed=sum(self.calls.values()),
            unchanged=self.unchanged,
            skipped=dict(sorted(self.skipped.items())),
            raced=self.raced,
            live_unsynced=self.live_unsynced,
            differences=tuple(
                AccountDifference(key[0], key[1], self.calls[key], self.micros[key])
                for key in sorted(self.calls)
            ),
        )


def _epoch_us(name: str, value: datetime) -> int:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidWindow(f"{name} must be an aware datetime (UTC), got {value!r}")
    delta = value.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


_CALL_COLUMNS = tuple(
    rated_calls.c[f.name] for f in fields(CallToRerate) if f.name not in {"timezone", "tiered"}
)


def _call(row: Any) -> CallToRerate:
    values = {**row._mapping, "timezone": row.timezone or "UTC", "tiered": bool(row.tiered)}
    return CallToRerate(**values)


class Rerater:
    """Re-prices rated calls of a window and posts the differences as adjustments."""

    def __init__(
        self,
        engine: AsyncEngine,
        live: LiveState | None,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        if isinstance(chunk_size, bool) or not 1 <= chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk_size must be 1..{MAX_CHUNK_SIZE}, got {chunk_size!r}")
        self._engine = engine
        self._live = live
        self._chunk_size = chunk_size

    async def rerate(
        self,
        *,
        since: datetime,
        until: datetime,
        account: str | None,
        deck: str | None,
        catalog: TariffCatalog,
        dry_run: bool = False,
    ) -> RerateReport:
        """Re-price every rated call started in ``[since, until)`` and post the differences.

        ``account`` and ``deck`` (the deck a call was rated with) narrow the calls. With
        ``dry_run`` nothing is written anywhere; the report tells what would change.
        """
        since_us, until_us = _epoch_us("since", since), _epoch_us("until", until)
        if since_us >= until_us:
            raise InvalidWindow(
                f"since ({since.isoformat()}) must be before until ({until.isoformat()})"
            )
        query = self._query(since_us, until_us, account, deck)
        tally, last_id = _Tally(), 0
        while True:
            with wrap_driver_errors("rerating rated calls"):
                if dry_run:
                    async with self._engine.connect() as conn:
                        calls, changes = await self._chunk(conn, query, last_id, catalog, tally)
                    written: list[_Change] = changes
                else:
                    async with self._engine.begin() as conn:
                        calls, changes = await self._chunk(conn, query, last_id, catalog, tally)
                        written = await self._write(conn, changes)
            tally.raced += len(changes) - len(written)
            for change in written:
                tally.applied(change)
            if written and not dry_run:
                tally.live_unsynced += await self._sync_live(written)
            if len(calls) < self._chunk_size:
                break
            last_id = calls[-1].id
        report = tally.report(dry_run)
        log.info(
            "rerate finished",
            dry_run=dry_run,
            examined=report.examined,
            changed=report.changed,
            raced=report.raced,
            skipped=sum(report.skipped.values()),
        )
        return report

    def _query(
        self, since_us: int, until_us: int, account: str | None, deck: str | None
    ) -> Select[Any]:
        query = (
            select(
                *_CALL_COLUMNS,
                accounts.c.timezone,
                tier_plans.c.account_id.is_not(None).label("tiered"),
            )
            .select_from(
                rated_calls.outerjoin(accounts, accounts.c.id == rated_calls.c.account_id)
                .outerjoin(tier_plans, tier_plans.c.account_id == rated_calls.c.account_id)
            )
            .where(
                rated_calls.c.started_at_us >= since_us, rated_calls.c.started_at_us < until_us
            )
            .order_by(rated_calls.c.id)
            .limit(self._chunk_size)
        )
        if account is not None:
            query = query.where(rated_calls.c.account_id == account)
        if deck is not None:
            query = query.where(rated_calls.c.deck == deck)
        return query

    async def _chunk(
        self,
        conn: AsyncConnection,
        query: Select[Any],
        last_id: int,
        catalog: TariffCatalog,
        tally: _Tally,
    ) -> tuple[list[CallToRerate], list[_Change]]:
        """The next chunk of calls and the changes they need (read in ``conn``'s transaction)."""
        calls = [_call(row) for row in await conn.execute(query.where(rated_calls.c.id > last_id))]
        tally.examined += len(calls)
        priced: list[tuple[CallToRerate, Repriced]] = []
        for call in calls:
            reason, after = _price(catalog, call)
            if after is None:
                tally.skipped[reason] += 1
                log.debug("rerate skipped a call", rated_call_id=call.id, reason=reason)
            else:
                priced.append((call, after))
        history = await _histories(conn, [call.id for call, _ in priced])
        changes: list[_Change] = []
        for call, after in priced:
            sequence, adjusted = history.get(call.id, (0, 0))
            change = _Change(call, sequence, call.cost_micros + adjusted, after)
            if change.difference == 0:
                tally.unchanged += 1
            else:
                changes.append(change)
        return calls, changes

    @staticmethod
    async def _write(conn: AsyncConnection, changes: Sequence[_Change]) -> list[_Change]:
        """Insert the adjustment pairs; the changes whose slot was still free."""
        if not changes:
            return []
        now, rows = utcnow(), []
        for change in changes:  # in rated call id order: one lock order for racing runs
            call, txn = change.call, change.txn_key
            common = {
                "txn_key": txn,
                "kind": "adjustment",
                "rated_call_id": call.id,
                "description": _description(change),
                "created_at": now,
            }
            for side, account_id, amount in (
                ("account", call.account_id, -change.difference),
                ("revenue", SYS_REVENUE, change.difference),
            ):
                rows.append(
                    {
                        **common,
                        "idempotency_key": f"{txn}:{side}",
                        "account_id": account_id,
                        "amount_micros": amount,
                    }
                )
        table = ledger_entries
        stmt = insert_ignoring_conflicts(conn.dialect.name, table, ["idempotency_key"])
        result = await conn.execute(stmt.values(rows).returning(table.c.idempotency_key))
        inserted = set(result.scalars())
        return [change for change in changes if f"{change.txn_key}:account" in inserted]

    async def _sync_live(self, changes: Sequence[_Change]) -> int:
        """Move the hot balances by the posted amounts, once per key; the failures."""
        live = self._live
        if live is None:
            return 0

        async def apply(change: _Change) -> None:
            account, amount = change.call.account_id, change.difference
            if amount > 0:  # the call costs more: debit once (no reservation under this key)
                await live.settle(account, change.txn_key, amount)
            else:
                await live.credit(account, -amount, change.txn_key)

        outcomes = await asyncio.gather(
            *(apply(change) for change in changes), return_exceptions=True
        )
        failed = 0
        for change, outcome in zip(changes, outcomes, strict=True):
            if isinstance(outcome, LiveStateError):
                failed += 1
                log.error(
                    "rerate posted in SQL but not in the live balance",
                    account=change.call.account_id,
                    txn_key=change.txn_key,
                    error=str(outcome),
                )
            elif isinstance(outcome, BaseException):
                raise outcome
        return failed


def _price(catalog: TariffCatalog, call: CallToRerate) -> tuple[str, Repriced | None]:
    """(skip reason, None) or ("", the new price)."""
    if not call.deck:
        return "no_deck", None
    if call.tiered:  # its discount depended on the month's usage (no discount column yet)
        return "tiered", None
    try:
        after = reprice(catalog, call)
    except (RatingError, MoneyError) as exc:
        raise RepriceFailed(
            f"rated call {call.id} ({call.switch_id}/{call.call_id}) could not be priced "
            f"with deck {call.deck!r}: {exc}"
        ) from exc
    if after is None:
        return "no_rate", None
    if after.currency != call.currency:
        return "currency", None
    return "", after


async def _histories(conn: AsyncConnection, call_ids: Iterable[int]) -> dict[int, tuple[int, int]]:
    """Per call: (how many rerate adjustments it has, their sum as cost micro-units).

    Slots are written in order (slot n only after slot n-1 was read), so the history
    is probed slot by slot with exact keys until a slot is free.
    """
    history: dict[int, tuple[int, int]] = {}
    pending = {call_id: 0 for call_id in call_ids}
    while pending:
        keys = {f"{rerate_txn_key(call_id, n)}:account": call_id for call_id, n in pending.items()}
        query = select(ledger_entries.c.idempotency_key, ledger_entries.c.amount_micros).where(
            ledger_entries.c.idempotency_key.in_(list(keys))
        )
        found = {row.idempotency_key: row.amount_micros for row in await conn.execute(query)}
        following: dict[int, int] = {}
        for key, call_id in keys.items():
            if key in found:
                count, total = history.get(call_id, (0, 0))
                history[call_id] = (count + 1, total - found[key])  # a debit raised the cost
                following[call_id] = pending[call_id] + 1
        pending = following
    return history


def _description(change: _Change) -> str:
    call, after = change.call, change.after
    return (
        f"rerate {call.deck} {after.prefix} {after.destination}: "
        f"{format_money(change.before_micros)} -> {format_money(after.cost_micros, call.currency)}"
    )
