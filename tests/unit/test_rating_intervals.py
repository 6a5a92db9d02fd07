"""The rating engine over interval rates, min/max cost: hand-computed tables and properties."""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal, localcontext

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tariffs.deck import DeckInfo, Rate, RateInterval, Rounding
from tariffs.rating import (
    FREE_CALL_USAGE,
    RatingError,
    billable_seconds,
    call_cost,
    max_usage,
    rate_call,
)

D = Decimal
RI = RateInterval
UP6 = DeckInfo("retail", "EUR", Rounding.UP, 6)
# "first 60 s at 0.60/min in one block, then 0.30/min per 6 s"
R60_6 = Rate.from_intervals("39", "Italy", [RI(0, D("0.60"), 60), RI(60, D("0.30"), 6)])
# the first interval's increment (60) overshoots the next start (30): as CGRateS, the first
# part is billed as 60 s and the second interval still starts at 30 s
ROVER = Rate.from_intervals("40", "Romania", [RI(0, D("0.60"), 60), RI(30, D("0.30"), 6)])
# 10 s free, then 1.20/min per second up to 70 s, then 0.60/min per minute
RFREE = Rate.from_intervals(
    "41", "Swiss", [RI(0, D(0), 10), RI(10, D("1.20"), 1), RI(70, D("0.60"), 60)]
)
# connect fee 0.05, 0.10/min per second, at least 0.20, at most 1.00
RCAP = Rate("86", "China", D("0.10"), D("0.05"), 1, 1, min_cost=D("0.20"), max_cost=D("1.00"))
# intervals with a connect fee and a minimum duration of 90 s
RMIXED = Rate.from_intervals(
    "42", "Czechia", [RI(0, D("0.12"), 30), RI(30, D("0.06"), 10)],
    connect_fee=D("0.02"), minimum_duration=90,
)  # fmt: skip


@pytest.mark.parametrize(
    ("rate", "duration", "billable", "cost"),
    [
        (R60_6, "0", 0, "0.000000"),  # unanswered: free
        (R60_6, "1", 60, "0.600000"),  # first block: 0.60 * 60/60
        (R60_6, "60", 60, "0.600000"),  # exactly the first interval
        (R60_6, "61", 66, "0.630000"),  # 0.60 + 0.30 * 6/60 = 0.60 + 0.03
        (R60_6, "125", 126, "0.930000"),  # 60 + ceil(65/6)*6 = 60 + 66; 0.60 + 0.30*66/60 = 0.93
        (ROVER, "10", 60, "0.600000"),  # part 10 s of [0,30) billed as one 60 s block
        (ROVER, "30", 60, "0.600000"),  # part 30 s -> 60 s
        (ROVER, "40", 72, "0.660000"),  # 60 + ceil(10/6)*6 = 72; 0.60 + 0.30*12/60 = 0.66
        (RFREE, "5", 10, "0.000000"),  # inside the free 10 s block
        (RFREE, "15", 15, "0.100000"),  # 10 free + 5 s at 1.20/min = 0.10
        (RFREE, "70", 70, "1.200000"),  # 10 free + 60 s at 1.20/min = 1.20
        (RFREE, "71", 130, "1.800000"),  # + one 60 s block at 0.60 = 1.80
        (RCAP, "0", 0, "0.000000"),  # unanswered: no minimum cost
        (RCAP, "1", 1, "0.200000"),  # 0.05 + 0.10/60 = 0.051667 -> min_cost 0.20
        (RCAP, "60", 60, "0.200000"),  # 0.05 + 0.10 = 0.15 -> min_cost 0.20
        (RCAP, "120", 120, "0.250000"),  # 0.05 + 0.20 = 0.25
        (RCAP, "570", 570, "1.000000"),  # 0.05 + 0.10*570/60 = 0.05 + 0.95 = 1.00
        (RCAP, "600", 600, "1.000000"),  # 0.05 + 1.00 = 1.05 -> max_cost 1.00
        (RCAP, "86400", 86400, "1.000000"),  # a day: still capped
    ],
)
def test_given_an_interval_rate_and_duration_when_rating_then_the_hand_computed_cost(
    rate: Rate, duration: str, billable: int, cost: str
) -> None:
    assert billable_seconds(rate, D(duration)) == billable
    result = call_cost(UP6, rate, D(duration))
    assert str(result) == cost


