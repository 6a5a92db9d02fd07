"""RateDeck: lookup by longest prefix, band (account time zone) and effective window;
the deck rules with the problem named; the band text forms."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tariffs.bands import (
    EVERY_DAY,
    WEEKDAYS,
    WEEKEND,
    BandCalendar,
    TimeBand,
    format_clock,
    format_days,
    parse_clock,
    parse_days,
)
from tariffs.deck import DeckInfo, Rate, RateInterval
from tariffs.deck_rules import deck_problems
from tariffs.ratedeck import (
    DeckError,
    DuplicateRateError,
    InvalidRateError,
    OverlappingRateError,
    RateDeck,
)

D = Decimal
PEAK = TimeBand("peak", WEEKDAYS, 8 * 60, 18 * 60)
WEEKEND_ALL = TimeBand("weekend", WEEKEND)
INFO = DeckInfo("retail", "EUR", bands=(PEAK, WEEKEND_ALL))
NEW_YEAR = datetime(2027, 1, 1, tzinfo=UTC)

FR_PEAK = Rate("33", "France peak", D("0.02"), band="peak")
FR_ANY = Rate("33", "France", D("0.01"))
FR_WEEKEND = Rate("33", "France weekend", D("0.005"), band="weekend")
UK_OLD = Rate("447", "UK mobile", D("0.0235"), effective_to=NEW_YEAR)
UK_NEW = Rate("447", "UK mobile", D("0.0195"), effective_from=NEW_YEAR)
UK_SOON = Rate("4479", "UK mobile new range", D("0.05"), effective_from=NEW_YEAR)
DE_PEAK_ONLY = Rate("4930", "Berlin peak", D("0.03"), band="peak")
DE = Rate("49", "Germany", D("0.0098"))
DECK = RateDeck(INFO, [FR_PEAK, FR_ANY, FR_WEEKEND, UK_OLD, UK_NEW, UK_SOON, DE_PEAK_ONLY, DE])


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("number", "at", "tz", "expected"),
    [
        # 2026-11-23 is a Monday; Paris is UTC+1 in November, UTC+2 in July
        ("33123", "2026-11-23T09:00", "UTC", FR_PEAK),
        ("33123", "2026-11-23T07:59", "UTC", FR_ANY),  # before the peak: the any-time rate
        ("33123", "2026-11-23T18:00", "UTC", FR_ANY),  # the peak ends at 18:00, exclusive
        ("33123", "2026-11-23T17:59:59", "UTC", FR_PEAK),
        ("33123", "2026-11-28T12:00", "UTC", FR_WEEKEND),  # Saturday
        ("33123", "2026-11-23T07:30", "Europe/Paris", FR_PEAK),  # 08:30 in Paris
        ("33123", "2026-11-23T17:30", "Europe/Paris", FR_ANY),  # 18:30 in Paris
        ("33123", "2026-07-06T06:30", "Europe/Paris", FR_PEAK),  # 08:30 summer time
        ("33123", "2026-11-23T12:00", "America/New_York", FR_ANY),  # 07:00 EST: before peak
        ("33123", "2026-11-22T23:30", "Asia/Tokyo", FR_PEAK),  # Sunday UTC = Monday 08:30 Tokyo
        ("33123", "2026-11-23T03:00", "America/New_York", FR_WEEKEND),  # Sunday 22:00 local
        # effective windows: from inclusive, to exclusive
        ("447700", "2026-12-31T23:59:59", "UTC", UK_OLD),
        ("447700", "2027-01-01T00:00", "UTC", UK_NEW),
        # a prefix scheduled for later falls back to the next shorter one until then
        ("447900", "2026-12-31T23:59:59", "UTC", UK_OLD),
        ("447900", "2027-01-01T00:00", "UTC", UK_SOON),
        # a prefix with a peak rate only falls back outside the peak
        ("4930555", "2026-11-23T09:00", "UTC", DE_PEAK_ONLY),
        ("4930555", "2026-11-23T20:00", "UTC", DE),
        ("+4930555", "2026-11-28T09:00", "UTC", DE),
        ("99", "2026-11-23T09:00", "UTC", None),
        ("33abc", "2026-11-23T09:00", "UTC", None),
    ],
)
def test_given_a_call_start_and_zone_when_matched_then_the_rate_in_force(
    number: str, at: str, tz: str, expected: Rate | None
) -> None:
    assert DECK.match(number, utc(at), tz) is expected


def test_given_an_offset_time_when_matched_then_the_instant_counts() -> None:
    paris_winter = timezone(timedelta(hours=1))
    at = datetime(2026, 11, 23, 8, 30, tzinfo=paris_winter)  # 07:30 UTC
    assert DECK.match("33", at) is FR_ANY  # bands read in UTC (the default zone)
    assert DECK.match("33", at, "Europe/Paris") is FR_PEAK


def test_given_no_time_when_matched_then_now_is_used() -> None:
    now = datetime.now(UTC)
    expected = DECK.match("447700", now)
    assert DECK.match("447700") is expected
    assert expected is (UK_OLD if now < NEW_YEAR else UK_NEW)


def test_given_a_deck_without_bands_or_windows_when_matched_then_time_does_not_matter() -> None:
    deck = RateDeck(DeckInfo("plain"), [DE, Rate("4930", "Berlin", D("0.02"))])
    berlin = deck.match("4930555")
    assert berlin is not None and berlin.destination == "Berlin"
    assert deck.match("4930555", utc("1999-01-01T00:00"), "Nowhere/Land") is berlin
    assert deck.get("49") is DE


def test_given_a_naive_time_or_unknown_zone_when_matched_then_refused() -> None:
    with pytest.raises(DeckError, match="naive"):
        DECK.match("33", datetime(2026, 11, 23, 9))
    with pytest.raises(ValueError, match="Mars/Olympus"):
        DECK.match("33", utc("2026-11-23T09:00"), "Mars/Olympus")


def test_given_a_prefix_with_several_rates_then_rates_of_lists_them_in_deck_order() -> None:
    assert DECK.rates_of("33") == (FR_PEAK, FR_ANY, FR_WEEKEND)
    assert DECK.rates_of("49") == (DE,)
    assert DECK.rates_of("1") == ()
    assert DECK.get("33") is None  # not one rate for all times
    assert len(DECK) == 8


# --- the deck rules -----------------------------------------------------------------------


def _raises(error: type[DeckError], match: str, rates: list[Rate], info: DeckInfo = INFO) -> None:
    with pytest.raises(error, match=match):
        RateDeck(info, rates)


def test_given_overlapping_windows_for_one_prefix_and_band_then_refused() -> None:
    early = Rate("44", "UK", D("0.01"), effective_to=NEW_YEAR + timedelta(days=1))
    late = Rate("44", "UK", D("0.02"), effective_from=NEW_YEAR)
    _raises(OverlappingRateError, "'44' overlaps rate 1", [early, late])
    _raises(OverlappingRateError, "'44' overlaps rate 1", [late, Rate("44", "UK", D("0.01"))])
    # adjacent windows, and the same window in two bands, are fine
    RateDeck(INFO, [UK_OLD, UK_NEW, FR_PEAK, FR_ANY])


def test_given_the_same_prefix_band_and_window_twice_then_duplicate() -> None:
    _raises(DuplicateRateError, "duplicate prefix '33'", [FR_ANY, FR_ANY])
    _raises(DuplicateRateError, "duplicate prefix '33'", [FR_PEAK, FR_ANY, FR_PEAK])
    _raises(DuplicateRateError, "'447'", [UK_NEW, UK_NEW])


@pytest.mark.parametrize(
    ("rate", "match"),
    [
        (Rate("1", "x", D("-0.01")), "rate must not be negative"),
        (Rate("1", "x", D("0.01"), D("-1")), "connect_fee must not be negative"),
        (Rate("1", "x", D("0.01"), min_cost=D("-0.5")), "min_cost must not be negative"),
        (Rate("1", "x", D("0.01"), max_cost=D("-0.5")), "max_cost must not be negative"),
        (Rate("1", "x", D("0.01"), min_cost=D("2"), max_cost=D("1")), "below min_cost"),
        (Rate("1", "x", D("0.01"), D("0.5"), max_cost=D("0.4")), "below the connect_fee"),
        (Rate("1", "x", D("0.01"), max_cost=D("1.005")), "more decimals than the deck's 2"),
        (Rate("1", "x", D("0.01"), band="Peak"), "bad band name 'Peak'"),
        (Rate("1", "x", D("0.01"), band="night"), "unknown band 'night'"),
        (Rate.from_intervals("1", "x", [RateInterval(5, D("0.1"), 1)]), "must start at 0"),
        (
            Rate.from_intervals(
                "1", "x", [RateInterval(0, D("0.1"), 60), RateInterval(0, D("0.2"), 6)]
            ),
            "starts must increase",
        ),
        (Rate.from_intervals("1", "x", [RateInterval(0, D("0.1"), 0)]), "increment must not"),
        (
            Rate("1", "x", D("0.09"), intervals=(RateInterval(0, D("0.1"), 60),)),
            "disagree with the intervals",
        ),
        (
            Rate("1", "x", D("0.1"), effective_from=NEW_YEAR, effective_to=NEW_YEAR),
            "not after effective_from",
        ),
        (Rate("1", "x", D("0.1"), effective_from=datetime(2027, 1, 1)), "aware datetime"),
        (Rate("+1", "x", D("0.1")), "ASCII digits"),
    ],
)
def test_given_a_bad_rate_when_building_a_deck_then_its_prefix_and_problem_are_named(
    rate: Rate, match: str
) -> None:
    info = DeckInfo("cents", "EUR", decimals=2, bands=(PEAK,))
    with pytest.raises(InvalidRateError, match=match) as caught:
        RateDeck(info, [DE, rate])
    assert caught.value.prefix == rate.prefix
    assert caught.value.code == "INVALID_RATE"


@pytest.mark.parametrize(
    ("info", "match"),
    [
        (DeckInfo("d", "XYZ"), "unknown currency 'XYZ'"),
        (DeckInfo("d", "usd"), "unknown currency 'usd'"),
        (DeckInfo("d", decimals=7), "decimals must be 0..6"),
        (DeckInfo(" "), "name must not be empty"),
        (DeckInfo("d", bands=(TimeBand("Peak!", WEEKDAYS),)), "bad band name 'Peak!'"),
        (DeckInfo("d", bands=(TimeBand("late", WEEKDAYS, 1200, 1200),)), "from < to"),
        (DeckInfo("d", bands=(TimeBand("late", (7,)),)), "weekdays"),
        (
            DeckInfo("d", bands=(PEAK, TimeBand("lunch", (2,), 12 * 60, 13 * 60))),
            "band 'lunch' overlaps band 'peak' \\(mon-fri 08:00-18:00\\) on row 1",
        ),
    ],
)
def test_given_bad_deck_rules_when_building_a_deck_then_deck_error(
    info: DeckInfo, match: str
) -> None:
    with pytest.raises(DeckError, match=match) as caught:
        RateDeck(info, [DE])
    assert caught.value.code == "INVALID_DECK"


def test_given_many_problems_then_deck_problems_lists_each_with_its_rate() -> None:
    rates = [FR_ANY, Rate("1", "x", D("-1"), band="night"), FR_ANY]
    problems = deck_problems(INFO, rates, lambda i: f"line {i + 10}")
    assert [(p.index, p.field, p.code) for p in problems] == [
        (1, "rate", "INVALID_RATE"),
        (1, "band", "INVALID_RATE"),
        (2, "prefix", "DUPLICATE_PREFIX"),
    ]
    assert problems[2].message == "duplicate prefix '33' (first on line 10)"


# --- bands --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "days"),
    [
        ("mon-fri", WEEKDAYS),
        ("sat-sun", WEEKEND),
        ("SAT;sun", WEEKEND),
        ("fri-mon", (0, 4, 5, 6)),  # a range may wrap
        ("mon;wed;fri", (0, 2, 4)),
        ("all", EVERY_DAY),
        ("sun", (6,)),
    ],
)
def test_given_day_texts_when_parsed_then_weekday_numbers(text: str, days: tuple[int]) -> None:
    assert parse_days(text) == days


@pytest.mark.parametrize("text", ["", "monday", "mon-", "mon,tue", "mon-xyz", "1-5"])
def test_given_bad_day_texts_when_parsed_then_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="bad days"):
        parse_days(text)


@given(st.sets(st.integers(0, 6), min_size=1))
def test_property_days_format_then_parse_round_trips(days: set[int]) -> None:
    assert parse_days(format_days(sorted(days))) == tuple(sorted(days))


@pytest.mark.parametrize(
    ("text", "minutes"), [("00:00", 0), ("08:30", 510), ("23:59", 1439), ("24:00", 1440)]
)
def test_given_clock_texts_when_parsed_then_minutes(text: str, minutes: int) -> None:
    assert parse_clock(text) == minutes
    assert format_clock(minutes) == text


@pytest.mark.parametrize("text", ["8:00", "24:01", "12:60", "noon", "12.00"])
def test_given_bad_clock_texts_when_parsed_then_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="bad time"):
        parse_clock(text)


def test_given_a_calendar_then_each_minute_has_at_most_one_band() -> None:
    calendar = BandCalendar((PEAK, WEEKEND_ALL, TimeBand("night", WEEKDAYS, 0, 6 * 60)))
    assert calendar.names == ("night", "peak", "weekend")
    assert calendar.band_at(utc("2026-11-23T05:59")) == "night"
    assert calendar.band_at(utc("2026-11-23T06:00")) == ""
    assert calendar.band_at(utc("2026-11-27T17:59")) == "peak"  # Friday
    assert calendar.band_at(utc("2026-11-29T23:59")) == "weekend"  # Sunday
