"""Low-balance thresholds: the pure rule (balance.thresholds) and its settings."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from balance.thresholds import ThresholdRule, crossed, minutes_left
from daemon.notification_settings import NotificationSettings, ThresholdSettings

FIVE = ThresholdRule(amount_micros=5_000_000)
TEN_MINUTES = ThresholdRule(minutes=10)
PER_MINUTE = 1_000_000  # 1.00 per minute


def _run(
    rules: list[ThresholdRule], balances: list[int], rate: int | None = None
) -> list[list[ThresholdRule]]:
    state: frozenset[str] = frozenset()
    fired: list[list[ThresholdRule]] = []
    for available in balances:
        state, now = crossed(rules, state, available, rate)
        fired.append(now)
    return fired


def test_given_a_debit_loop_then_an_amount_rule_fires_once_per_crossing() -> None:
    ticks = list(range(9_000_000, -2_000_000, -250_000))  # 9.00 down to -1.75
    fired = _run([FIVE], ticks)
    assert sum(len(f) for f in fired) == 1
    assert fired[ticks.index(5_000_000)] == [FIVE]  # at the threshold, not only below


def test_given_a_top_up_above_the_rule_then_it_re_arms_and_fires_again() -> None:
    fired = _run([FIVE], [6_000_000, 4_000_000, 3_000_000, 20_000_000, 4_500_000, 4_000_000])
    assert fired == [[], [FIVE], [], [], [FIVE], []]


def test_given_a_top_up_still_below_the_rule_then_it_does_not_re_arm() -> None:
    fired = _run([FIVE], [4_000_000, 4_900_000, 5_000_000, 3_000_000])
    assert fired == [[FIVE], [], [], []]


def test_given_a_big_drop_then_every_rule_passed_fires_in_one_check() -> None:
    ten = ThresholdRule(amount_micros=10_000_000)
    fired = _run([ten, FIVE], [20_000_000, 1_000_000])
    assert fired == [[], [ten, FIVE]]


def test_given_a_rate_then_minutes_left_are_rounded_down() -> None:
    assert minutes_left(10_999_999, PER_MINUTE) == 10
    assert minutes_left(11_000_000, PER_MINUTE) == 11
    assert minutes_left(-1, PER_MINUTE) == -1  # floor, not towards zero
    assert minutes_left(7_000_000, 3) == 2_333_333
    assert minutes_left(5_000_000, None) is None
    assert minutes_left(5_000_000, 0) is None


def test_given_a_minutes_rule_then_it_fires_at_ten_minutes_left() -> None:
    fired = _run([TEN_MINUTES], [11_000_000, 10_999_999, 10_000_000, 2_000_000], PER_MINUTE)
    assert fired == [[], [TEN_MINUTES], [], []]


def test_given_no_rate_then_a_minutes_rule_keeps_its_state() -> None:
    state, fired = crossed([TEN_MINUTES], frozenset(), 1_000_000, None)
    assert (state, fired) == (frozenset(), [])
    state, _ = crossed([TEN_MINUTES], frozenset({TEN_MINUTES.key}), 99_000_000, None)
    assert state == {TEN_MINUTES.key}  # not re-armed: the minutes could not be told


def test_given_a_rule_removed_from_the_configuration_then_its_state_is_forgotten() -> None:
    state, _ = crossed([FIVE], frozenset({"amount:1", FIVE.key}), 1_000_000, None)
    assert state == {FIVE.key}


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(min_value=-3_000_000, max_value=12_000_000), min_size=1, max_size=60),
    st.integers(min_value=0, max_value=10_000_000),
)
def test_property_fires_exactly_on_each_downward_crossing(balances: list[int], limit: int) -> None:
    rule = ThresholdRule(amount_micros=limit)
    fired = _run([rule], balances)
    expected = []
    above = True  # a new account's rule is armed
    for available in balances:
        expected.append([rule] if above and available <= limit else [])
        above = available > limit
    assert fired == expected


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"amount_micros": 1, "minutes": 1}, {"amount_micros": -1}, {"minutes": True}],
)
def test_given_an_invalid_rule_then_value_error(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="threshold"):
        ThresholdRule(**kwargs)


def test_given_threshold_settings_then_rules_in_micro_units() -> None:
    notifications = NotificationSettings.model_validate(
        {"low_balance": [{"amount": "5.00"}, {"minutes": 10}, {"amount": "0.000001"}]}
    )
    assert notifications.threshold_rules() == (
        FIVE,
        TEN_MINUTES,
        ThresholdRule(amount_micros=1),
    )


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"amount": "5.00", "minutes": 3}, "exactly one"),
        ({}, "exactly one"),
        ({"amount": "5.0000001"}, "too many decimals"),
        ({"amount": "-1"}, "negative"),
        ({"amount": "five"}, "not a number"),
        ({"minutes": 10, "minuts": 3}, "minuts"),
    ],
)
def test_given_a_bad_threshold_then_the_error_names_it(
    entry: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        ThresholdSettings.model_validate(entry)
