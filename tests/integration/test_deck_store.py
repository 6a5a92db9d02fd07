"""DeckStore: atomic replacement and exact money round trips (SQLite and PostgreSQL)."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.decks import DeckStore, InvalidDeck
from tariffs.deck import DeckInfo, Rate, Rounding


def _name() -> str:
    return f"deck-{uuid.uuid4().hex[:8]}"


RATES = [
    Rate("44", "United Kingdom", Decimal("0.012345"), Decimal("0.05"), 30, 6, 10),
    Rate("447", "United Kingdom Mobile", Decimal("0.1")),
    Rate("1", "USA", Decimal("0.004"), initial_increment=1, subsequent_increment=1),
]


async def test_given_new_deck_when_replaced_then_it_loads_back_exactly(
    sql_engine: AsyncEngine,
) -> None:
    store = DeckStore(sql_engine)
    info = DeckInfo(_name(), currency="EUR", rounding=Rounding.HALF_UP, decimals=4)
    await store.replace(info, RATES)
    loaded = await store.load(info.name)
    assert loaded is not None
    assert loaded[0] == info
    assert loaded[1] == sorted(RATES, key=lambda r: r.prefix)
    assert loaded[1][1].rate == Decimal("0.012345")
    assert await store.load("nope") is None


async def test_given_existing_deck_when_replaced_then_old_rates_are_gone(
    sql_engine: AsyncEngine,
) -> None:
    store = DeckStore(sql_engine)
    name = _name()
    await store.replace(DeckInfo(name), RATES)
    await store.replace(DeckInfo(name, rounding=Rounding.DOWN), [RATES[2]])
    other = _name()
    await store.replace(DeckInfo(other), RATES[:1])
    everything = await store.load_all()
    assert everything[name] == (DeckInfo(name, rounding=Rounding.DOWN), [RATES[2]])
    assert everything[other][1] == RATES[:1]
    assert {name, other} <= set(await store.names())


async def test_given_invalid_rate_when_replaced_then_named_error_and_deck_unchanged(
    sql_engine: AsyncEngine,
) -> None:
    store = DeckStore(sql_engine)
    name = _name()
    await store.replace(DeckInfo(name), RATES)
    too_fine = Rate("33", "France", Decimal("0.0000001"))
    with pytest.raises(InvalidDeck, match=r"prefix '33' rate"):
        await store.replace(DeckInfo(name), [RATES[0], too_fine])
    with pytest.raises(InvalidDeck, match=r"prefix '44': duplicate"):
        await store.replace(DeckInfo(name), [RATES[0], RATES[0]])
    with pytest.raises(InvalidDeck, match="decimals"):
        await store.replace(DeckInfo(name, decimals=9), RATES)
    loaded = await store.load(name)
    assert loaded is not None and len(loaded[1]) == len(RATES)
