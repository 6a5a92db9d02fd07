"""Rate decks in SQL: ``rate_decks`` (identity and rules) and ``rates`` (one row per prefix).

Money goes through ``tariffs.money``: prices are stored as integer micro-units, and a
price finer than a micro-unit is refused rather than rounded.

Errors (stable codes)::

    DeckStoreError      DECK_STORE_ERROR
    └── InvalidDeck     INVALID_DECK      a deck or rate field is invalid (names it)

Driver failures are raised as ``storage.engine.StorageError`` chained ``from`` the driver.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from storage.engine import wrap_driver_errors
from storage.tables import rate_decks, rates, utcnow
from tariffs.deck import DeckInfo, Rate, Rounding
from tariffs.money import MoneyError, from_micros, to_micros

log = structlog.get_logger(__name__)

Deck = tuple[DeckInfo, list[Rate]]


class DeckStoreError(Exception):
    """Base of deck storage errors."""

    code = "DECK_STORE_ERROR"


class InvalidDeck(DeckStoreError):
    """A deck or one of its rates has an invalid field."""

    code = "INVALID_DECK"


def _exact_micros(deck: str, prefix: str, field: str, amount: Decimal) -> int:
    try:
        micros = to_micros(amount)
    except MoneyError as exc:
        raise InvalidDeck(f"deck {deck!r} prefix {prefix!r} {field}: {exc}") from exc
    if from_micros(micros) != amount:
        raise InvalidDeck(f"deck {deck!r} prefix {prefix!r} {field}: finer than 6 decimals")
    if micros < 0:
        raise InvalidDeck(f"deck {deck!r} prefix {prefix!r} {field}: negative price")
    return micros


def _rate_row(deck: str, rate: Rate) -> dict[str, Any]:
    where = f"deck {deck!r} prefix {rate.prefix!r}"
    if not rate.prefix or len(rate.prefix) > 32:
        raise InvalidDeck(f"{where} prefix: 1-32 characters")
    for field in ("initial_increment", "subsequent_increment"):
        if getattr(rate, field) <= 0:
            raise InvalidDeck(f"{where} {field}: must be > 0")
    if rate.minimum_duration < 0:
        raise InvalidDeck(f"{where} minimum_duration: must be >= 0")
    return {
        "deck": deck,
        "prefix": rate.prefix,
        "destination": rate.destination,
        "rate_micros": _exact_micros(deck, rate.prefix, "rate", rate.rate),
        "connect_fee_micros": _exact_micros(deck, rate.prefix, "connect_fee", rate.connect_fee),
        "initial_increment": rate.initial_increment,
        "subsequent_increment": rate.subsequent_increment,
        "minimum_duration": rate.minimum_duration,
    }


def _check_info(info: DeckInfo) -> None:
    if not info.name or len(info.name) > 64:
        raise InvalidDeck(f"deck {info.name!r} name: 1-64 characters")
    if len(info.currency) != 3 or not info.currency.isalpha():
        raise InvalidDeck(f"deck {info.name!r} currency: 3 letters, got {info.currency!r}")
    if not 0 <= info.decimals <= 6:
        raise InvalidDeck(f"deck {info.name!r} decimals: 0..6, got {info.decimals!r}")
    try:
        Rounding(info.rounding)
    except ValueError as exc:
        raise InvalidDeck(f"deck {info.name!r} rounding: unknown {info.rounding!r}") from exc


def _rate(row: Any) -> Rate:
    return Rate(
        prefix=row.prefix,
        destination=row.destination,
        rate=from_micros(row.rate_micros),
        connect_fee=from_micros(row.connect_fee_micros),
        initial_increment=row.initial_increment,
        subsequent_increment=row.subsequent_increment,
        minimum_duration=row.minimum_duration,
    )


def _info(row: Any) -> DeckInfo:
    return DeckInfo(
        name=row.name, currency=row.currency, rounding=Rounding(row.rounding), decimals=row.decimals
    )


class DeckStore:
    """Stores and loads whole rate decks."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def replace(self, info: DeckInfo, deck_rates: Sequence[Rate]) -> None:
        """Replace a deck's rules and rates atomically (creates the deck when new)."""
        _check_info(info)
        rows = [_rate_row(info.name, rate) for rate in deck_rates]
        seen: set[str] = set()
        for row in rows:
            if row["prefix"] in seen:
                raise InvalidDeck(f"deck {info.name!r} prefix {row['prefix']!r}: duplicate")
            seen.add(row["prefix"])
        values = {
            "currency": info.currency,
            "rounding": str(info.rounding),
            "decimals": info.decimals,
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
                if rows:
                    await conn.execute(insert(rates), rows)
        log.info("rate deck replaced", deck=info.name, rates=len(rows))

    async def load(self, name: str) -> Deck | None:
        """One deck and its rates (ordered by prefix), or None."""
        with wrap_driver_errors(f"loading deck {name!r}"):
            async with self._engine.connect() as conn:
                decks = await self._load(conn, name)
        return decks.get(name)

    async def load_all(self) -> dict[str, Deck]:
        """Every deck by name."""
        with wrap_driver_errors("loading decks"):
            async with self._engine.connect() as conn:
                return await self._load(conn, None)

    async def names(self) -> list[str]:
        """The names of every deck, sorted."""
        with wrap_driver_errors("listing decks"):
            async with self._engine.connect() as conn:
                result = await conn.execute(select(rate_decks.c.name).order_by(rate_decks.c.name))
                return [row.name for row in result]

    @staticmethod
    async def _load(conn: AsyncConnection, name: str | None) -> dict[str, Deck]:
        deck_query = select(rate_decks)
        rate_query = select(rates).order_by(rates.c.deck, rates.c.prefix)
        if name is not None:
            deck_query = deck_query.where(rate_decks.c.name == name)
            rate_query = rate_query.where(rates.c.deck == name)
        decks: dict[str, Deck] = {
            row.name: (_info(row), []) for row in await conn.execute(deck_query)
        }
        for row in await conn.execute(rate_query):
            decks[row.deck][1].append(_rate(row))
        return decks
