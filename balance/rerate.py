"""Rerating: re-price rated calls after a deck correction, post only the difference.

For every rated call of a window (``since <= started_at < until``, optionally of one
account and/or rated with one deck) the call is priced again with the CURRENT content of
the deck it was rated with (the deck NAME stored on the call, not the deck its account
uses today: a deck correction fixes the calls priced by that deck, while moving an
account to another deck is a plan change that applies from then on, never backwards).
A call that has no deck (it was never priced), whose deck or prefix is gone, or whose
deck now bills another currency is skipped and counted, never refunded.

Plans: a tiered call (``rated_calls.tier_usage``: the tier counter's position it was
priced at) is re-priced with the CURRENT tier plan of its account at that usage
(``CallTerms.of(plan, usage)``); a call of an account with a plan but no stored usage
(rated before the column existed), or with a stored usage but no plan any more, is
skipped (reason ``tiered``). A call that used bundled minutes is re-priced with the same
bundled seconds: only its paid seconds change price.

Reseller chains (``balance.chain_ledger``): every level of a call with
``rated_call_charges`` rows is re-priced with its own deck (the name stored on the row),
at the call's start in that level's account time zone (a reseller level whose deck or
prefix is gone, or whose deck now bills another currency, keeps its cost). The
difference ``d0`` of the customer is paid to reseller 1, the difference ``dk`` of
reseller k to reseller k+1 (``sys:revenue`` above the last), as the call's own
transaction moved the money.

The rated call and its charge entries are never touched (the ledger is append-only).
The differences ``new cost - effective cost`` go in as adjustment entries, like a
charge's: level 0 (the account) ``-d0`` and the party above ``+d0``, ..., kind
``adjustment``, ``rated_call_id`` set, differences of 0 left out. The effective cost of
a level is its rated cost plus every earlier rerate adjustment of it, so a second run
changes nothing and a second correction posts only the new difference.

Idempotency: the n-th rerate of a call is ONE transaction ``rerate:{rated_call_id}:{n}``
whose entries have the keys ``...:account`` (the customer's), ``...:charge:{k}`` (reseller
k's), ``...:sold:{k}`` (what reseller k sold to the level below) and ``...:revenue``, where
``n`` counts the call's earlier rerate transactions. ``n`` stands for the effective costs
before (the sum of adjustments 0..n-1), and the key deliberately leaves out the new cost:
two runs that read the same history claim the same slot, and only one of them can write it,
even when they priced the call with different versions of a deck (with the new cost in the
key both would apply). The loser counts the call as ``raced``; a later run sees the winner's
adjustment. Were a loser to get only part of its entries in (two deck versions with
different zero levels), its chunk is rolled back and read again. The history is read by
exact key (the unique index), never by scanning ``rated_call_id``.

Calls go in chunks of ``chunk_size``, one SQL transaction per chunk: a failure leaves
no half-written chunk (the chunks before it stay committed and synced to Redis). After
each commit the hot balance in Redis follows by the same amounts, once per transaction
key and account, by the account's net amount: a refund is ``LiveState.credit`` (marker
``credited:rerate:...``), an extra charge ``LiveState.settle`` of a call key that holds
no reservation (marker ``settled:rerate:...``), so a running daemon sees the new
balance at once. A Redis
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
from sqlalchemy import Select, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from balance.ledger import SYS_REVENUE
from balance.live import LiveState, LiveStateError
from balance.usage import plan_from_row
from storage.chain_tables import rated_call_charges
from storage.engine import insert_ignoring_conflicts, wrap_driver_errors
from storage.plan_tables import tier_plans
from storage.tables import accounts, ledger_entries, rated_calls, utcnow
from tariffs.bundles import CallTerms, price_call
from tariffs.money import MoneyError, format_money, to_micros
from tariffs.rating import RatingError, call_cost
from tariffs.tiers import TierPlan, Usage

if TYPE_CHECKING:  # only its ``price`` is used: balance does not import the daemon
    from daemon.tariff_catalog import TariffCatalog

log = structlog.get_logger(__name__)

DEFAULT_CHUNK_SIZE = 500
MAX_CHUNK_SIZE = 1_000
ROWS_PER_INSERT = 2_000  # ledger rows x 8 columns: within every backend's bind limit
SLOT_RETRIES = 3  # chunk re-reads after a racing run took part of a slot

__all__ = [
    "AccountDifference",
    "CallToRerate",
    "InvalidWindow",
    "LevelToRerate",
    "RepriceFailed",
    "Repriced",
    "RerateError",
    "RerateReport",
    "Rerater",
    "reprice",
    "reprice_level",
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


class _SlotTaken(Exception):
    """A racing run wrote part of a slot this chunk claimed: roll back and read again."""


@dataclass(frozen=True, slots=True)
class LevelToRerate:
    """One reseller level of a rated call (``rated_call_charges``)."""

    level: int  # 1 = the customer's reseller
    account_id: str
    cost_micros: int
    deck: str
    timezone: str  # the reseller's ("UTC" when the account is gone)


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
    tier_usage: int | None = None  # the tier counter's position it was priced at
    timezone: str = "UTC"  # the account's, for time bands ("UTC" when the account is gone)
    plan: TierPlan | None = None  # the account's CURRENT volume tier plan
    chain: tuple[LevelToRerate, ...] = ()  # its reseller levels, 1, 2, ...

    @property
    def tiered(self) -> bool:
        """True when the account has a tier plan or the call was priced at a tier."""
        return self.plan is not None or self.tier_usage is not None

    @property
    def started_at(self) -> datetime:
        """The call's start as an aware UTC datetime."""
        return datetime.fromtimestamp(self.started_at_us / 1_000_000, UTC)

    @property
    def billsec(self) -> Decimal:
        """The billed duration in seconds, exactly (0 for an unanswered call)."""
        return Decimal(self.billsec_us).scaleb(-6)

    def terms(self) -> CallTerms:
        """The call's terms today: its tier at its stored usage, its bundled seconds."""
        if self.plan is None or self.tier_usage is None:
            return CallTerms(bundle_seconds=self.bundle_seconds)
        usage = Usage(calls=self.tier_usage, seconds=self.tier_usage)  # plan.units picks one
        return CallTerms.of(self.plan, usage, self.bundle_seconds)


