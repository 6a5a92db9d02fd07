"""Data for the reporting endpoints' tests: rated calls, ledger entries, decks per customer.

``customer_decks`` gives customer A and customer B a rate deck each (unique names), the
rest of the world being ``api_fixtures.World``'s.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from balance.accounts import AccountStore
from balance.rated_calls import RatedCallRecord, RatedCallWriter
from storage.decks import DeckStore
from tariffs.deck import DeckInfo, Rate
from tests.integration.api_fixtures import World, unique

BASE_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
DECK_CSV = "prefix,destination,rate\n44,United Kingdom,0.010000\n"


def call(
    account: str,
    n: int,
    *,
    started_us: int | None = None,
    callee: str = "442071234567",
    disposition: str = "ANSWERED",
    cost: int = 12_000,
) -> RatedCallRecord:
    """A rated call of ``account`` (the n-th, one minute apart by default)."""
    start = BASE_US + n * 60_000_000 if started_us is None else started_us
    answered = disposition == "ANSWERED"
    return RatedCallRecord(
        switch_id="pbx-1",
        call_id=f"{account}-call-{n}",
        account_id=account,
        caller="1001",
        callee=callee,
        started_at_us=start,
        answered_at_us=start + 2_000_000 if answered else None,
        ended_at_us=start + 32_000_000,
        billsec_us=30_000_000 if answered else 0,
        billable_seconds=60 if answered else 0,
        cost_micros=cost if answered else 0,
        currency="USD",
        deck="retail",
        prefix="44",
        destination="United Kingdom",
        rate_micros=12_000,
        disposition=disposition,
        cause="16",
        carrier="carrier-x",
        buy_cost_micros=4_000 if answered else 0,
        margin_micros=8_000 if answered else 0,
    )


async def write_calls(w: World, calls: list[RatedCallRecord]) -> None:
    """Write rated calls (and their charges) as the settler does."""
    assert all(await RatedCallWriter(w.engine).write(calls))


async def add_deck(w: World, name: str, rate: str = "0.01", currency: str = "USD") -> None:
    """Store a one-rate deck in force."""
    await DeckStore(w.engine).replace(
        DeckInfo(name, currency=currency), [Rate("44", "United Kingdom", Decimal(rate))]
    )


@pytest.fixture(name="customer_decks")
async def customer_decks_fixture(world: World) -> dict[str, str]:
    """A deck of its own for customer A and customer B (by principal name)."""
    decks = {"customer_a": unique("deck-a"), "customer_b": unique("deck-b")}
    for who, name in decks.items():
        await add_deck(world, name)
        await AccountStore(world.engine).update(world.ids[who], rate_deck=name)
    return decks