@pytest.mark.parametrize(
    ("duration", "billable", "cost"),
    [
        ("5", 90, "0.140000"),  # max(5, 90)=90 s: 0.12*30/60 + 0.06*60/60 + 0.02 = 0.14
        ("90", 90, "0.140000"),  # the minimum exactly
        ("95", 100, "0.150000"),  # 30 + ceil(65/10)*10 = 100 s: 0.06 + 0.06*70/60 + 0.02
        ("0", 0, "0.000000"),  # unanswered: neither the minimum nor the connect fee
    ],
)
def test_given_intervals_with_a_minimum_duration_when_rating_then_the_minimum_is_cut_too(
    duration: str, billable: int, cost: str
) -> None:
    assert billable_seconds(RMIXED, D(duration)) == billable
    assert str(call_cost(UP6, RMIXED, D(duration))) == cost


@pytest.mark.parametrize(
    ("rounding", "decimals", "cost"),
    [
        # RCAP for 121 s: 0.05 + 0.10*121/60 = 0.05 + 0.2016666.. = 0.2516666..
        (Rounding.UP, 2, "0.26"),
        (Rounding.HALF_UP, 2, "0.25"),
        (Rounding.DOWN, 2, "0.25"),
        (Rounding.UP, 4, "0.2517"),
        (Rounding.DOWN, 4, "0.2516"),
        (Rounding.HALF_UP, 0, "0"),
    ],
)
def test_given_min_and_max_cost_when_rounding_then_the_bounds_come_before_rounding(
    rounding: Rounding, decimals: int, cost: str
) -> None:
    info = DeckInfo("d", rounding=rounding, decimals=decimals)
    assert str(call_cost(info, RCAP, D(121))) == cost
    # the cap 1.00 and the minimum 0.20 are at the deck's decimals: never rounded past
    assert call_cost(info, RCAP, D(10_000)) == D("1.00").quantize(D(1).scaleb(-decimals))


@pytest.mark.parametrize(
    ("rate", "credit", "limit", "expected"),
    [
        (R60_6, "0.59", None, 0),  # not even the first 60 s block (0.60)
        (R60_6, "0.60", None, 60),  # the first block; 61 s would cost 0.63
        (R60_6, "0.63", None, 66),  # one 6 s increment more
        (R60_6, "1.00", None, 138),  # 0.60 + 0.03*k <= 1 -> k = 13 -> 60 + 78
        (ROVER, "0.60", None, 30),  # the whole first interval; 31 s adds 0.03
        (ROVER, "0.66", None, 42),  # 0.60 + 0.03*2 -> 30 + 12
        (RFREE, "0", None, 10),  # the free 10 s only
        (RFREE, "1.20", None, 70),  # 10 + 60 s at 0.02/s
        (RFREE, "1.79", None, 70),  # the next 60 s block costs 0.60
        (RFREE, "1.80", None, 130),
        (RCAP, "0.19", None, 0),  # the minimum cost is 0.20
        (RCAP, "0.20", None, 90),  # 0.05 + s/600 <= 0.20 -> s <= 90
        (RCAP, "0.99", None, 564),  # 0.05 + s/600 <= 0.99 -> s <= 564
        (RCAP, "1.00", None, FREE_CALL_USAGE),  # the cap is affordable: unlimited
        (RCAP, "1.00", 3600, 3600),  # ... up to the limit
        (RMIXED, "0.13", None, 0),  # the 90 s minimum costs 0.14
        (RMIXED, "0.14", None, 90),
        (RMIXED, "0.15", None, 100),  # 0.14 + 0.01 per 10 s
    ],
)
def test_given_interval_rates_and_a_credit_when_computing_max_usage_then_hand_computed(
    rate: Rate, credit: str, limit: int | None, expected: int
) -> None:
    assert max_usage(UP6, rate, D(credit), limit) == expected


