"""Bench the pure rating engine, the prefix index and rate decks (plain script, prints a table).

    python bench/bench_rating.py          # 1,000,000 prefixes
    python bench/bench_rating.py --quick  # 100,000 prefixes, a few seconds

Speed is reported as ratios against baselines measured in the same run: a bare loop of
``dict.get`` over the same number of keys (lookups, rating), building a ``dict`` of the
same pairs (index and deck build), ``csv.reader`` over the same file (CSV import) and a
bare ``SELECT`` of the same rows (SQL load, SQLite in a temporary directory).

Decks: a "plain" deck has one classic rate per prefix; a "banded" deck adds, on one
prefix in ten, a peak and a weekend rate (bands read in Europe/Paris) and, on one in
twenty, a scheduled price change (two effective windows), as a real retail deck does.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import random
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import select

from storage.decks import DeckStore
from storage.engine import make_engine, sqlite_url_for
from storage.tables import metadata, rates
from tariffs.bands import WEEKDAYS, WEEKEND, TimeBand
from tariffs.csv_deck import dump_deck_csv, parse_deck_csv
from tariffs.deck import DeckInfo, Rate, RateInterval, Rounding
from tariffs.prefix_index import PrefixIndex
from tariffs.ratedeck import RateDeck
from tariffs.rating import max_usage, rate_call

DIGITS = "0123456789"
CHANGE_AT = datetime(2027, 1, 1, tzinfo=UTC)
BANDS = (TimeBand("peak", WEEKDAYS, 8 * 60, 18 * 60), TimeBand("weekend", WEEKEND))
Row = tuple[str, str, str]


def _random_prefixes(rng: random.Random, count: int) -> list[str]:
    prefixes: set[str] = set()
    while len(prefixes) < count:
        prefixes.add("".join(rng.choices(DIGITS, k=rng.randint(2, 9))))
    return sorted(prefixes)


def _numbers(rng: random.Random, prefixes: list[str], count: int) -> list[str]:
    """Half the numbers start with a known prefix, half are random 12-digit numbers."""
    numbers = []
    for i in range(count):
        head = rng.choice(prefixes) if i % 2 == 0 else ""
        numbers.append(head + "".join(rng.choices(DIGITS, k=12 - len(head))))
    return numbers


def _timed(loop: Callable[[], object]) -> float:
    started = time.perf_counter()
    loop()
    return time.perf_counter() - started


def _baseline(keys: list[str], table: dict[str, int]) -> float:
    """Seconds for a bare dict lookup loop over ``keys``."""

    def loop() -> None:
        get = table.get
        for key in keys:
            get(key)

    return _timed(loop)


def _deck_rates(rng: random.Random, prefixes: list[str], banded: bool) -> list[Rate]:
    """One rate per prefix (a few thousand distinct prices); banded: more on some."""
    # multiples of 4 micro-units, so the price / 2 and / 4 variants stay exact
    prices = [Decimal(4 * rng.randint(250, 225_000)).scaleb(-6) for _ in range(5_000)]
    out: list[Rate] = []
    for i, prefix in enumerate(prefixes):
        price = prices[i % len(prices)]
        base = Rate(prefix, "destination", price, Decimal(0), 30, 6, 0)
        if banded and i % 20 == 0:  # a scheduled price change
            out.append(Rate(prefix, "destination", price, effective_to=CHANGE_AT))
            out.append(Rate(prefix, "destination", price / 2, effective_from=CHANGE_AT))
        else:
            out.append(base)
        if banded and i % 10 == 1:
            out.append(Rate(prefix, "destination", price * 2, band="peak"))
            out.append(Rate(prefix, "destination", price / 4, band="weekend"))
    return out


def _traced_bytes(build: Callable[[], object]) -> tuple[int, object]:
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    built = build()
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return used, built


async def _sql_load(info: DeckInfo, deck_rates: list[Rate]) -> tuple[float, float, float]:
    """(replace seconds, load seconds, bare SELECT seconds) on SQLite in a temp dir."""
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(sqlite_url_for(Path(tmp)))
        try:
            async with engine.begin() as conn:
                await conn.run_sync(metadata.create_all)
            store = DeckStore(engine)
            started = time.perf_counter()
            await store.replace(info, deck_rates)
            replaced = time.perf_counter() - started
            started = time.perf_counter()
            await store.load(info.name)
            loaded = time.perf_counter() - started
            started = time.perf_counter()
            async with engine.connect() as conn:
                (await conn.execute(select(rates).where(rates.c.deck == info.name))).all()
            bare = time.perf_counter() - started
        finally:
            await engine.dispose()
    return replaced, loaded, bare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k prefixes, fewer calls")
    args = parser.parse_args()
    size = 100_000 if args.quick else 1_000_000
    lookups = 200_000 if args.quick else 1_000_000
    calls = 50_000 if args.quick else 300_000
    sql_size = 20_000 if args.quick else 200_000
    rng = random.Random(20240501)

    prefixes = _random_prefixes(rng, size)
    pairs = [(prefix, i) for i, prefix in enumerate(prefixes)]
    numbers = _numbers(rng, prefixes, lookups)
    table = dict(pairs)

    dict_build = _timed(lambda: dict(pairs))
    index_build_started = time.perf_counter()
    index = PrefixIndex(pairs)
    index_build = time.perf_counter() - index_build_started

    raw = [prefix.encode() for prefix in prefixes]  # fresh key strings are counted too
    shared_value = object()  # real values (Rate) are shared with the deck
    index_bytes, _ = _traced_bytes(lambda: PrefixIndex((k.decode(), shared_value) for k in raw))

    base_lookup = _baseline(numbers, table)
    match = index.longest_match
    index_lookup = _timed(lambda: [match(number) for number in numbers])
    hits = sum(1 for number in numbers if match(number) is not None)

    # --- the pure engine: classic rates, then interval rates with min/max cost
    info = DeckInfo("bench", rounding=Rounding.UP, decimals=6)
    classic = [
        Rate("44", "UK", Decimal("0.0085")),
        Rate("447", "UK mobile", Decimal("0.0235"), Decimal("0.01"), 30, 6),
        Rate("34", "Spain", Decimal("0.0095"), Decimal(0), 1, 1, 60),
    ]
    interval = [
        Rate.from_intervals(
            "39", "Italy",
            [RateInterval(0, Decimal("0.60"), 60), RateInterval(60, Decimal("0.3"), 6)],
        ),
        Rate.from_intervals(
            "41", "Swiss", [RateInterval(0, Decimal(0), 10), RateInterval(10, Decimal("1.2"), 1),
                            RateInterval(70, Decimal("0.6"), 60)],
            connect_fee=Decimal("0.02"), min_cost=Decimal("0.1"), max_cost=Decimal("2.5"),
        ),
        Rate("86", "China", Decimal("0.1"), Decimal("0.05"), 1, 1, min_cost=Decimal("0.2"),
             max_cost=Decimal("1")),
    ]  # fmt: skip
    durations = [Decimal(rng.randint(0, 3_600_000)).scaleb(-3) for _ in range(calls)]
    credits = [Decimal(rng.randint(0, 100_000_000)).scaleb(-6) for _ in range(calls)]
    base_calls = _baseline(numbers[:calls], table)

    def engine(kind: list[Rate]) -> tuple[float, float]:
        jobs = [(kind[i % 3], durations[i], credits[i]) for i in range(calls)]
        rating = _timed(lambda: [rate_call(info, r, d) for r, d, _ in jobs])
        usage = _timed(lambda: [max_usage(info, r, c) for r, _, c in jobs])
        return rating, usage

    classic_rating, classic_usage = engine(classic)
    interval_rating, interval_usage = engine(interval)

    # --- decks: build (validation + index), memory, banded lookups, CSV, SQL
    plain_rates = _deck_rates(rng, prefixes, banded=False)
    banded_rates = _deck_rates(rng, prefixes, banded=True)
    banded_info = DeckInfo("banded", bands=BANDS)
    plain_build = _timed(lambda: RateDeck(info, plain_rates))
    banded_build = _timed(lambda: RateDeck(banded_info, banded_rates))
    deck_bytes, _ = _traced_bytes(
        lambda: RateDeck(info, [Rate(r.prefix, r.destination, r.rate, r.connect_fee, 30, 6)
                                for r in plain_rates])
    )  # fmt: skip
    banded = RateDeck(banded_info, banded_rates)
    base_moment = datetime(2026, 11, 23, tzinfo=UTC)  # a Monday
    moments = [base_moment + timedelta(minutes=rng.randint(0, 14 * 1440)) for _ in numbers]
    queries = list(zip(numbers, moments, strict=True))
    banded_lookup = _timed(lambda: [banded.match(n, at, "Europe/Paris") for n, at in queries])

    text = dump_deck_csv(RateDeck(banded_info, banded_rates))
    csv_base = _timed(lambda: sum(1 for _ in csv.reader(io.StringIO(text))))
    csv_parse = _timed(lambda: parse_deck_csv(text, DeckInfo("banded")))

    sql_rates = banded_rates[:sql_size]
    replaced, loaded, bare = asyncio.run(_sql_load(banded_info, sql_rates))

    rows = [
        ("dict.get baseline", f"{lookups / base_lookup:,.0f} /s", "1.0"),
        ("prefix index build", f"{index_build:.2f} s ({size:,} prefixes)",
         f"{index_build / dict_build:.1f} x dict()"),
        ("prefix index memory", f"{index_bytes / size:.0f} B/prefix (keys included)", ""),
        ("longest_match", f"{lookups / index_lookup:,.0f} /s "
         f"({index_lookup / lookups * 1e6:.2f} us, {hits * 100 // lookups}% hit)",
         f"{index_lookup / base_lookup:.1f} x dict.get"),
        ("rate_call classic", f"{calls / classic_rating:,.0f} /s",
         f"{classic_rating / base_calls:.1f} x dict.get"),
        ("max_usage classic", f"{calls / classic_usage:,.0f} /s",
         f"{classic_usage / base_calls:.1f} x dict.get"),
        ("rate_call intervals+caps", f"{calls / interval_rating:,.0f} /s",
         f"{interval_rating / base_calls:.1f} x dict.get"),
        ("max_usage intervals+caps", f"{calls / interval_usage:,.0f} /s",
         f"{interval_usage / base_calls:.1f} x dict.get"),
        ("RateDeck build, plain", f"{plain_build:.2f} s ({len(plain_rates):,} rates)",
         f"{plain_build / dict_build:.1f} x dict()"),
        ("RateDeck build, banded", f"{banded_build:.2f} s ({len(banded_rates):,} rates)",
         f"{banded_build / dict_build:.1f} x dict()"),
        ("RateDeck memory, plain", f"{deck_bytes / size:.0f} B/prefix (rates included)", ""),
        ("match, banded, Paris", f"{lookups / banded_lookup:,.0f} /s "
         f"({banded_lookup / lookups * 1e6:.2f} us)",
         f"{banded_lookup / base_lookup:.1f} x dict.get"),
        ("CSV import, banded", f"{csv_parse:.2f} s ({len(banded_rates) / csv_parse:,.0f} rates/s)",
         f"{csv_parse / csv_base:.1f} x csv.reader"),
        ("SQLite replace", f"{replaced:.2f} s ({len(sql_rates) / replaced:,.0f} rates/s)", ""),
        ("SQLite load", f"{loaded:.2f} s ({len(sql_rates) / loaded:,.0f} rates/s)",
         f"{loaded / bare:.1f} x bare SELECT"),
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    print(f"{'metric':<{widths[0]}}  {'value':<{widths[1]}}  time ratio")
    for name, value, ratio in rows:
        print(f"{name:<{widths[0]}}  {value:<{widths[1]}}  {ratio}")


if __name__ == "__main__":
    main()