@dataclass(frozen=True, slots=True)
class Repriced:
    """A call's price under the current deck."""

    cost_micros: int
    currency: str
    prefix: str
    destination: str


def _price_at(catalog: TariffCatalog, deck: str, call: CallToRerate, tz: str) -> Any:
    try:
        return catalog.price(deck, call.callee, call.started_at, tz)
    except ValueError:  # an unknown time zone: rated as if in UTC, like the daemon does
        return catalog.price(deck, call.callee, call.started_at)


def reprice(catalog: TariffCatalog, call: CallToRerate) -> Repriced | None:
    """The call's cost under the catalog's current deck of the name it was rated with.

    The ONE place where rerating uses the rating engine for a customer: the rate in
    force at the call's START, in the account's time zone (its band and effective
    window), as rating did, under the call's terms (tier, bundled seconds). None when
    the deck or the callee's prefix is gone.
    """
    priced = _price_at(catalog, call.deck, call, call.timezone)
    if priced is None:
        return None
    terms = call.terms()
    if terms.plain:
        cost = call_cost(priced.info, priced.rate, call.billsec)
    else:
        cost = price_call(priced.info, priced.rate, call.billsec, terms).cost
    return Repriced(
        cost_micros=to_micros(cost),
        currency=priced.info.currency,
        prefix=priced.rate.prefix,
        destination=priced.rate.destination,
    )


