"""CSV rate decks: the example deck, defaults, round-trips and every kind of bad line."""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tariffs.bands import WEEKDAYS, WEEKEND, TimeBand
from tariffs.csv_deck import ALL_COLUMNS, COLUMNS, DeckImportError, dump_deck_csv, parse_deck_csv
from tariffs.deck import DeckInfo, Rate, RateInterval, Rounding
from tariffs.ratedeck import DeckError, RateDeck

INFO = DeckInfo("retail", "EUR", Rounding.UP, 6)
NEW_COLUMNS = ",".join(ALL_COLUMNS)
HEADER = ",".join(COLUMNS)
EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "decks" / "example.csv"


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _problems(text: str) -> list[tuple[int, str | None, str]]:
    with pytest.raises(DeckImportError) as caught:
        parse_deck_csv(text, INFO)
    assert caught.value.code == "DECK_IMPORT"
    return [(p.line, p.field, p.message) for p in caught.value.problems]


def test_given_the_example_deck_when_parsed_then_it_matches_real_numbers() -> None:
    deck = parse_deck_csv(EXAMPLE.read_text(encoding="utf-8"), INFO)
    monday_9h, saturday = _utc("2026-11-23T09:00"), _utc("2026-11-28T09:00")
    mobile = deck.match("+447911123456", monday_9h)
    assert mobile is not None
    assert (mobile.destination, mobile.initial_increment, mobile.subsequent_increment) == (
        "United Kingdom - mobile",
        30,
        6,
    )
    assert mobile.rate == Decimal("0.0235")
    new_price = deck.match("447911123456", _utc("2027-01-01T00:00"))
    assert new_price is not None and new_price.rate == Decimal("0.0195")  # scheduled change
    spain = deck.match("34911234567", monday_9h)
    assert spain is not None
    assert (spain.initial_increment, spain.subsequent_increment) == (1, 1)
    assert {(r.initial_increment, r.subsequent_increment) for r in deck.rates} >= {
        (60, 60),
        (30, 6),
        (1, 1),
    }
    france = [deck.match("33142", at, "Europe/Paris") for at in (monday_9h, saturday)]
    assert [r.rate for r in france if r] == [Decimal("0.011"), Decimal("0.008")]  # peak/not
    germany = deck.match("4930", saturday)
    assert germany is not None and germany.band == "weekend"
    premium = deck.match("4487123", monday_9h)
    assert premium is not None and len(premium.intervals) == 2
    assert [b.name for b in deck.info.bands] == ["peak", "offpeak", "offpeak", "weekend"]


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


# --- bands, intervals, cost bounds, effective windows -----------------------------------------

BANDED = (
    "[bands]\n"
    "band,days,from,to\n"
    "peak,mon-fri,08:00,18:00\n"
    "weekend,sat;sun,00:00,24:00\n"
    "[rates],,\n"  # a spreadsheet pads the section row with empty cells
    "prefix,destination,rate,band,effective_from,effective_to,min_cost,max_cost,intervals\n"
    "33,France peak,0.02,peak,,,,,\n"
    "33,France,0.01,,,,,,\n"
    "447,UK mobile,0.0235,,,2027-01-01,0.05,,\n"
    "447,UK mobile,,,2027-01-01T01:00:00+01:00,,,2.5,0:0.60:60;60:0.30:6\n"
)


def test_given_bands_and_new_columns_when_parsed_then_every_field_is_read() -> None:
    deck = parse_deck_csv(BANDED, INFO)
    assert deck.info.bands == (
        TimeBand("peak", WEEKDAYS, 480, 1080),
        TimeBand("weekend", WEEKEND, 0, 1440),
    )
    new_year = _utc("2027-01-01T00:00")  # 01:00+01:00 is midnight UTC; a date alone is UTC
    assert deck.rates == (
        Rate("33", "France peak", Decimal("0.02"), band="peak"),
        Rate("33", "France", Decimal("0.01")),
        Rate("447", "UK mobile", Decimal("0.0235"), min_cost=Decimal("0.05"),
             effective_to=new_year),
        Rate.from_intervals(
            "447", "UK mobile",
            [RateInterval(0, Decimal("0.60"), 60), RateInterval(60, Decimal("0.30"), 6)],
            max_cost=Decimal("2.5"), effective_from=new_year,
        ),
    )  # fmt: skip
    later = deck.match("447700", new_year)
    assert later is not None and later.rate == Decimal("0.60")


def test_given_a_naive_date_time_when_parsed_then_it_is_utc() -> None:
    deck = parse_deck_csv(
        "prefix,destination,rate,effective_from\n44,UK,0.01,2027-03-01 08:30\n", INFO
    )
    assert deck.rates[0].effective_from == _utc("2027-03-01T08:30")


def test_given_an_interval_rate_with_matching_classic_cells_when_parsed_then_accepted() -> None:
    text = f"{NEW_COLUMNS}\n44,UK,0.6,0,60,6,0,0:0.6:60;60:0.3:6,,,,,\n"
    assert parse_deck_csv(text, INFO).rates[0].intervals[1].increment == 6


