"""Bench the pure rating engine and the prefix index (plain script, prints a table).

    python bench/bench_rating.py          # 1,000,000 prefixes
    python bench/bench_rating.py --quick  # 100,000 prefixes, a few seconds

Speed is reported as ratios against a baseline measured in the same run: a bare loop
of ``dict.get`` over the same number of keys.
"""

from __future__ import annotations

import argparse
import random
import time
import tracemalloc
from collections.abc import Callable
from decimal import Decimal

from tariffs.deck import DeckInfo, Rate, Rounding
from tariffs.prefix_index import PrefixIndex
from tariffs.rating import max_usage, rate_call

DIGITS = "0123456789"


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k prefixes, fewer calls")
    args = parser.parse_args()
    size = 100_000 if args.quick else 1_000_000
    lookups = 200_000 if args.quick else 1_000_000
    calls = 50_000 if args.quick else 300_000
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
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    measured = PrefixIndex((key.decode(), shared_value) for key in raw)
    index_bytes = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del measured

    base_lookup = _baseline(numbers, table)
    match = index.longest_match
    index_lookup = _timed(lambda: [match(number) for number in numbers])
    hits = sum(1 for number in numbers if match(number) is not None)

    info = DeckInfo("bench", rounding=Rounding.UP, decimals=6)
    rates = [
        Rate("44", "UK", Decimal("0.0085")),
        Rate("447", "UK mobile", Decimal("0.0235"), Decimal("0.01"), 30, 6),
        Rate("34", "Spain", Decimal("0.0095"), Decimal(0), 1, 1, 60),
    ]
    jobs = [
        (rng.choice(rates), Decimal(rng.randint(0, 3_600_000)).scaleb(-3)) for _ in range(calls)
    ]
    credits = [Decimal(rng.randint(0, 100_000_000)).scaleb(-6) for _ in range(calls)]
    base_calls = _baseline(numbers[:calls], table)
    rating = _timed(lambda: [rate_call(info, rate, duration) for rate, duration in jobs])
    usage = _timed(
        lambda: [
            max_usage(info, rate, credit) for (rate, _), credit in zip(jobs, credits, strict=True)
        ]
    )

    rows = [
        ("dict.get baseline", f"{lookups / base_lookup:,.0f} /s", "1.0"),
        ("prefix index build", f"{index_build:.2f} s ({size:,} prefixes)",
         f"{index_build / dict_build:.1f} x dict()"),
        ("prefix index memory", f"{index_bytes / size:.0f} B/prefix (keys included)", ""),
        ("longest_match", f"{lookups / index_lookup:,.0f} /s "
         f"({index_lookup / lookups * 1e6:.2f} us, {hits * 100 // lookups}% hit)",
         f"{index_lookup / base_lookup:.1f} x dict.get"),
        ("rate_call", f"{calls / rating:,.0f} /s", f"{rating / base_calls:.1f} x dict.get"),
        ("max_usage", f"{calls / usage:,.0f} /s", f"{usage / base_calls:.1f} x dict.get"),
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    print(f"{'metric':<{widths[0]}}  {'value':<{widths[1]}}  time ratio")
    for name, value, ratio in rows:
        print(f"{name:<{widths[0]}}  {value:<{widths[1]}}  {ratio}")


if __name__ == "__main__":
    main()