def test_given_a_charge_of_an_interval_rate_then_it_carries_the_billable_seconds() -> None:
    charge = rate_call(UP6, R60_6, D("61.2"))
    assert (charge.cost, charge.billable_seconds) == (D("0.63"), 66)


@pytest.mark.parametrize(
    "intervals",
    [
        (RI(5, D("0.1"), 1),),  # not starting at 0
        (RI(0, D("0.1"), 1), RI(0, D("0.2"), 1)),  # not increasing
        (RI(0, D("0.1"), 0),),  # zero increment
        (RI(0, D("-0.1"), 1),),  # negative price
    ],
)
def test_given_malformed_intervals_when_rating_then_rating_error(
    intervals: tuple[RateInterval, ...],
) -> None:
    bad = Rate.from_intervals("9", "bad", intervals)
    with pytest.raises(RatingError, match="'9'"):
        call_cost(UP6, bad, D(10))


# --- properties ---------------------------------------------------------------------------


def _price(units: int, decimals: int = 6) -> Decimal:
    return D(units).scaleb(-decimals)


@st.composite
def interval_rates(draw: st.DrawFn, *, aligned: bool = False) -> tuple[DeckInfo, Rate]:
    """A deck's rules and a valid interval rate (bounds at the deck's decimals)."""
    info = DeckInfo(
        "d", rounding=draw(st.sampled_from(Rounding)), decimals=draw(st.integers(0, 6))
    )
    count = draw(st.integers(1, 4))
    intervals, start = [], 0
    for _ in range(count):
        increment = draw(st.integers(1, 90))
        intervals.append(RI(start, _price(draw(st.integers(0, 3_000_000))), increment))
        gap = draw(st.integers(1, 8)) * increment if aligned else draw(st.integers(1, 400))
        start += gap
    fee = _price(draw(st.integers(0, 10**6 // 10 ** (6 - info.decimals))), info.decimals)
    low = _price(draw(st.integers(0, 5 * 10**info.decimals)), info.decimals)
    cap = draw(st.none() | st.integers(0, 20 * 10**info.decimals))
    high = None if cap is None else max(_price(cap, info.decimals), low, fee)
    rate = Rate.from_intervals(
        "1", "x", intervals, connect_fee=fee, minimum_duration=draw(st.integers(0, 200)),
        min_cost=low, max_cost=high,
    )  # fmt: skip
    return info, rate


durations = st.integers(-5, 3_000).map(D) | st.integers(0, 3_000_000).map(lambda ms: D(ms) / 1000)
credits = st.integers(-1000, 30_000_000).map(lambda micros: D(micros).scaleb(-6))
_MODES = {Rounding.UP: ROUND_CEILING, Rounding.HALF_UP: ROUND_HALF_UP, Rounding.DOWN: ROUND_FLOOR}


def _reference_cost(info: DeckInfo, rate: Rate, duration: Decimal) -> Decimal:
    """An independent oracle: Decimal arithmetic at 60 digits, CGRateS' interval rule."""
    with localcontext() as ctx:
        ctx.prec = 60
        seconds = int(duration.to_integral_value(rounding=ROUND_CEILING))
        if seconds <= 0:
            return D(0).quantize(D(1).scaleb(-info.decimals))
        seconds = max(seconds, rate.minimum_duration)
        total = rate.connect_fee
        bounds = [i.start for i in rate.intervals[1:]] + [None]
        for interval, end in zip(rate.intervals, bounds, strict=True):
            if seconds <= interval.start:
                break
            part = (seconds if end is None else min(seconds, end)) - interval.start
            blocks = -(-part // interval.increment)
            total += interval.rate * blocks * interval.increment / 60
        total = max(total, rate.min_cost)
        if rate.max_cost is not None:
            total = min(total, rate.max_cost)
        return total.quantize(D(1).scaleb(-info.decimals), rounding=_MODES[info.rounding])


@settings(max_examples=300)
@given(deck=interval_rates(), duration=durations)
def test_property_cost_equals_an_independent_decimal_reference(
    deck: tuple[DeckInfo, Rate], duration: Decimal
) -> None:
    info, rate = deck
    assert call_cost(info, rate, duration) == _reference_cost(info, rate, duration)


@given(deck=interval_rates(), first=durations, second=durations)
def test_property_interval_cost_is_monotonic_in_duration(
    deck: tuple[DeckInfo, Rate], first: Decimal, second: Decimal
) -> None:
    info, rate = deck
    shorter, longer = sorted((first, second))
    assert call_cost(info, rate, shorter) <= call_cost(info, rate, longer)


@given(deck=interval_rates(), duration=durations)
def test_property_an_answered_call_costs_between_its_bounds(
    deck: tuple[DeckInfo, Rate], duration: Decimal
) -> None:
    info, rate = deck
    cost = call_cost(info, rate, duration)
    if duration <= 0:
        assert cost == 0
        return
    assert cost >= rate.min_cost
    assert cost >= rate.connect_fee  # the fee is at the deck's decimals here
    if rate.max_cost is not None:
        assert cost <= rate.max_cost
    assert cost.as_tuple().exponent == -info.decimals


@given(deck=interval_rates(aligned=True), duration=durations)
def test_property_aligned_intervals_bill_the_next_increment_boundary(
    deck: tuple[DeckInfo, Rate], duration: Decimal
) -> None:
    """When every interval is a whole number of its increments, the call is billed to the
    first boundary at or after max(duration, minimum_duration): never less, never an
    increment more."""
    _, rate = deck
    billable = billable_seconds(rate, duration)
    if duration <= 0:
        assert billable == 0
        return
    needed = max(duration, D(rate.minimum_duration))
    starts = [i.start for i in rate.intervals]
    boundaries = {0}
    for interval, end in zip(rate.intervals, [*starts[1:], billable + 1], strict=True):
        boundaries.update(range(interval.start, end + 1, interval.increment))
    assert billable in boundaries
    assert billable >= needed
    assert max(b for b in boundaries if b < billable) < needed


@settings(max_examples=300)
@given(deck=interval_rates(), credit=credits)
def test_property_interval_max_usage_is_affordable_and_one_second_more_is_not(
    deck: tuple[DeckInfo, Rate], credit: Decimal
) -> None:
    info, rate = deck
    seconds = max_usage(info, rate, credit, limit=10**7)
    if seconds == 0:
        assert credit < 0 or call_cost(info, rate, 1) > credit
        return
    assert call_cost(info, rate, seconds) <= credit
    if seconds == 10**7:  # unlimited: free after a point, or capped within the credit
        return
    assert call_cost(info, rate, seconds + 1) > credit


@given(deck=interval_rates(), credit=credits, limit=st.integers(0, FREE_CALL_USAGE))
def test_property_interval_max_usage_limit_is_a_cap(
    deck: tuple[DeckInfo, Rate], credit: Decimal, limit: int
) -> None:
    info, rate = deck
    assert max_usage(info, rate, credit, limit) == min(max_usage(info, rate, credit), limit)


@given(deck=interval_rates())
def test_property_a_capped_rate_is_unlimited_once_the_cap_is_affordable(
    deck: tuple[DeckInfo, Rate],
) -> None:
    info, rate = deck
    if rate.max_cost is None:
        return
    assert max_usage(info, rate, rate.max_cost, limit=7200) == 7200
