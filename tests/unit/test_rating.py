"""The pure rating engine: hand-computed tables and hypothesis properties."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tariffs.deck import DeckInfo, Rate, Rounding
from tariffs.rating import (
    FREE_CALL_USAGE,
    Charge,
    RatingError,
    billable_seconds,
    call_cost,
    cost_of_first,
    max_usage,
    max_usage_micros,
    rate_call,
)

D = Decimal
UP6 = DeckInfo("retail", "EUR", Rounding.UP, 6)
R60 = Rate("44", "UK fixed", D("0.012"), initial_increment=60, subsequent_increment=60)
R30_6 = Rate("447", "UK mobile", D("0.0235"), initial_increment=30, subsequent_increment=6)
R1 = Rate("34", "Spain", D("0.06"), initial_increment=1, subsequent_increment=1)
RFEE = Rate("49", "Germany", D("0.012"), connect_fee=D("0.05"))
RMIN = Rate("4487", "UK premium", D("0.6"), D("0.1"), 1, 1, minimum_duration=60)
RMIN30_6 = Rate("336", "France", D("0.0235"), initial_increment=30, subsequent_increment=6,
                minimum_duration=40)  # fmt: skip


@pytest.mark.parametrize(
    ("rate", "duration", "billable", "cost"),
    [
        (R60, "0", 0, "0.000000"),  # unanswered: free
        (R60, "-5", 0, "0.000000"),  # negative duration: free
        (R60, "0.2", 60, "0.012000"),  # 60/60: 0.2 s -> 60 s; 0.012 * 60/60
        (R60, "60", 60, "0.012000"),  # exactly one block: 0.012 * 60/60
        (R60, "60.001", 120, "0.024000"),  # a started block counts: 0.012 * 120/60
        (R60, "125", 180, "0.036000"),  # 60 + ceil(65/60)*60 = 180; 0.012 * 3
        (R30_6, "1", 30, "0.011750"),  # 30/6: 1 s -> 30 s; 0.0235 * 30/60
        (R30_6, "30", 30, "0.011750"),  # 30 s -> 30 s; 0.0235 / 2
        (R30_6, "31", 36, "0.014100"),  # 30 + ceil(1/6)*6 = 36; 0.0235 * 36/60
        (R30_6, "36.5", 42, "0.016450"),  # ceil(36.5)=37 -> 30 + 2*6 = 42; 0.0235 * 42/60
        (R1, "3.504", 4, "0.004000"),  # 1/1: 3.504 s -> 4 s; 0.06 * 4/60
        (R1, "0.001", 1, "0.001000"),  # sub-second: 1 s; 0.06 / 60
        (R1, "59", 59, "0.059000"),  # 0.06 * 59/60
        (RMIN, "5", 60, "0.700000"),  # minimum 60 s at 1/1: 0.1 + 0.6 * 60/60
        (RMIN, "61", 61, "0.710000"),  # over the minimum: 0.1 + 0.6 * 61/60
        (RMIN, "0", 0, "0.000000"),  # unanswered: neither minimum nor connect fee
        (RMIN30_6, "10", 42, "0.016450"),  # max(10, 40)=40 -> 30 + ceil(10/6)*6 = 42
        (RFEE, "1", 60, "0.062000"),  # connect fee: 0.05 + 0.012 * 60/60
        (RFEE, "61", 120, "0.074000"),  # 0.05 + 0.012 * 120/60
    ],
)
def test_given_a_rate_and_duration_when_rating_then_the_hand_computed_cost(
    rate: Rate, duration: str, billable: int, cost: str
) -> None:
    assert billable_seconds(rate, D(duration)) == billable
    result = call_cost(UP6, rate, D(duration))
    assert result == D(cost)
    assert str(result) == cost  # quantized to the deck's 6 decimals


R_CENT = Rate("1", "NANP", D("0.01"), initial_increment=1, subsequent_increment=1)
R_HALF = Rate("2", "half", D("0.3"), initial_increment=1, subsequent_increment=1)
R_TINY = Rate("3", "tiny", D("0.24"), initial_increment=1, subsequent_increment=1)
R_WHOLE = Rate("4", "whole", D("1.5"))


@pytest.mark.parametrize(
    ("rounding", "decimals", "rate", "seconds", "cost"),
    [
        # 0.01 * 7/60 = 0.0011666...
        (Rounding.UP, 6, R_CENT, 7, "0.001167"),
        (Rounding.HALF_UP, 6, R_CENT, 7, "0.001167"),
        (Rounding.DOWN, 6, R_CENT, 7, "0.001166"),
        (Rounding.UP, 4, R_CENT, 7, "0.0012"),
        (Rounding.HALF_UP, 4, R_CENT, 7, "0.0012"),  # 0.00116.. -> .0012
        (Rounding.DOWN, 4, R_CENT, 7, "0.0011"),
        # 0.3 * 1/60 = 0.005 exactly: the half
        (Rounding.UP, 2, R_HALF, 1, "0.01"),
        (Rounding.HALF_UP, 2, R_HALF, 1, "0.01"),
        (Rounding.DOWN, 2, R_HALF, 1, "0.00"),
        # 0.24 * 1/60 = 0.004: below the half
        (Rounding.UP, 2, R_TINY, 1, "0.01"),
        (Rounding.HALF_UP, 2, R_TINY, 1, "0.00"),
        (Rounding.DOWN, 2, R_TINY, 1, "0.00"),
        # 1.5 * 60/60 = 1.5 with 0 decimals
        (Rounding.UP, 0, R_WHOLE, 60, "2"),
        (Rounding.HALF_UP, 0, R_WHOLE, 60, "2"),
        (Rounding.DOWN, 0, R_WHOLE, 60, "1"),
    ],
)
def test_given_a_rounding_mode_when_rating_then_it_is_applied_once_at_the_deck_decimals(
    rounding: Rounding, decimals: int, rate: Rate, seconds: int, cost: str
) -> None:
    info = DeckInfo("d", rounding=rounding, decimals=decimals)
    assert str(call_cost(info, rate, D(seconds))) == cost


@pytest.mark.parametrize(
    ("info", "rate", "credit", "limit", "expected"),
    [
        (UP6, R30_6, "1", None, 2550),  # 0.0235*2550/60=0.99875 <= 1; 2556 -> 1.0011 > 1
        (UP6, R30_6, "0.01175", None, 30),  # exactly the first 30 s block
        (UP6, R30_6, "0.011749", None, 0),  # not even the first block
        (UP6, R30_6, "0", None, 0),
        (UP6, R30_6, "-3", None, 0),
        (UP6, R30_6, "1", 600, 600),  # capped by the limit
        (UP6, R60, "0.05", None, 240),  # 0.012 * k <= 0.05 -> k = 4 blocks
        (UP6, RFEE, "0.1", None, 240),  # 0.05 + 0.012 * k <= 0.1 -> k = 4
        (UP6, RFEE, "0.049", None, 0),  # below the connect fee
        (UP6, RMIN, "0.69", None, 0),  # the 60 s minimum costs 0.7
        (UP6, RMIN, "0.7", None, 60),
        (UP6, RMIN, "1", None, 90),  # 0.1 + 0.01 * s <= 1 -> s = 90
        (UP6, RMIN30_6, "0.01645", None, 42),  # minimum 40 s -> first block is 42 s
        # HALF_UP 2 decimals, 0.01/min 1/1: round(s/60) cents <= 1 -> s < 90
        (DeckInfo("d", rounding=Rounding.HALF_UP, decimals=2), R_CENT, "0.01", None, 89),
        # DOWN 2 decimals, 0.01/min 1/1: floor(s/60) cents <= 1 -> s < 120
        (DeckInfo("d", rounding=Rounding.DOWN, decimals=2), R_CENT, "0.01", None, 119),
        # UP 2 decimals: ceil(s/60) cents <= 1 -> s <= 60; credit decimals beyond 2 ignored
        (DeckInfo("d", rounding=Rounding.UP, decimals=2), R_CENT, "0.019", None, 60),
    ],
)
def test_given_a_credit_when_computing_max_usage_then_the_hand_computed_seconds(
    info: DeckInfo, rate: Rate, credit: str, limit: int | None, expected: int
) -> None:
    assert max_usage(info, rate, D(credit), limit) == expected


def test_given_a_free_rate_when_computing_max_usage_then_the_limit_or_the_default_cap() -> None:
    free = Rate("1800", "toll free", D(0), initial_increment=1, subsequent_increment=1)
    assert max_usage(UP6, free, D(0)) == FREE_CALL_USAGE
    assert max_usage(UP6, free, D(0), limit=3600) == 3600
    with_fee = Rate("1800", "toll free", D(0), connect_fee=D("0.05"))
    assert max_usage(UP6, with_fee, D("0.01")) == 0
    assert max_usage(UP6, with_fee, D("0.05"), limit=120) == 120


def test_given_a_call_when_rated_then_the_charge_carries_deck_and_currency() -> None:
    charge = rate_call(UP6, R30_6, D("31"))
    assert charge == Charge(D("0.014100"), 36, R30_6, "retail", "EUR")
    assert rate_call(UP6, R30_6, D(0)).cost == D(0)
    assert cost_of_first(UP6, R30_6, 36) == D("0.0141")


@pytest.mark.parametrize("duration", [1.5, True, "3", D("NaN"), D("Infinity")])
def test_given_a_bad_duration_when_rating_then_rating_error(duration: object) -> None:
    with pytest.raises(RatingError):
        call_cost(UP6, R1, duration)  # type: ignore[arg-type]


def test_given_a_rate_with_7_decimals_when_rating_then_rating_error_names_it() -> None:
    bad = Rate("99", "bad", D("0.0000001"), initial_increment=1, subsequent_increment=1)
    with pytest.raises(RatingError, match=r"'99'.*more than 6 decimals"):
        call_cost(UP6, bad, D(1))


def test_given_a_zero_increment_when_rating_then_rating_error() -> None:
    bad = Rate("99", "bad", D("0.01"), initial_increment=0)
    with pytest.raises(RatingError, match="increments"):
        billable_seconds(bad, D(5))


def test_given_a_float_credit_when_computing_max_usage_then_rating_error() -> None:
    with pytest.raises(RatingError, match="credit"):
        max_usage(UP6, R1, 1.0)  # type: ignore[arg-type]
    with pytest.raises(RatingError, match="limit"):
        max_usage(UP6, R1, D(1), limit=-1)


# --- properties -------------------------------------------------------------------------

prices = st.integers(0, 10_000_000).map(lambda micros: D(micros).scaleb(-6))
positive_prices = st.integers(1, 10_000_000).map(lambda micros: D(micros).scaleb(-6))
rates = st.builds(
    Rate,
    prefix=st.just("1"),
    destination=st.just("x"),
    rate=prices,
    connect_fee=prices,
    initial_increment=st.integers(1, 120),
    subsequent_increment=st.integers(1, 120),
    minimum_duration=st.integers(0, 300),
)
infos = st.builds(
    DeckInfo, name=st.just("d"), rounding=st.sampled_from(Rounding), decimals=st.integers(0, 6)
)
durations = st.integers(-1000, 20_000_000).map(lambda ms: D(ms).scaleb(-3))
credits = st.integers(-1000, 100_000_000).map(lambda micros: D(micros).scaleb(-6))


@given(info=infos, rate=rates, first=durations, second=durations)
def test_property_cost_is_monotonic_in_duration(
    info: DeckInfo, rate: Rate, first: Decimal, second: Decimal
) -> None:
    shorter, longer = sorted((first, second))
    assert call_cost(info, rate, shorter) <= call_cost(info, rate, longer)


@given(info=infos, rate=rates, duration=durations, fee_units=st.integers(0, 10**6))
def test_property_an_answered_call_never_costs_less_than_the_connect_fee(
    info: DeckInfo, rate: Rate, duration: Decimal, fee_units: int
) -> None:
    fee = D(fee_units).scaleb(-info.decimals)  # representable at the deck's decimals
    rate = Rate(rate.prefix, rate.destination, rate.rate, fee, rate.initial_increment,
                rate.subsequent_increment, rate.minimum_duration)  # fmt: skip
    cost = call_cost(info, rate, duration)
    assert cost >= (fee if duration > 0 else 0)
    assert cost >= 0


@given(rate=rates, duration=durations)
def test_property_billable_seconds_respect_increments(rate: Rate, duration: Decimal) -> None:
    billable = billable_seconds(rate, duration)
    if duration <= 0:
        assert billable == 0
        return
    assert billable >= rate.initial_increment
    assert (billable - rate.initial_increment) % rate.subsequent_increment == 0
    assert billable >= duration
    assert billable >= rate.minimum_duration
    if billable > rate.initial_increment:  # the smallest such boundary
        assert billable - rate.subsequent_increment < max(duration, D(rate.minimum_duration))


@settings(max_examples=300)
@given(info=infos, rate=rates, credit=credits)
def test_property_max_usage_is_affordable_and_one_more_increment_is_not(
    info: DeckInfo, rate: Rate, credit: Decimal
) -> None:
    seconds = max_usage(info, rate, credit, limit=10**9)
    if seconds == 0:
        assert credit < 0 or call_cost(info, rate, D(1)) > credit
        return
    assert call_cost(info, rate, D(seconds)) <= credit
    if seconds == 10**9:  # free, or a fortune of credit
        return
    assert billable_seconds(rate, D(seconds)) == seconds  # at an increment boundary
    assert call_cost(info, rate, D(seconds + rate.subsequent_increment)) > credit
    assert call_cost(info, rate, D(seconds) + D("0.001")) > credit


@given(info=infos, rate=rates, credit=credits, limit=st.integers(0, FREE_CALL_USAGE))
def test_property_max_usage_limit_is_a_cap(
    info: DeckInfo, rate: Rate, credit: Decimal, limit: int
) -> None:
    assert max_usage(info, rate, credit, limit) == min(max_usage(info, rate, credit), limit)


@given(info=infos, rate=rates, seconds=st.integers(0, 100_000))
def test_property_cost_of_first_equals_call_cost_and_rate_call(
    info: DeckInfo, rate: Rate, seconds: int
) -> None:
    cost = cost_of_first(info, rate, seconds)
    assert cost == call_cost(info, rate, D(seconds))
    charge = rate_call(info, rate, D(seconds))
    assert (charge.cost, charge.billable_seconds) == (cost, billable_seconds(rate, D(seconds)))
    assert cost.as_tuple().exponent == -info.decimals


@settings(max_examples=500)
@given(
    info=infos,
    rate=rates,
    credit_micros=st.integers(-1000, 10**12),
    limit=st.integers(0, 4 * 3600),
)
def test_property_max_usage_micros_equals_max_usage_of_the_same_credit(
    info: DeckInfo, rate: Rate, credit_micros: int, limit: int
) -> None:
    # the integer short-cut (credit pays for the whole limit) and the Decimal search agree
    credit = D(credit_micros).scaleb(-6)
    assert max_usage_micros(info, rate, credit_micros, limit) == max_usage(
        info, rate, credit, limit
    )


@pytest.mark.parametrize(("minimum", "needed"), [(0, 36_100_000), (7200, 72_100_000)])
def test_given_credit_for_the_whole_limit_when_max_usage_micros_then_the_limit(
    minimum: int, needed: int
) -> None:
    rate = Rate("1", "x", D("0.60"), D("0.10"), 60, 60, minimum)  # 0.60/min, fee 0.10
    # one hour costs 36.10; with a two-hour minimum any call costs 72.10
    assert max_usage_micros(UP6, rate, needed, 3600) == 3600
    short = max_usage_micros(UP6, rate, needed - 1, 3600)
    assert short == (3540 if minimum == 0 else 0)
