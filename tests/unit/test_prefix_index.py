"""PrefixIndex and RateDeck: longest-prefix matching, normalisation and validation."""

from __future__ import annotations

import random
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tariffs.deck import DeckInfo, Rate, Rounding
from tariffs.prefix_index import (
    DuplicatePrefixError,
    InvalidPrefixError,
    PrefixIndex,
    normalize_number,
)
from tariffs.ratedeck import DeckError, DuplicateRateError, InvalidRateError, RateDeck

UK = [("44", "uk"), ("447", "uk-mobile"), ("4479", "uk-mobile-79"), ("1", "nanp"), ("0044", "z")]


def test_given_nested_prefixes_when_matching_then_the_longest_wins() -> None:
    index = PrefixIndex(UK)
    assert index.longest_match("447912345678") == "uk-mobile-79"
    assert index.longest_match("447812345678") == "uk-mobile"
    assert index.longest_match("442071234567") == "uk"
    assert index.longest_match("12125551234") == "nanp"


def test_given_a_leading_plus_when_matching_then_it_is_stripped() -> None:
    index = PrefixIndex(UK)
    assert index.longest_match("+447812345678") == "uk-mobile"


def test_given_a_leading_00_when_matching_then_it_is_not_stripped() -> None:
    index = PrefixIndex(UK)
    assert index.longest_match("00447812345678") == "z"
    assert PrefixIndex([("44", "uk")]).longest_match("00447812345678") is None


@pytest.mark.parametrize(
    "number",
    ["", "+", "++44", "44 78", "44-78", "4478x", "\u0664\u0664", "44²", " 44", "+ 44"],
)
def test_given_a_number_with_non_digits_when_matching_then_nothing_matches(number: str) -> None:
    index = PrefixIndex(UK)
    assert index.longest_match(number) is None
    assert normalize_number(number) is None


def test_given_a_number_shorter_than_every_prefix_when_matching_then_none() -> None:
    index = PrefixIndex([("4479", "x")])
    assert index.longest_match("447") is None
    assert index.longest_match("4479") == "x"


def test_given_no_prefix_when_matching_then_none() -> None:
    assert PrefixIndex[str]().longest_match("44") is None


def test_given_falsy_values_when_matching_then_they_are_returned() -> None:
    index = PrefixIndex([("4", 0), ("44", 0)])
    assert index.longest_match("449") == 0


@pytest.mark.parametrize("prefix", ["", "+44", "4 4", "44a", "٤٤"])
def test_given_an_invalid_prefix_when_building_then_it_is_named(prefix: str) -> None:
    with pytest.raises(InvalidPrefixError) as caught:
        PrefixIndex([("1", 1), (prefix, 2)])
    assert caught.value.prefix == prefix
    assert caught.value.code == "BAD_PREFIX"


def test_given_a_duplicate_prefix_when_building_then_it_is_refused() -> None:
    with pytest.raises(DuplicatePrefixError, match="'447'") as caught:
        PrefixIndex([("447", 1), ("44", 2), ("447", 3)])
    assert caught.value.code == "DUPLICATE_PREFIX"


@given(
    prefixes=st.sets(st.text(alphabet="0123456789", min_size=1, max_size=6), max_size=40),
    number=st.text(alphabet="0123456789", max_size=10),
)
def test_given_random_prefixes_when_matching_then_it_equals_a_linear_scan(
    prefixes: set[str], number: str
) -> None:
    index = PrefixIndex((p, p) for p in prefixes)
    matching = [p for p in prefixes if number.startswith(p)]
    expected = max(matching, key=len) if matching else None
    assert index.longest_match(number) == expected
    assert index.longest_match("+" + number) == expected


def test_given_many_random_prefixes_when_matching_then_it_equals_a_linear_scan() -> None:
    rng = random.Random(7)
    prefixes = {"".join(rng.choices("0123456789", k=rng.randint(1, 6))) for _ in range(3000)}
    index = PrefixIndex((p, p) for p in prefixes)
    assert len(index) == len(prefixes)
    for _ in range(500):
        number = str(rng.randrange(10**9, 10**12))
        matching = [p for p in prefixes if number.startswith(p)]
        assert index.longest_match(number) == (max(matching, key=len) if matching else None)


def _rate(prefix: str, destination: str = "d") -> Rate:
    return Rate(prefix=prefix, destination=destination, rate=Decimal("0.01"))


def test_given_a_deck_when_matching_then_the_longest_prefix_rate_is_returned() -> None:
    rates = [_rate("44", "UK"), _rate("447", "UK mobile")]
    deck = RateDeck(DeckInfo("retail"), rates)
    match = deck.match("+447700900123")
    assert match is not None
    assert match.destination == "UK mobile"
    assert deck.match("33123") is None
    assert deck.rates == tuple(rates)
    assert deck.info.name == "retail"
    assert len(deck) == 2
    assert deck.get("44") == rates[0]


def test_given_a_deck_with_a_duplicate_prefix_when_building_then_both_are_named() -> None:
    with pytest.raises(DuplicateRateError, match=r"'44'.*'UK'.*'UK again'"):
        RateDeck(DeckInfo("retail"), [_rate("44", "UK"), _rate("447"), _rate("44", "UK again")])


@pytest.mark.parametrize(
    ("changes", "culprit"),
    [
        ({"prefix": "+44"}, "prefix"),
        ({"rate": Decimal("-0.01")}, "rate must not be negative"),
        ({"rate": Decimal("0.0000001")}, "rate has more than 6 decimals"),
        ({"rate": 0.01}, "rate must be a Decimal"),
        ({"connect_fee": Decimal("NaN")}, "connect_fee is not a finite"),
        ({"initial_increment": 0}, "initial_increment must not be zero"),
        ({"subsequent_increment": -6}, "subsequent_increment must not be zero"),
        ({"subsequent_increment": 6.0}, "subsequent_increment must be a whole"),
        ({"minimum_duration": -1}, "minimum_duration must not be negative"),
    ],
)
def test_given_an_invalid_rate_when_building_a_deck_then_the_problem_is_named(
    changes: dict[str, Any], culprit: str
) -> None:
    with pytest.raises(InvalidRateError, match=culprit) as caught:
        RateDeck(DeckInfo("retail"), [_rate("1"), replace(_rate("44"), **changes)])
    assert caught.value.code == "INVALID_RATE"


@pytest.mark.parametrize(
    "info",
    [
        DeckInfo(""),
        DeckInfo("x", currency=" "),
        DeckInfo("x", decimals=7),
        DeckInfo("x", decimals=-1),
        DeckInfo("x", rounding="sideways"),  # type: ignore[arg-type]
    ],
)
def test_given_invalid_deck_info_when_building_then_deck_error(info: DeckInfo) -> None:
    with pytest.raises(DeckError):
        RateDeck(info, [_rate("1")])


def test_given_valid_info_when_building_then_each_rounding_is_accepted() -> None:
    for rounding in Rounding:
        assert RateDeck(DeckInfo("x", rounding=rounding, decimals=0), []).info.decimals == 0
