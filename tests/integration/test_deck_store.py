"""DeckStore: atomic replacement and exact round trips of every rate field and band
(SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.decks import DeckStore, InvalidDeck
from tariffs.bands import WEEKDAYS, WEEKEND, TimeBand
from tariffs.deck import DeckInfo, Rate, RateInterval, Rounding


def _name() -> str:
    return f"deck-{uuid.uuid4().hex[:8]}"


NEW_YEAR = datetime(2027, 1, 1, tzinfo=UTC)
BANDS = (TimeBand("peak", WEEKDAYS, 8 * 60, 18 * 60), TimeBand("weekend", WEEKEND))
RATES = [
    Rate("44", "United Kingdom", Decimal("0.012345"), Decimal("0.05"), 30, 6, 10),
    Rate("447", "United Kingdom Mobile", Decimal("0.1")),
    Rate("1", "USA", Decimal("0.004"), initial_increment=1, subsequent_increment=1),
]
V2_RATES = [
    Rate("33", "France peak", Decimal("0.02"), band="peak", min_cost=Decimal("0.05")),
    Rate("33", "France", Decimal("0.01"), max_cost=Decimal("3.5")),
    Rate("447", "UK mobile", Decimal("0.0235"), effective_to=NEW_YEAR),
    Rate.from_intervals(
        "447",
        "UK mobile",
        [RateInterval(0, Decimal("0.6"), 60), RateInterval(60, Decimal("0.300001"), 6)],
        connect_fee=Decimal("0.01"),
        minimum_duration=30,
        effective_from=NEW_YEAR,
    ),
]


async def test_given_new_deck_when_replaced_then_it_loads_back_exactly_in_deck_order(
    sql_engine: AsyncEngine,
) -> None:
    store = DeckStore(sql_engine)
    info = DeckInfo(_name(), currency="EUR", rounding=Rounding.HALF_UP, decimals=4)
    await store.replace(info, RATES)
    loaded = await store.load(info.name)
    assert loaded is not None
    assert loaded[0] == info
    assert loaded[1] == RATES
    assert loaded[1][0].rate == Decimal("0.012345")
    assert await store.load("nope") is None


async def test_given_bands_intervals_bounds_and_windows_when_replaced_then_kept_exactly(
    sql_engine: AsyncEngine,
) -> None:
    store = DeckStore(sql_engine)
    info = DeckInfo(_name(), currency="GBP", bands=BANDS)
    await store.replace(info, V2_RATES)
    loaded = await store.load(info.name)
    assert loaded == (info, V2_RATES)
    moments = [(r.effective_from, r.effective_to) for r in loaded[1]]
    assert all(m is None or m.utcoffset() is not None for pair in moments for m in pair)
    assert loaded[1][3].intervals[1].rate == Decimal("0.300001")


async def test_given_existing_deck_when_replaced_then_old_rates_are_gone(
    sql_engine: AsyncEngine,
) -> None:
    store = DeckStore(sql_engine)
    name = _name()
    await store.replace(DeckInfo(name, bands=BANDS), V2_RATES)
    await store.replace(DeckInfo(name, rounding=Rounding.DOWN), [RATES[2]])
    other = _name()
    await store.replace(DeckInfo(other), RATES[:1])
    everything = await store.load_all()
    assert everything[name] == (DeckInfo(name, rounding=Rounding.DOWN), [RATES[2]])
    assert everything[other][1] == RATES[:1]
    assert {name, other} <= set(await store.names())


@pytest.mark.parametrize(
    ("info", "rates", "match"),
    [
        (None, [RATES[0], Rate("33", "France", Decimal("0.0000001"))], r"prefix '33': rate"),
        (None, [RATES[0], RATES[0]], r"prefix '44': duplicate prefix '44'"),
        (None, [V2_RATES[2], Rate("447", "x", Decimal(1))], "overlaps"),
        (None, [Rate("1", "x", Decimal("0.1"), band="night")], "unknown band 'night'"),
        (None, [Rate("1", "x", Decimal("0.1"), min_cost=Decimal(-1))], "min_cost"),
        (DeckInfo("x", decimals=9), RATES, "decimals"),
        (DeckInfo("x", currency="ABC"), RATES, "unknown currency 'ABC'"),
        (DeckInfo("x", bands=(TimeBand("Peak", WEEKDAYS),)), RATES, "bad band name"),
    ],
)
async def test_given_invalid_deck_when_replaced_then_named_error_and_deck_unchanged(
    sql_engine: AsyncEngine, info: DeckInfo | None, rates: list[Rate], match: str
) -> None:
    store = DeckStore(sql_engine)
    name = _name()
    good = DeckInfo(name, bands=BANDS)
    await store.replace(good, V2_RATES)
    bad_info = DeckInfo(name, bands=BANDS) if info is None else DeckInfo(
        name, info.currency, info.rounding, info.decimals, info.bands
    )
    with pytest.raises(InvalidDeck, match=match):
        await store.replace(bad_info, rates)
    assert await store.load(name) == (good, V2_RATES)


async def test_given_readers_during_replacements_then_each_sees_one_whole_deck(
    sql_engine: AsyncEngine,
) -> None:
    """Atomic replacement: a load never mixes two versions of a deck."""
    store = DeckStore(sql_engine)
    name = _name()

    def version(tag: str, currency: str) -> tuple[DeckInfo, list[Rate]]:
        rates = [Rate(str(1000 + i), tag, Decimal("0.01")) for i in range(400)]
        return DeckInfo(name, currency=currency), rates

    versions = [version("old", "EUR"), version("new", "USD")]
    await store.replace(*versions[0])
    seen: list[tuple[str, set[str], int]] = []

    async def read() -> None:
        for _ in range(15):
            loaded = await store.load(name)
            assert loaded is not None
            seen.append((loaded[0].currency, {r.destination for r in loaded[1]}, len(loaded[1])))

    async def write() -> None:
        for turn in range(6):
            await store.replace(*versions[(turn + 1) % 2])

    await asyncio.gather(read(), write(), read())
    assert {(currency, frozenset(tags), size) for currency, tags, size in seen} <= {
        ("EUR", frozenset({"old"}), 400),
        ("USD", frozenset({"new"}), 400),
    }
