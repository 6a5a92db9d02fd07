"""Volume tiers (pure): hand-computed costs of both modes, periods, and properties."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tariffs.deck import DeckInfo, Rate, RateInterval, Rounding
from tariffs.rating import call_cost, max_usage
from tariffs.tiers import (
    InvalidTierPlan,
    PlanError,
    Tier,
    TierCounter,
    TierMode,
    TierPlan,
    Usage,
    discount_schedule,
    graduated_cost,
    period_bounds,
    period_bounds_us,
    period_of,
    positional_cost,
    positional_max_usage,
    tier_at,
    tiered_rate,
)

D = Decimal
INFO = DeckInfo("retail")  # rounding up to 6 decimals
US = Rate("1", "USA", D("0.10"))  # 60/60
MIN = 60


def plan(mode: str, counter: str = "minutes", *tiers: tuple[int, str]) -> TierPlan:
    given_tiers = tiers or ((100, "20"), (1000, "50"))
    return TierPlan(
        "volume",
        TierCounter(counter),
        TierMode(mode),
        tuple(Tier(threshold, D(discount)) for threshold, discount in given_tiers),
    )


# --- all units: the next call at the tier reached ---------------------------------------


@pytest.mark.parametrize(
    ("used_seconds", "seconds", "cost"),
    [
        (0, 90, "0.20"),  # 120 s billed at 0.10
        (100 * MIN - 1, 90, "0.20"),  # one second short of the tier: the whole call at 0.10
        (100 * MIN, 90, "0.16"),  # past 100 minutes: 0.08
        (1000 * MIN, 90, "0.10"),  # past 1000 minutes: 0.05
        (100 * MIN, 0, "0"),  # unanswered: free
    ],
)
def test_given_all_units_minutes_when_priced_then_whole_call_takes_the_reached_tier(
    used_seconds: int, seconds: int, cost: str
) -> None:
    volume = plan("all_units")
    usage = Usage(calls=7, seconds=used_seconds)
    assert graduated_cost(INFO, volume, usage, US, seconds) == D(cost)
    assert call_cost(INFO, tiered_rate(volume, usage, US), seconds) == D(cost)


def test_given_calls_counter_when_past_threshold_then_next_call_is_discounted() -> None:
    volume = plan("all_units", "calls", (3, "10"))
    assert tiered_rate(volume, Usage(calls=2, seconds=10**6), US).rate == D("0.10")
    assert tiered_rate(volume, Usage(calls=3), US).rate == D("0.09")
    # graduated on a calls counter: a call is one unit, same answer
    graduated = plan("graduated", "calls", (3, "10"))
    assert graduated_cost(INFO, graduated, Usage(calls=3), US, 60) == D("0.09")
    assert graduated_cost(INFO, graduated, Usage(calls=2), US, 60) == D("0.10")


def test_given_a_discount_when_applied_then_price_is_rounded_down_to_the_micro() -> None:
    volume = plan("all_units", "calls", (0, "33.33"))
    odd = Rate("1", "USA", D("0.012345"))
    # 12345 * 6667 / 10000 = 8230.4115 micro-units -> 8230
    assert tiered_rate(volume, Usage(), odd).rate == D("0.008230")


def test_given_interval_rate_and_fees_when_discounted_then_only_per_minute_prices_change() -> None:
    rate = Rate.from_intervals(
        "44",
        "UK",
        [RateInterval(0, D("0.10"), 60), RateInterval(60, D("0.05"), 6)],
        connect_fee=D("0.05"),
        min_cost=D("0.01"),
        max_cost=D("5"),
    )
    lower = tiered_rate(plan("all_units", "calls", (0, "20")), Usage(), rate)
    assert [(i.start, i.rate, i.increment) for i in lower.rate_intervals] == [
        (0, D("0.08"), 60),
        (60, D("0.04"), 6),
    ]
    assert (lower.rate, lower.connect_fee, lower.min_cost, lower.max_cost) == (
        D("0.08"),
        D("0.05"),
        D("0.01"),
        D("5"),
    )


# --- graduated: the call's seconds split at the thresholds ------------------------------


@pytest.mark.parametrize(
    ("used_seconds", "seconds", "tiers", "cost"),
    [
        # 99.5 min used, 90 s call billed 120 s: 30 s at 0.10 + 90 s at 0.08
        (5970, 90, ((100, "20"), (1000, "50")), "0.17"),
        # crossing two tiers: 30 s at 0.10 + 60 s at 0.08 + 30 s at 0.05
        (5970, 120, ((100, "20"), (101, "50")), "0.155"),
        # already past the first tier: all at 0.08
        (6000, 90, ((100, "20"), (1000, "50")), "0.16"),
        # the threshold exactly at the call's end: all at 0.10
        (5880, 120, ((100, "20"),), "0.20"),
        # 10 % from 0, 20 % from minute 1: a 60 s call ends just before the second tier
        (0, 60, ((0, "10"), (1, "20")), "0.09"),
        # ... and a 61 s call (billed 120) pays its second minute at 0.08
        (0, 61, ((0, "10"), (1, "20")), "0.17"),
    ],
)
def test_given_graduated_minutes_when_call_crosses_thresholds_then_seconds_are_split(
    used_seconds: int, seconds: int, tiers: tuple[tuple[int, str], ...], cost: str
) -> None:
    volume = plan("graduated", "minutes", *tiers)
    assert graduated_cost(INFO, volume, Usage(seconds=used_seconds), US, seconds) == D(cost)


def test_given_graduated_interval_rate_when_boundary_inside_an_interval_then_split_there() -> None:
    rate = Rate.from_intervals(
        "44", "UK", [RateInterval(0, D("0.10"), 60), RateInterval(60, D("0.05"), 6)]
    )
    volume = plan("graduated", "minutes", (100, "20"))
    # 90 s: billed 60 at 0.10, then 30 at 0.05; the tier starts 66 billed seconds in:
    # 60 * 0.10 + 6 * 0.05 + 24 * 0.04, per minute = 0.10 + 0.005 + 0.016
    usage = Usage(seconds=100 * MIN - 66)
    assert graduated_cost(INFO, volume, usage, rate, 90) == D("0.121")
    assert discount_schedule(volume, usage) == ((0, 0), (66, 2000))


def test_given_rounding_half_up_to_cents_when_graduated_then_rounded_once() -> None:
    cents = DeckInfo("cents", rounding=Rounding.HALF_UP, decimals=2)
    volume = plan("graduated", "minutes", (1, "50"))
    # 61 s at 1/1: 60 s at 0.10 + 1 s at 0.05 = 0.100833.. -> 0.10 (once, not per part)
    per_second = Rate("1", "USA", D("0.10"), initial_increment=1, subsequent_increment=1)
    assert graduated_cost(cents, volume, Usage(), per_second, 61) == D("0.10")


# --- validation and periods ------------------------------------------------------------


@pytest.mark.parametrize(
    ("tiers", "field"),
    [
        ((), "tiers"),
        (((10, "20"), (10, "30")), "tier 2"),  # thresholds must increase
        (((10, "20"), (20, "10")), "tier 2"),  # a higher tier must not cost more
        (((10, "120"),), "tier 1"),
        (((10, "-1"),), "tier 1"),
        (((10, "1.234"),), "tier 1"),
        (((-1, "10"),), "tier 1"),
    ],
)
def test_given_bad_tiers_when_plan_built_then_refused_naming_the_field(
    tiers: tuple[tuple[int, str], ...], field: str
) -> None:
    with pytest.raises(InvalidTierPlan) as caught:
        TierPlan(
            "p", TierCounter.MINUTES, TierMode.GRADUATED, tuple(Tier(t, D(d)) for t, d in tiers)
        )
    assert caught.value.field == field
    assert caught.value.code == "INVALID_TIER_PLAN"


def test_given_strings_when_plan_built_then_enums_are_coerced_and_bad_ones_refused() -> None:
    built = TierPlan("p", "minutes", "all_units", (Tier(0, D(1)),))  # type: ignore[arg-type]
    assert built.counter is TierCounter.MINUTES and built.mode is TierMode.ALL_UNITS
    with pytest.raises(InvalidTierPlan, match="counter"):
        TierPlan("p", "hours", "all_units", (Tier(0, D(1)),))  # type: ignore[arg-type]
    with pytest.raises(InvalidTierPlan, match="name"):
        TierPlan("a b", "calls", "all_units", (Tier(0, D(1)),))  # type: ignore[arg-type]


def test_given_times_near_midnight_when_period_taken_then_the_account_zone_decides() -> None:
    at = datetime(2026, 10, 31, 23, 30, tzinfo=UTC)
    assert period_of(at) == "2026-10"
    assert period_of(at, "Europe/Paris") == "2026-11"  # 00:30 local, CET
    assert period_of(at, "America/New_York") == "2026-10"
    start, end = period_bounds("2026-11", "Europe/Paris")
    assert (start, end) == (
        datetime(2026, 10, 31, 23, 0, tzinfo=UTC),
        datetime(2026, 11, 30, 23, 0, tzinfo=UTC),
    )
    assert period_bounds("2026-12")[1] == datetime(2027, 1, 1, tzinfo=UTC)
    assert period_bounds_us("1970-02") == (31 * 86_400 * 10**6, 59 * 86_400 * 10**6)
    with pytest.raises(PlanError):
        period_of(at, "Mars/Olympus")
    with pytest.raises(PlanError):
        period_bounds("2026-13")


def test_given_usage_when_tier_looked_up_then_threshold_is_inclusive() -> None:
    volume = plan("all_units")
    assert tier_at(volume, Usage(seconds=100 * MIN - 1)) is None
    assert tier_at(volume, Usage(seconds=100 * MIN)) == Tier(100, D(20))


# --- properties ------------------------------------------------------------------------

prices = st.integers(min_value=0, max_value=500_000).map(lambda m: Decimal(m).scaleb(-6))
increments = st.sampled_from([1, 6, 30, 60])


@st.composite
def rates(draw: st.DrawFn) -> Rate:
    first, later = draw(increments), draw(increments)
    if draw(st.booleans()):
        return Rate(
            "1",
            "USA",
            draw(prices),
            connect_fee=draw(prices),
            initial_increment=first,
            subsequent_increment=later,
            minimum_duration=draw(st.sampled_from([0, 0, 30, 90])),
            min_cost=draw(st.sampled_from([D(0), D("0.05")])),
            max_cost=draw(st.sampled_from([None, None, D("0.40")])),
        )
    split = draw(st.integers(min_value=1, max_value=120))
    return Rate.from_intervals(
        "1", "USA", [RateInterval(0, draw(prices), first), RateInterval(split, draw(prices), later)]
    )


@st.composite
def plans(draw: st.DrawFn) -> TierPlan:
    thresholds = sorted(draw(st.sets(st.integers(0, 300), min_size=1, max_size=4)))
    discounts = sorted(draw(st.lists(st.integers(0, 10_000), min_size=len(thresholds),
                                     max_size=len(thresholds))))
    return TierPlan(
        "p",
        draw(st.sampled_from(list(TierCounter))),
        draw(st.sampled_from(list(TierMode))),
        tuple(Tier(t, Decimal(d).scaleb(-2)) for t, d in zip(thresholds, discounts, strict=True)),
    )


infos = st.builds(
    DeckInfo, st.just("d"), rounding=st.sampled_from(list(Rounding)), decimals=st.integers(0, 6)
)
usages = st.builds(Usage, calls=st.integers(0, 400), seconds=st.integers(0, 400 * 60))
durations = st.integers(min_value=0, max_value=1_000)


@settings(max_examples=300, deadline=None)
@given(infos, rates(), plans(), usages, durations)
def test_property_a_tier_never_costs_more_than_the_deck(
    info: DeckInfo, rate: Rate, volume: TierPlan, usage: Usage, seconds: int
) -> None:
    assert graduated_cost(info, volume, usage, rate, seconds) <= call_cost(info, rate, seconds)


@settings(max_examples=300, deadline=None)
@given(infos, rates(), plans(), usages, durations, st.integers(1, 200))
def test_property_cost_is_monotonic_in_duration_and_falls_with_usage(
    info: DeckInfo, rate: Rate, volume: TierPlan, usage: Usage, seconds: int, more: int
) -> None:
    cost = graduated_cost(info, volume, usage, rate, seconds)
    assert graduated_cost(info, volume, usage, rate, seconds + more) >= cost
    later = Usage(usage.calls + more, usage.seconds + more * 60)
    assert graduated_cost(info, volume, later, rate, seconds) <= cost


@settings(max_examples=300, deadline=None)
@given(infos, rates(), plans(), usages, durations)
def test_property_graduated_never_costs_more_than_all_units_at_the_same_usage(
    info: DeckInfo, rate: Rate, volume: TierPlan, usage: Usage, seconds: int
) -> None:
    all_units = TierPlan(volume.name, volume.counter, TierMode.ALL_UNITS, volume.tiers)
    graduated = TierPlan(volume.name, volume.counter, TierMode.GRADUATED, volume.tiers)
    reached = call_cost(info, tiered_rate(all_units, usage, rate), seconds)
    assert graduated_cost(info, all_units, usage, rate, seconds) == reached
    assert graduated_cost(info, graduated, usage, rate, seconds) <= reached


@settings(max_examples=300, deadline=None)
@given(infos, rates(), durations)
def test_property_without_discount_the_positional_pass_is_the_engine(
    info: DeckInfo, rate: Rate, seconds: int
) -> None:
    assert positional_cost(info, rate, seconds).cost == call_cost(info, rate, seconds)


@settings(max_examples=200, deadline=None)
@given(infos, rates(), st.integers(0, 2_000_000).map(lambda m: Decimal(m).scaleb(-6)))
def test_property_positional_max_usage_is_the_engine_max_usage(
    info: DeckInfo, rate: Rate, credit: Decimal
) -> None:
    assert positional_max_usage(info, rate, credit, limit=3600) == max_usage(
        info, rate, credit, limit=3600
    )
