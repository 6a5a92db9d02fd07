"""CSV rate decks: the example deck, defaults, round-trips and every kind of bad line."""

from __future__ import annotations

import io
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tariffs.csv_deck import COLUMNS, DeckImportError, dump_deck_csv, parse_deck_csv
from tariffs.deck import DeckInfo, Rate, Rounding
from tariffs.ratedeck import DeckError, RateDeck

INFO = DeckInfo("retail", "EUR", Rounding.UP, 6)
HEADER = ",".join(COLUMNS)
EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "decks" / "example.csv"


def _problems(text: str) -> list[tuple[int, str | None, str]]:
    with pytest.raises(DeckImportError) as caught:
        parse_deck_csv(text, INFO)
    assert caught.value.code == "DECK_IMPORT"
    return [(p.line, p.field, p.message) for p in caught.value.problems]


def test_given_the_example_deck_when_parsed_then_it_matches_real_numbers() -> None:
    deck = parse_deck_csv(EXAMPLE.read_text(encoding="utf-8"), INFO)
    mobile = deck.match("+447911123456")
    assert mobile is not None
    assert (mobile.destination, mobile.initial_increment, mobile.subsequent_increment) == (
        "United Kingdom - mobile",
        30,
        6,
    )
    spain = deck.match("34911234567")
    assert spain is not None
    assert (spain.initial_increment, spain.subsequent_increment) == (1, 1)
    assert {(r.initial_increment, r.subsequent_increment) for r in deck.rates} >= {
        (60, 60),
        (30, 6),
        (1, 1),
    }


def test_given_the_example_deck_when_dumped_then_the_file_is_reproduced() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    assert dump_deck_csv(parse_deck_csv(text, INFO)) == text


def test_given_only_required_columns_when_parsed_then_defaults_apply() -> None:
    deck = parse_deck_csv("destination,prefix,rate\nUK,44,0.01\n", INFO)
    assert deck.rates == (Rate("44", "UK", Decimal("0.01"), Decimal(0), 60, 60, 0),)


def test_given_columns_in_any_order_and_empty_optional_cells_when_parsed_then_by_header() -> None:
    text = (
        "\ufeffminimum_duration,rate,prefix,initial_increment,destination,connect_fee\n"
        "\n"
        " 30 , 0.5 , 4487 , 1 , UK premium , \n"
        ",0.02,49,30,Germany,0.001\n"
    )
    deck = parse_deck_csv(io.StringIO(text), INFO)
    assert deck.rates == (
        Rate("4487", "UK premium", Decimal("0.5"), Decimal(0), 1, 60, 30),
        Rate("49", "Germany", Decimal("0.02"), Decimal("0.001"), 30, 60, 0),
    )


def test_given_a_quoted_destination_with_a_comma_when_round_tripped_then_kept() -> None:
    deck = RateDeck(INFO, [Rate("1", 'US, "lower 48"', Decimal("1E+1"))])
    text = dump_deck_csv(deck)
    assert '"US, ""lower 48"""' in text
    assert ",10," in text  # no exponent notation in the file
    assert parse_deck_csv(text, INFO).rates == deck.rates


digits = st.text(alphabet="0123456789", min_size=1, max_size=8)
prices = st.integers(0, 10**9).map(lambda micros: Decimal(micros).scaleb(-6))
rates = st.builds(
    Rate,
    prefix=digits,
    destination=st.text(
        alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=20
    ).map(str.strip),
    rate=prices,
    connect_fee=prices,
    initial_increment=st.integers(1, 3600),
    subsequent_increment=st.integers(1, 3600),
    minimum_duration=st.integers(0, 3600),
)


@given(st.lists(rates, min_size=1, max_size=20, unique_by=lambda rate: rate.prefix))
def test_property_dump_then_parse_round_trips(deck_rates: list[Rate]) -> None:
    deck = RateDeck(INFO, deck_rates)
    again = parse_deck_csv(dump_deck_csv(deck), INFO)
    assert again.rates == deck.rates
    assert dump_deck_csv(again) == dump_deck_csv(deck)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", (1, None, "empty file")),
        ("\n  \n", (1, None, "empty file")),
        ("44,UK,0.01\n", (1, None, "missing header")),
        (HEADER + "\n", (1, None, "no rates after header")),
        ("prefix,destination,rate,colour\n44,UK,0.01,red\n", (1, "colour", "unknown column")),
        ("prefix,destination\n44,UK\n", (1, "rate", "missing required column 'rate'")),
        ("prefix,rate,rate,destination\n44,1,1,UK\n", (1, "rate", "appears twice")),
    ],
)
def test_given_a_bad_file_or_header_when_parsed_then_the_problem_is_named(
    text: str, expected: tuple[int, str | None, str]
) -> None:
    (problem,) = _problems(text)
    line, field, message = expected
    assert problem[:2] == (line, field)
    assert message in problem[2]