def test_given_a_banded_deck_when_dumped_then_the_text_is_canonical_and_reads_back() -> None:
    deck = parse_deck_csv(BANDED, INFO)
    text = dump_deck_csv(deck)
    assert text.splitlines()[:7] == [
        "[bands]",
        "band,days,from,to",
        "peak,mon-fri,08:00,18:00",
        "weekend,sat-sun,00:00,24:00",
        "[rates]",
        NEW_COLUMNS,
        "33,France peak,0.02,0,60,60,0,,,,peak,,",
    ]
    assert "447,UK mobile,,0,,,0,0:0.60:60;60:0.30:6,,2.5,,2027-01-01T00:00:00Z," in text
    again = parse_deck_csv(text, INFO)
    assert (again.info, again.rates) == (deck.info, deck.rates)
    assert dump_deck_csv(again) == text


def test_given_a_classic_deck_when_dumped_then_only_the_classic_columns_are_written() -> None:
    deck = RateDeck(INFO, [Rate("44", "UK", Decimal("0.01"))])
    assert dump_deck_csv(deck) == f"{HEADER}\n44,UK,0.01,0,60,60,0\n"


def test_given_an_unknown_currency_when_parsed_then_deck_error_before_reading() -> None:
    with pytest.raises(DeckError, match="unknown currency 'EUX'"):
        parse_deck_csv(f"{HEADER}\n44,UK,0.01,0,60,60,0\n", DeckInfo("d", "EUX"))


@pytest.mark.parametrize(
    ("cells", "field", "message"),
    [
        ("0:0.6:60;60:0.3", "intervals", "bad interval '60:0.3': start:rate:increment"),
        ("0:0.6:60;x:0.3:6", "intervals", "not a whole number of seconds: 'x'"),
        ("0:-0.6:60", "intervals", "negative price: '-0.6'"),
        ("0:0.6:0", "intervals", "must be greater than zero: '0'"),
        ("5:0.6:60", "intervals", "interval 1: the first interval must start at 0: 5"),
        ("0:0.6:60;0:0.3:6", "intervals", "interval 2: starts must increase: 0 <= 0"),
    ],
)
def test_given_bad_intervals_when_parsed_then_the_line_and_reason_are_reported(
    cells: str, field: str, message: str
) -> None:
    text = f"prefix,destination,rate,intervals\n1,NANP,0.01,\n44,UK,,{cells}\n"
    assert _problems(text) == [(3, field, message)]


@pytest.mark.parametrize(
    ("row", "field", "message"),
    [
        ("44,UK,0.01,-0.2,,,,", "min_cost", "negative price: '-0.2'"),
        ("44,UK,0.01,,-1,,,", "max_cost", "negative price: '-1'"),
        ("44,UK,0.01,0.5,0.4,,,", "max_cost", "max_cost 0.4 is below min_cost"),
        ("44,UK,0.01,0.0000001,,,,", "min_cost", "more than 6 decimals"),
        ("44,UK,0.01,,,night,,", "band", "unknown band 'night'"),
        ("44,UK,0.01,,,Peak,,", "band", "bad band name 'Peak'"),
        ("44,UK,0.01,,,,2027-13-01,", "effective_from", "not an ISO 8601 date"),
        ("44,UK,0.01,,,,2027-02-01,2027-01-01", "effective_to", "is not after effective_from"),
        ("44,UK,0.6,,,,,,", None, "wrong column count: 9 instead of 8"),
    ],
)
def test_given_a_bad_new_field_when_parsed_then_its_line_field_and_reason_are_reported(
    row: str, field: str | None, message: str
) -> None:
    header = "prefix,destination,rate,min_cost,max_cost,band,effective_from,effective_to"
    problems = _problems(f"{header}\n1,NANP,0.01,,,,,\n{row}\n")
    assert [p[:2] for p in problems] == [(3, field)]
    assert message in problems[0][2]


def test_given_overlapping_windows_when_parsed_then_the_later_line_names_the_first() -> None:
    text = (
        "prefix,destination,rate,band,effective_from,effective_to\n"
        "44,UK,0.01,,,2027-02-01\n"  # 2: until February
        "33,FR,0.01,,,\n"  # 3
        "44,UK,0.02,,2027-01-01,\n"  # 4: from January: overlaps line 2
        "44,UK,0.03,,,2027-02-01\n"  # 5: the same window as line 2
    )
    assert _problems(text) == [
        (4, "prefix", "effective window of prefix '44' overlaps line 2"),
        (5, "prefix", "duplicate prefix '44' (first on line 2)"),
    ]


