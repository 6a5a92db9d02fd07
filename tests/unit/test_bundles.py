"""Bundled minutes (pure): which bundle covers a callee, where a call's boundary falls."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tariffs.bundles import (
    Bundle,
    CallTerms,
    InvalidBundle,
    bundle_seconds_for,
    covering_bundle,
    price_call,
    split_call,
    terms_cost,
    terms_max_usage,
)
from tariffs.deck import DeckInfo, Rate, RateInterval
from tariffs.rating import call_cost
from tariffs.tiers import Tier, TierCounter, TierMode, TierPlan, Usage
from tests.unit.test_tiers import infos, rates

D = Decimal
INFO = DeckInfo("retail")  # rounding up to 6 decimals
US = Rate("1", "USA", D("0.10"))  # 60/60
NORTH_AMERICA = Bundle("na", 1000 * 60, ("1",))
EUROPE = Bundle("eu", 300 * 60, ("44", "33"))
LONDON = Bundle("london", 60 * 60, ("4420",))


@pytest.mark.parametrize(
    ("callee", "bundle", "prefix"),
    [
        ("12125550100", "na", "1"),
        ("+12125550100", "na", "1"),
        ("442079460000", "london", "4420"),  # longest prefix among every bundle's prefixes
        ("441614960000", "eu", "44"),
        ("33142278186", "eu", "33"),
        ("4915112345678", None, None),
    ],
)
def test_given_bundles_when_callee_matched_then_longest_prefix_wins(
    callee: str, bundle: str | None, prefix: str | None
) -> None:
    found = covering_bundle([NORTH_AMERICA, EUROPE, LONDON], callee)
    if bundle is None:
        assert found is None
    else:
        assert found is not None
        assert (found.bundle.name, found.prefix) == (bundle, prefix)


def test_given_same_prefix_in_two_bundles_when_matched_then_the_first_given_wins() -> None:
    other = Bundle("other", 60, ("44",))
    found = covering_bundle([EUROPE, other], "4479")
    assert found is not None and found.bundle is EUROPE


@pytest.mark.parametrize(
    ("rate", "seconds", "held", "bundled", "paid", "cost"),
    [
        # 61 s at 60/60 bills 120 s: 100 from the bundle, 20 s paid at 0.10 = 0.0333.. up
        (US, 61, 100, 100, 20, "0.033334"),
        (US, 61, 200, 120, 0, "0"),  # the bundle holds more than the call bills
        (US, 61, 0, 0, 120, "0.20"),  # no bundle: the rate's price
        (US, 0, 200, 0, 0, "0"),  # unanswered: nothing used
        (US, 30, 60, 60, 0, "0"),  # 30 s bills a whole 60 s increment, all from the bundle
        # connect fee still paid with money; minimum cost waived once a bundle second is used
        (Rate("1", "US", D("0.10"), connect_fee=D("0.05")), 50, 600, 60, 0, "0.05"),
        (Rate("1", "US", D("0.10"), min_cost=D("0.50")), 50, 600, 60, 0, "0"),
        (Rate("1", "US", D("0.10"), min_cost=D("0.50")), 50, 0, 0, 60, "0.50"),
        (Rate("1", "US", D("0.10"), max_cost=D("0.30")), 600, 60, 60, 540, "0.30"),
        # interval rate: 75 s bills 60 + 18 (6 s steps); 70 from the bundle, 8 s at 0.05
        (
            Rate.from_intervals(
                "1", "US", [RateInterval(0, D("0.10"), 60), RateInterval(60, D("0.05"), 6)]
            ),
            75,
            70,
            70,
            8,
            "0.006667",
        ),
    ],
)
def test_given_bundle_seconds_held_when_call_rated_then_split_at_that_billed_second(
    rate: Rate, seconds: int, held: int, bundled: int, paid: int, cost: str
) -> None:
    split = split_call(INFO, rate, seconds, held)
    assert (split.bundle_seconds, split.paid_seconds, split.cost) == (bundled, paid, D(cost))
    assert split.billable_seconds == bundle_seconds_for(rate, seconds)


def test_given_bundle_and_graduated_tier_when_rated_then_paid_seconds_take_their_tier() -> None:
    volume = TierPlan("v", TierCounter.MINUTES, TierMode.GRADUATED, (Tier(100, D(50)),))
    # 99 min used: a 180 s call uses 90 bundled seconds, then positions 90..180 are paid:
    # the tier starts at position 60, so all 90 paid seconds are at 0.05 = 0.075
    terms = CallTerms.of(volume, Usage(seconds=99 * 60), bundle_seconds=90)
    priced = price_call(INFO, US, 180, terms)
    assert (priced.cost, priced.bundle_seconds, priced.paid_seconds) == (D("0.075"), 90, 90)


def test_given_terms_when_start_rate_asked_then_the_tier_of_the_first_second() -> None:
    volume = TierPlan("v", TierCounter.MINUTES, TierMode.GRADUATED, (Tier(100, D(50)),))
    assert CallTerms.of(volume, Usage(seconds=99 * 60)).start_rate(US).rate == D("0.10")
    assert CallTerms.of(volume, Usage(seconds=100 * 60)).start_rate(US).rate == D("0.05")
    assert CallTerms(bundle_seconds=60).start_rate(US) is US
    assert not CallTerms(bundle_seconds=60).plain and CallTerms.of(None).plain


@pytest.mark.parametrize(
    ("rate", "held", "credit", "seconds"),
    [
        (Rate("1", "US", D("0.06"), initial_increment=1, subsequent_increment=1), 100, "0.05", 150),
        (US, 100, "0.03", 60),  # 61..120 s bill 120: 20 s paid = 0.033334 > 0.03
        (US, 100, "0.033334", 120),  # ... affordable with that much
        (US, 100, "0", 60),  # no money: the bundle covers 60 s; 61 s bills 120 > 100
        (US, 0, "0.10", 60),  # no bundle: the engine's answer
        (Rate("1", "US", D("0.10"), connect_fee=D("0.05")), 600, "0.01", 0),  # fee unaffordable
    ],
)
def test_given_bundle_and_credit_when_max_usage_asked_then_longest_affordable_call(
    rate: Rate, held: int, credit: str, seconds: int
) -> None:
    terms = CallTerms(bundle_seconds=held)
    assert terms_max_usage(INFO, rate, D(credit), terms, limit=3600) == seconds


def test_given_bundle_fields_when_invalid_then_refused_naming_the_field() -> None:
    with pytest.raises(InvalidBundle) as caught:
        Bundle("eu", 60, ())
    assert caught.value.field == "prefixes" and caught.value.code == "INVALID_BUNDLE"
    with pytest.raises(InvalidBundle, match="prefixes"):
        Bundle("eu", 60, ("44", "44"))
    with pytest.raises(InvalidBundle, match="prefixes"):
        Bundle("eu", 60, ("+44",))
    with pytest.raises(InvalidBundle, match="seconds"):
        Bundle("eu", -1, ("44",))
    with pytest.raises(InvalidBundle, match="name"):
        Bundle("eu:x", 60, ("44",))


# --- properties ------------------------------------------------------------------------

helds = st.integers(min_value=0, max_value=1_200)
durations = st.integers(min_value=0, max_value=1_000)


@settings(max_examples=300, deadline=None)
@given(infos, rates(), durations, helds)
def test_property_bundle_seconds_split_the_billable_seconds_and_never_cost_more(
    info: DeckInfo, rate: Rate, seconds: int, held: int
) -> None:
    split = split_call(info, rate, seconds, held)
    assert split.bundle_seconds == min(held, split.billable_seconds)
    assert split.bundle_seconds + split.paid_seconds == split.billable_seconds
    assert split.cost <= call_cost(info, rate, seconds)
    assert split_call(info, rate, seconds, 0).cost == call_cost(info, rate, seconds)


@settings(max_examples=300, deadline=None)
@given(infos, rates(), durations, helds, st.integers(1, 120))
def test_property_cost_rises_with_duration_and_falls_with_bundle_seconds(
    info: DeckInfo, rate: Rate, seconds: int, held: int, more: int
) -> None:
    cost = split_call(info, rate, seconds, held).cost
    assert split_call(info, rate, seconds + more, held).cost >= cost
    assert split_call(info, rate, seconds, held + more).cost <= cost


@settings(max_examples=200, deadline=None)
@given(infos, rates(), helds, st.integers(0, 300_000).map(lambda m: Decimal(m).scaleb(-6)))
def test_property_max_usage_is_affordable_and_one_second_more_is_not(
    info: DeckInfo, rate: Rate, held: int, credit: Decimal
) -> None:
    terms = CallTerms(bundle_seconds=held)
    seconds = terms_max_usage(info, rate, credit, terms, limit=1800)
    if seconds > 0:
        assert terms_cost(info, rate, seconds, terms) <= credit
    if seconds < 1800:
        assert terms_cost(info, rate, seconds + 1, terms) > credit