def reprice_level(
    catalog: TariffCatalog, call: CallToRerate, level: LevelToRerate
) -> Repriced | None:
    """A reseller level's wholesale cost of the call under its current deck (no plans,
    as ``daemon.reseller_chain.chain_charges`` priced it); None when the deck or prefix
    is gone."""
    priced = _price_at(catalog, level.deck, call, level.timezone)
    if priced is None:
        return None
    return Repriced(
        cost_micros=to_micros(call_cost(priced.info, priced.rate, call.billsec)),
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
    difference_micros: int  # the account's net: > 0 it pays more (its balance goes down)


@dataclass(frozen=True, slots=True)
class RerateReport:
    """What a rerate run examined and changed."""

    dry_run: bool
    examined: int
    changed: int  # calls adjusted (or, in a dry run, that would be)
    unchanged: int
    skipped: dict[str, int]  # reason (no_deck, tiered, no_rate, currency) -> calls
    raced: int  # another run adjusted the call first (a later run sees its adjustment)
    live_unsynced: int  # balance moves whose Redis update failed (fixed by the next rebuild)
    differences: tuple[AccountDifference, ...]  # by account, then currency


@dataclass(frozen=True, slots=True)
class _Change:
    call: CallToRerate
    sequence: int
    before: tuple[int, ...]  # effective cost per level (0 = the customer)
    after: tuple[int, ...]  # new cost per level (a level that cannot be priced: before)
    priced: Repriced  # the customer's new price

    @property
    def differences(self) -> tuple[int, ...]:
        return tuple(new - old for new, old in zip(self.after, self.before, strict=True))

    @property
    def txn_key(self) -> str:
        return rerate_txn_key(self.call.id, self.sequence)

    def entries(self) -> list[tuple[str, str, int]]:
        """(key suffix, account, amount) of the adjustment; differences of 0 left out."""
        payers = [self.call.account_id, *(level.account_id for level in self.call.chain)]
        debits = ["account", *(f"charge:{level.level}" for level in self.call.chain)]
        credits = [*((f"sold:{lv.level}", lv.account_id) for lv in self.call.chain)]
        credits.append(("revenue", SYS_REVENUE))
        rows: list[tuple[str, str, int]] = []
        for index, difference in enumerate(self.differences):
            if difference:
                rows.append((debits[index], payers[index], -difference))
                rows.append((*credits[index], difference))
        return rows

    def nets(self) -> dict[str, int]:
        """The net amount each account's balance moves by (``sys:revenue`` included)."""
        moves: Counter[str] = Counter()
        for _, account, amount in self.entries():
            moves[account] += amount
        return {account: amount for account, amount in moves.items() if amount}


@dataclass
class _Tally:
    examined: int = 0
    changed: int = 0
    unchanged: int = 0
    raced: int = 0
    live_unsynced: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    micros: Counter[tuple[str, str]] = field(default_factory=Counter)

    def applied(self, change: _Change) -> None:
        self.changed += 1
        for account, amount in change.nets().items():
            if account != SYS_REVENUE:
                key = (account, change.call.currency)
                self.calls[key] += 1
                self.micros[key] -= amount

    def add(self, other: _Tally) -> None:
        self.examined += other.examined
        self.unchanged += other.unchanged
        self.skipped.update(other.skipped)

    def report(self, dry_run: bool) -> RerateReport:
        return RerateReport(
            dry_run=dry_run,
            examined=self.examined,
            changed=self.changed,
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


_NOT_COLUMNS = {"timezone", "plan", "chain"}
_CALL_COLUMNS = tuple(
    rated_calls.c[f.name] for f in fields(CallToRerate) if f.name not in _NOT_COLUMNS
)
_PLAN_COLUMNS = tuple(
    tier_plans.c[name].label(f"plan_{name}")
    for name in ("name", "counter", "mode", "period", "tiers")
)


def _plan(row: Any) -> TierPlan | None:
    """The tier plan of a query row (its ``plan_*`` columns), None without one."""
    return None if row.plan_name is None else plan_from_row(row, prefix="plan_")


def _call(row: Any, chain: tuple[LevelToRerate, ...]) -> CallToRerate:
    values = {column.name: row._mapping[column.name] for column in _CALL_COLUMNS}
    return CallToRerate(**values, timezone=row.timezone or "UTC", plan=_plan(row), chain=chain)


async def _chains(
    conn: AsyncConnection, call_ids: list[int]
) -> dict[int, tuple[LevelToRerate, ...]]:
    """The stored reseller levels of the calls (calls without a chain are left out)."""
    if not call_ids:
        return {}
    ch = rated_call_charges
    query = (
        select(ch.c.rated_call_id, ch.c.level, ch.c.account_id, ch.c.cost_micros, ch.c.deck,
               accounts.c.timezone)
        .select_from(ch.outerjoin(accounts, accounts.c.id == ch.c.account_id))
        .where(ch.c.rated_call_id.in_(call_ids))
        .order_by(ch.c.rated_call_id, ch.c.level)
    )  # fmt: skip
    chains: dict[int, list[LevelToRerate]] = {}
    for row in await conn.execute(query):
        level = LevelToRerate(
            row.level, row.account_id, row.cost_micros, row.deck, row.timezone or "UTC"
        )
        chains.setdefault(row.rated_call_id, []).append(level)
    return {call_id: tuple(levels) for call_id, levels in chains.items()}


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

        ``account`` narrows the calls to one customer, ``deck`` to the calls priced with
        that deck at any level (the customer's, or a reseller's of its chain). With
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
            calls, changes, written = await self._chunk_once(query, last_id, catalog, tally,
                                                             dry_run)  # fmt: skip
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

    async def _chunk_once(
        self,
        query: Select[Any],
        last_id: int,
        catalog: TariffCatalog,
        tally: _Tally,
        dry_run: bool,
    ) -> tuple[list[CallToRerate], list[_Change], list[_Change]]:
        """Read, price and (unless a dry run) write one chunk in one transaction; a chunk
        a racing run took part of a slot of is rolled back and done again."""
        for attempt in range(1, SLOT_RETRIES + 1):
            counted = _Tally()
            try:
                with wrap_driver_errors("rerating rated calls"):
                    if dry_run:
                        async with self._engine.connect() as conn:
                            calls, changes = await self._chunk(conn, query, last_id, catalog,
                                                               counted)  # fmt: skip
                        written = changes
                    else:
                        async with self._engine.begin() as conn:
                            calls, changes = await self._chunk(conn, query, last_id, catalog,
                                                               counted)  # fmt: skip
                            written = await self._write(conn, changes)
            except _SlotTaken as exc:
                if attempt == SLOT_RETRIES:
                    raise RerateError(f"rerate slots kept racing: {exc}") from exc
                log.info("rerate chunk raced, read again", after_id=last_id)
                continue
            tally.add(counted)
            return calls, changes, written
        raise AssertionError("unreachable")

    def _query(
        self, since_us: int, until_us: int, account: str | None, deck: str | None
    ) -> Select[Any]:
        query = (
            select(*_CALL_COLUMNS, accounts.c.timezone, *_PLAN_COLUMNS)
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
            ch = rated_call_charges
            reseller_deck = exists().where(
                ch.c.rated_call_id == rated_calls.c.id, ch.c.deck == deck
            )
            query = query.where(or_(rated_calls.c.deck == deck, reseller_deck))
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
        rows = list(await conn.execute(query.where(rated_calls.c.id > last_id)))
        chains = await _chains(conn, [row.id for row in rows])
        calls = [_call(row, chains.get(row.id, ())) for row in rows]
        tally.examined += len(calls)
        priced: list[tuple[CallToRerate, Repriced]] = []
        for call in calls:
            reason, after = _price(catalog, call)
            if after is None:
                tally.skipped[reason] += 1
                log.debug("rerate skipped a call", rated_call_id=call.id, reason=reason)
            else:
                priced.append((call, after))
        history = await _histories(conn, [call for call, _ in priced])
        changes: list[_Change] = []
        for call, after in priced:
            sequence, adjusted = history.get(call.id, (0, (0,) * (len(call.chain) + 1)))
            stored = (call.cost_micros, *(level.cost_micros for level in call.chain))
            before = tuple(cost + extra for cost, extra in zip(stored, adjusted, strict=True))
            levels = [_level_cost(catalog, call, level) for level in call.chain]
            kept = zip(levels, before[1:], strict=True)
            new = (after.cost_micros, *(old if cost is None else cost for cost, old in kept))
            change = _Change(call, sequence, before, new, after)
            if not any(change.differences):
                tally.unchanged += 1
            else:
                changes.append(change)
        return calls, changes

    @staticmethod
    async def _write(conn: AsyncConnection, changes: Sequence[_Change]) -> list[_Change]:
        """Insert the adjustments; the changes whose slot was still free.

        Raises ``_SlotTaken`` when a change got only part of its entries in.
        """
        if not changes:
            return []
        now, rows = utcnow(), []
        for change in changes:  # in rated call id order: one lock order for racing runs
            common = {
                "txn_key": change.txn_key,
                "kind": "adjustment",
                "rated_call_id": change.call.id,
                "description": _description(change),
                "created_at": now,
            }
            for side, account_id, amount in change.entries():
                rows.append(
                    {
                        **common,
                        "idempotency_key": f"{change.txn_key}:{side}",
                        "account_id": account_id,
                        "amount_micros": amount,
                    }
                )
        table = ledger_entries
        stmt = insert_ignoring_conflicts(conn.dialect.name, table, ["idempotency_key"])
        inserted: set[str] = set()
        for start in range(0, len(rows), ROWS_PER_INSERT):
            batch = rows[start : start + ROWS_PER_INSERT]
            result = await conn.execute(stmt.values(batch).returning(table.c.idempotency_key))
            inserted.update(result.scalars())
        written: list[_Change] = []
        for change in changes:
            keys = {f"{change.txn_key}:{side}" for side, _, _ in change.entries()}
            if keys <= inserted:
                written.append(change)
            elif keys & inserted:
                raise _SlotTaken(f"rated call {change.call.id} slot {change.sequence}")
        return written

    async def _sync_live(self, changes: Sequence[_Change]) -> int:
        """Move the hot balances by the posted nets, once per key and account; the failures."""
        live = self._live
        if live is None:
            return 0

        async def apply(account: str, key: str, net: int) -> None:
            if net < 0:  # the account pays more: debit once (no reservation under this key)
                await live.settle(account, key, -net)
            else:
                await live.credit(account, net, key)

        moves = [
            (account, change.txn_key, net)
            for change in changes
            for account, net in change.nets().items()
            if account != SYS_REVENUE
        ]
        outcomes = await asyncio.gather(*(apply(*move) for move in moves), return_exceptions=True)
        failed = 0
        for (account, key, _), outcome in zip(moves, outcomes, strict=True):
            if isinstance(outcome, LiveStateError):
                failed += 1
                log.error(
                    "rerate posted in SQL but not in the live balance",
                    account=account,
                    txn_key=key,
                    error=str(outcome),
                )
            elif isinstance(outcome, BaseException):
                raise outcome
        return failed


def _failed(call: CallToRerate, deck: str, exc: Exception) -> RepriceFailed:
    return RepriceFailed(
        f"rated call {call.id} ({call.switch_id}/{call.call_id}) could not be priced "
        f"with deck {deck!r}: {exc}"
    )


def _price(catalog: TariffCatalog, call: CallToRerate) -> tuple[str, Repriced | None]:
    """(skip reason, None) or ("", the customer's new price)."""
    if not call.deck:
        return "no_deck", None
    if call.tiered and (call.plan is None or call.tier_usage is None):
        return "tiered", None  # its tier usage was not recorded, or its plan is gone
    try:
        after = reprice(catalog, call)
    except (RatingError, MoneyError) as exc:
        raise _failed(call, call.deck, exc) from exc
    if after is None:
        return "no_rate", None
    if after.currency != call.currency:
        return "currency", None
    return "", after


def _level_cost(catalog: TariffCatalog, call: CallToRerate, level: LevelToRerate) -> int | None:
    """A reseller level's new cost; None when it keeps its cost (deck, prefix or currency)."""
    if not level.deck:
        return None
    try:
        after = reprice_level(catalog, call, level)
    except (RatingError, MoneyError) as exc:
        raise _failed(call, level.deck, exc) from exc
    if after is None or after.currency != call.currency:
        log.debug("rerate kept a level's cost", rated_call_id=call.id, level=level.level)
        return None
    return after.cost_micros


async def _histories(
    conn: AsyncConnection, calls: Iterable[CallToRerate]
) -> dict[int, tuple[int, tuple[int, ...]]]:
    """Per call: (how many rerate transactions it has, their sum per level as cost).

    Slots are written in order (slot n only after slot n-1 was read), so the history
    is probed slot by slot with exact keys until a slot is free. Every non-empty slot
    debits some level (``:account`` or ``:charge:{k}``), so those keys are probed.
    """
    history: dict[int, tuple[int, tuple[int, ...]]] = {}
    sides = {call.id: ["account", *(f"charge:{lv.level}" for lv in call.chain)] for call in calls}
    pending = {call_id: 0 for call_id in sides}
    while pending:
        keys = {
            f"{rerate_txn_key(call_id, n)}:{side}": (call_id, index)
            for call_id, n in pending.items()
            for index, side in enumerate(sides[call_id])
        }
        query = select(ledger_entries.c.idempotency_key, ledger_entries.c.amount_micros).where(
            ledger_entries.c.idempotency_key.in_(list(keys))
        )
        found = {row.idempotency_key: row.amount_micros for row in await conn.execute(query)}
        totals: dict[int, list[int]] = {}
        for key, amount in found.items():
            call_id, index = keys[key]
            level_totals = totals.setdefault(call_id, [0] * len(sides[call_id]))
            level_totals[index] -= amount  # a debit raised the cost
        following: dict[int, int] = {}
        for call_id, level_totals in totals.items():
            count, before = history.get(call_id, (0, (0,) * len(sides[call_id])))
            summed = tuple(a + b for a, b in zip(before, level_totals, strict=True))
            history[call_id] = (count + 1, summed)
            following[call_id] = pending[call_id] + 1
        pending = following
    return history


def _description(change: _Change) -> str:
    call, after = change.call, change.priced
    return (
        f"rerate {call.deck} {after.prefix} {after.destination}: "
        f"{format_money(change.before[0])} -> {format_money(after.cost_micros, call.currency)}"
    )