@pytest.mark.parametrize(
    ("rows", "problem"),
    [
        ("peak,mon-fry,08:00,18:00", (3, "days", "bad days 'mon-fry'")),
        ("peak,mon-fri,8:00,18:00", (3, "from", "bad time '8:00'")),
        ("peak,mon-fri,08:00,24:30", (3, "to", "bad time '24:30'")),
        ("peak,mon-fri,18:00,08:00", (3, "band", "from < to")),
        ("Peak,mon-fri,08:00,18:00", (3, "band", "bad band name 'Peak'")),
        (
            "peak,mon-fri,08:00,18:00\nlunch,wed,12:00,13:00",
            (4, "band", "band 'lunch' overlaps band 'peak' (mon-fri 08:00-18:00) on line 3"),
        ),
        ("peak,mon-fri,08:00", (3, None, "wrong column count: 3 instead of 4")),
    ],
)
def test_given_a_bad_band_row_when_parsed_then_its_line_is_reported(
    rows: str, problem: tuple[int, str | None, str]
) -> None:
    text = f"[bands]\nband,days,from,to\n{rows}\n[rates]\n{HEADER}\n44,UK,0.01,0,60,60,0\n"
    (found,) = _problems(text)
    assert found[:2] == problem[:2]
    assert problem[2] in found[2]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"44,UK,0.01\n[rates]\n{HEADER}\n", (1, None, "a line before the first [section]")),
        (f"[prices]\n{HEADER}\n", (1, None, "unknown section [prices]")),
        (f"[rates]\n{HEADER}\n44,UK,0.01,0,60,60,0\n[rates]\n", (4, None, "appears twice")),
        ("[bands]\nband,days,from,to\npeak,all,08:00,09:00\n", (3, None, "no rates")),
        ("[bands]\nband,day,from,to\n[rates]\n", (2, "day", "unknown column 'day'")),
    ],
)
def test_given_bad_sections_when_parsed_then_the_line_is_named(
    text: str, expected: tuple[int, str | None, str]
) -> None:
    problems = _problems(text)
    assert problems[0][:2] == expected[:2]
    assert expected[2] in problems[0][2]


def test_given_bad_lines_in_both_sections_when_parsed_then_all_are_listed_by_line() -> None:
    text = (
        "[bands]\n"
        "band,days,from,to\n"
        "peak,mon-fri,08:00,18:00\n"  # 3 good
        "night,mon-fri,25:00,06:00\n"  # 4 bad time
        "[rates]\n"
        "prefix,destination,rate,band,intervals\n"
        "44,UK,0.01,peak,\n"  # 7 good
        "44,UK,0.02,peak,\n"  # 8 duplicate of 7
        "33,FR,,,0:0.1:60;30:0.05\n"  # 9 bad interval
        "34,ES,0.01,night,\n"  # 10 unknown band (its row was bad)
    )
    with pytest.raises(DeckImportError) as caught:
        parse_deck_csv(text, INFO)
    assert caught.value.lines == [4, 8, 9, 10]


times = st.none() | st.integers(0, 4 * 10**8).map(
    lambda seconds: datetime.fromtimestamp(1_700_000_000 + seconds, UTC)
)
bands = st.sampled_from(["", "peak", "weekend"])
plain_rates = st.builds(
    Rate,
    prefix=digits,
    destination=st.text(alphabet="abc ,\"'-é", max_size=12).map(str.strip),
    rate=prices,
    connect_fee=prices,
    initial_increment=st.integers(1, 3600),
    subsequent_increment=st.integers(1, 3600),
    minimum_duration=st.integers(0, 3600),
    min_cost=prices,
    band=bands,
)


@st.composite
def full_rates(draw: st.DrawFn) -> Rate:
    """A valid rate using any field: window, band, bounds, intervals or not."""
    rate = draw(plain_rates)
    start, end = draw(times), draw(times)
    if start is not None and end is not None:
        start, end = min(start, end), max(start, end)
        end = None if start == end else end
    extra: dict[str, Any] = {
        "max_cost": None if draw(st.booleans()) else rate.min_cost + rate.connect_fee + 1,
        "effective_from": start,
        "effective_to": end,
    }
    if draw(st.booleans()):
        later = draw(st.sets(st.integers(1, 600), max_size=2))
        intervals = [
            RateInterval(start, draw(prices), draw(st.integers(1, 120)))
            for start in [0, *sorted(later)]
        ]
        return Rate.from_intervals(
            rate.prefix, rate.destination, intervals, connect_fee=rate.connect_fee,
            minimum_duration=rate.minimum_duration, min_cost=rate.min_cost, band=rate.band,
            **extra,
        )  # fmt: skip
    return replace(rate, **extra)


@given(st.lists(full_rates(), min_size=1, max_size=12, unique_by=lambda rate: rate.prefix))
def test_property_a_deck_with_every_field_round_trips(deck_rates: list[Rate]) -> None:
    peak, weekend = TimeBand("peak", WEEKDAYS, 480, 1080), TimeBand("weekend", WEEKEND)
    info = replace(INFO, bands=(peak, weekend))
    deck = RateDeck(info, deck_rates)
    text = dump_deck_csv(deck)
    again = parse_deck_csv(text, INFO)
    assert (again.info, again.rates) == (deck.info, deck.rates)
    assert dump_deck_csv(again) == text
