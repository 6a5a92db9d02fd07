"""Rate decks in SQL: ``rate_decks`` (identity, rules, bands) and ``rates`` (one row per rate).

A deck is replaced whole, in ONE transaction: its row, then every rate deleted and
inserted again (``seq`` keeps the deck's order). A reader never sees half a deck, and a
bad deck changes nothing: it is checked (:func:`tariffs.deck_rules.deck_problems`, the
same rules as a CSV import) before the transaction starts.

Money goes through ``tariffs.money``: prices are stored as integer micro-units, and a
price finer than a micro-unit is refused rather than rounded. Interval rates and bands
are JSON text (see migration 0003 for the shapes); windows are ``UTCDateTime``.

Errors (stable codes)::

    DeckStoreError      DECK_STORE_ERROR
    └── InvalidDeck     INVALID_DECK      a deck or rate field is invalid (names it)

Driver failures are raised as ``storage.engine.StorageError`` chained ``from`` the driver.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from storage.engine import wrap_driver_errors
from storage.tables import rate_decks, rates, utcnow
from tariffs.bands import TimeBand
from tariffs.deck import DeckInfo, Rate, RateInterval, Rounding
from tariffs.deck_rules import band_problems, deck_problems, info_problems
from tariffs.money import MoneyError, from_micros, to_micros

log = structlog.get_logger(__name__)

Deck = tuple[DeckInfo, list[Rate]]

_INSERT_BATCH = 10_000


STAGED_SUFFIX = "@pending"
"""Decks named ``<name>@pending`` are uploads staged by the API, not yet in force."""


class DeckStoreError(Exception):
    """Base of deck storage errors."""

    code = "DECK_STORE_ERROR"


class InvalidDeck(DeckStoreError):
    """A deck or one of its rates has an invalid field."""

    code = "INVALID_DECK"


def _micros(deck: str, prefix: str, field: str, amount: Decimal) -> int:
    try:
        micros = to_micros(amount)
    except MoneyError as exc:
        raise InvalidDeck(f"deck {deck!r} prefix {prefix!r} {field}: {exc}") from exc
    if from_micros(micros) != amount:
        raise InvalidDeck(f"deck {deck!r} prefix {prefix!r} {field}: finer than 6 decimals")
    return micros


def _rate_row(deck: str, seq: int, rate: Rate) -> dict[str, Any]:
    if len(rate.prefix) > 32:
        raise InvalidDeck(f"deck {deck!r} prefix {rate.prefix!r} prefix: 1-32 characters")
    intervals = (
        json.dumps(
            [[i.start, _micros(deck, rate.prefix, "intervals", i.rate), i.increment]
             for i in rate.intervals],
            separators=(",", ":"),
        )
        if rate.intervals
        else None
    )  # fmt: skip
    return {
        "deck": deck,
        "seq": seq,
        "prefix": rate.prefix,
        "destination": rate.destination,
        "rate_micros": _micros(deck, rate.prefix, "rate", rate.rate),
        "connect_fee_micros": _micros(deck, rate.prefix, "connect_fee", rate.connect_fee),
        "initial_increment": rate.initial_increment,
        "subsequent_increment": rate.subsequent_increment,
        "minimum_duration": rate.minimum_duration,
        "intervals": intervals,
        "min_cost_micros": _micros(deck, rate.prefix, "min_cost", rate.min_cost),
        "max_cost_micros": None
        if rate.max_cost is None
        else _micros(deck, rate.prefix, "max_cost", rate.max_cost),
        "band": rate.band,
        "effective_from": rate.effective_from,
        "effective_to": rate.effective_to,
    }


def _check(info: DeckInfo, deck_rates: Sequence[Rate]) -> None:
    """Raise :class:`InvalidDeck` naming the first broken rule of the deck."""
    if not info.name or len(info.name) > 64:
        raise InvalidDeck(f"deck {info.name!r} name: 1-64 characters")
    problems = info_problems(info) + [f"band row {i + 1}: {m}" for i, m in band_problems(info)]
    if problems:
        raise InvalidDeck(f"deck {info.name!r}: {problems[0]}")
    for problem in deck_problems(info, deck_rates):
        prefix = deck_rates[problem.index].prefix
        raise InvalidDeck(f"deck {info.name!r} prefix {prefix!r}: {problem.message}")


def _bands_json(bands: Sequence[TimeBand]) -> str:
    return json.dumps(
        [[b.name, list(b.weekdays), b.start, b.end] for b in bands], separators=(",", ":")
    )


def _rate(row: Any) -> Rate:
    rules: dict[str, Any] = {
        "connect_fee": from_micros(row.connect_fee_micros),
        "minimum_duration": row.minimum_duration,
        "min_cost": from_micros(row.min_cost_micros),
        "max_cost": None if row.max_cost_micros is None else from_micros(row.max_cost_micros),
        "band": row.band,
        "effective_from": row.effective_from,
        "effective_to": row.effective_to,
    }
    if row.intervals is not None:
        intervals = [
            RateInterval(start, from_micros(micros), increment)
            for start, micros, increment in json.loads(row.intervals)
        ]
        return Rate.from_intervals(row.prefix, row.destination, intervals, **rules)
    return Rate(
        row.prefix,
        row.destination,
        from_micros(row.rate_micros),
        initial_increment=row.initial_increment,
        subsequent_increment=row.subsequent_increment,
        **rules,
    )


def _info(row: Any) -> DeckInfo:
    bands = tuple(
        TimeBand(name, tuple(days), start, end) for name, days, start, end in json.loads(row.bands)
    )
    return DeckInfo(
        name=row.name,
        currency=row.currency,
        rounding=Rounding(row.rounding),
        decimals=row.decimals,
        bands=bands,
    )


class DeckStore:
    """Stores and loads whole rate decks."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def replace(self, info: DeckInfo, deck_rates: Sequence[Rate]) -> None:
        """Replace a deck's rules, bands and rates atomically (creates the deck when new)."""
        _check(info, deck_rates)
        rows = [_rate_row(info.name, seq, rate) for seq, rate in enumerate(deck_rates)]
        values = {
            "currency": info.currency,
            "rounding": str(info.rounding),
            "decimals": info.decimals,
            "bands": _bands_json(info.bands),
            "updated_at": utcnow(),
        }
        with wrap_driver_errors(f"replacing deck {info.name!r}"):
            async with self._engine.begin() as conn:
                exists = await conn.execute(
                    select(rate_decks.c.name).where(rate_decks.c.name == info.name)
                )
                if exists.first() is None:
                    await conn.execute(insert(rate_decks).values(name=info.name, **values))
                else:
                    await conn.execute(
                        update(rate_decks).where(rate_decks.c.name == info.name).values(**values)
                    )
                await conn.execute(delete(rates).where(rates.c.deck == info.name))
                for start in range(0, len(rows), _INSERT_BATCH):
                    await conn.execute(insert(rates), rows[start : start + _INSERT_BATCH])
        log.info("rate deck replaced", deck=info.name, rates=len(rows))

    async def load(self, name: str) -> Deck | None:
        """One deck and its rates (in deck order), or None."""
        with wrap_driver_errors(f"loading deck {name!r}"):
            async with self._engine.connect() as conn:
                decks = await self._load(conn, name)
        return decks.get(name)

    async def load_all(self) -> dict[str, Deck]:
        """Every deck in force by name (a version staged by the API, ``<name>@pending``, is
        not in force: ``daemon.api.deck_staging``)."""
        with wrap_driver_errors("loading decks"):
            async with self._engine.connect() as conn:
                decks = await self._load(conn, None)
        return {name: deck for name, deck in decks.items() if not name.endswith(STAGED_SUFFIX)}

    async def names(self) -> list[str]:
        """The names of every deck in force, sorted."""
        with wrap_driver_errors("listing decks"):
            async with self._engine.connect() as conn:
                result = await conn.execute(select(rate_decks.c.name).order_by(rate_decks.c.name))
                return [row.name for row in result if not row.name.endswith(STAGED_SUFFIX)]

    @staticmethod
    async def _load(conn: AsyncConnection, name: str | None) -> dict[str, Deck]:
        """Decks and rates read in one transaction (a concurrent replace is seen whole)."""
        deck_query = select(rate_decks)
        rate_query = select(rates).order_by(rates.c.deck, rates.c.seq)
        if name is not None:
            deck_query = deck_query.where(rate_decks.c.name == name)
            rate_query = rate_query.where(rates.c.deck == name)
        if conn.dialect.name == "postgresql":  # one snapshot for both queries
            await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            decks: dict[str, Deck] = {
                row.name: (_info(row), []) for row in await conn.execute(deck_query)
            }
            for row in await conn.execute(rate_query):
                decks[row.deck][1].append(_rate(row))
        return decks