@pytest.mark.parametrize(
    ("row", "field", "message"),
    [
        ("+44,UK,0.01,0,60,60,0", "prefix", "bad prefix '+44'"),
        ("4 4,UK,0.01,0,60,60,0", "prefix", "bad prefix"),
        (",UK,0.01,0,60,60,0", "prefix", "bad prefix ''"),
        ("44a,UK,0.01,0,60,60,0", "prefix", "bad prefix"),
        ("44,UK,-0.01,0,60,60,0", "rate", "negative price"),
        ("44,UK,0.01,-1,60,60,0", "connect_fee", "negative price"),
        ("44,UK,0.0100001,0,60,60,0", "rate", "more than 6 decimals"),
        ("44,UK,0.01,0.0000001,60,60,0", "connect_fee", "more than 6 decimals"),
        ("44,UK,abc,0,60,60,0", "rate", "not a price"),
        ("44,UK,,0,60,60,0", "rate", "not a price"),
        ("44,UK,NaN,0,60,60,0", "rate", "not a price"),
        ("44,UK,0.01,0,0,60,0", "initial_increment", "greater than zero"),
        ("44,UK,0.01,0,60,0,0", "subsequent_increment", "greater than zero"),
        ("44,UK,0.01,0,1.5,60,0", "initial_increment", "not a whole number"),
        ("44,UK,0.01,0,60,-6,0", "subsequent_increment", "not a whole number"),
        ("44,UK,0.01,0,60,60,x", "minimum_duration", "not a whole number"),
        ("44,UK,0.01,0,60,60", None, "wrong column count: 6 instead of 7"),
        ("44,UK,0.01,0,60,60,0,9", None, "wrong column count: 8 instead of 7"),
    ],
)
def test_given_a_bad_line_when_parsed_then_its_number_field_and_reason_are_reported(
    row: str, field: str | None, message: str
) -> None:
    text = f"{HEADER}\n1,NANP,0.01,0,60,60,0\n{row}\n33,France,0.02,0,60,60,0\n"
    problems = _problems(text)
    assert [p[:2] for p in problems] == [(3, field)]
    assert message in problems[0][2]


def test_given_a_duplicate_prefix_when_parsed_then_the_first_line_is_named() -> None:
    text = f"{HEADER}\n44,UK,0.01,0,60,60,0\n\n33,FR,0.01,0,60,60,0\n44,UK again,0.02,0,60,60,0\n"
    assert _problems(text) == [(5, "prefix", "duplicate prefix '44' (first on line 2)")]


def test_given_many_bad_lines_when_parsed_then_every_one_is_listed_and_nothing_returned() -> None:
    text = (
        f"{HEADER}\n"
        "44,UK,0.01,0,60,60,0\n"  # 2 good
        "+33,France,-1,0,0,60,0\n"  # 3 three problems
        "49,Germany,0.01\n"  # 4 wrong column count
        "44,UK dup,0.01,0,60,60,0\n"  # 5 duplicate of line 2
        "34,Spain,0.0000001,0,1,1,0\n"  # 6 too many decimals
        "1,NANP,0.009,0,6,6,0\n"  # 7 good
    )
    with pytest.raises(DeckImportError) as caught:
        parse_deck_csv(text, INFO)
    error = caught.value
    assert error.lines == [3, 4, 5, 6]
    assert [(p.line, p.field) for p in error.problems] == [
        (3, "prefix"),
        (3, "rate"),
        (3, "initial_increment"),
        (4, None),
        (5, "prefix"),
        (6, "rate"),
    ]
    assert "4 bad line(s)" in str(error)
    assert "line 5, prefix: duplicate prefix '44' (first on line 2)" in str(error)
    assert isinstance(error, DeckError)


def test_given_broken_csv_quoting_when_parsed_then_a_line_is_named() -> None:
    problems = _problems(f'{HEADER}\n44,"UK"x,0.01,0,60,60,0\n')
    assert problems[0][0] == 2
    assert "bad CSV" in problems[0][2]
