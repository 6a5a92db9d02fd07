"""``AuthorizationTally``: Prometheus families from plain integers, bucket edges as in
``prometheus_client.Histogram`` (an observation equal to a bound is in that bucket)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from daemon.authorization import Reason
from daemon.authorization_tally import AuthorizationTally

BOUNDS = (0.001, 0.01, 0.1)


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
    }


@pytest.mark.parametrize("seconds", [0.0, 0.001, 0.0011, 0.01, 0.05, 0.1, 0.2, 3.0])
def test_given_a_duration_when_observed_then_the_same_buckets_as_prometheus_histogram(
    seconds: float,
) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    tally = AuthorizationTally(BOUNDS)
    ours.register(tally)
    reference = Histogram("ratekeeper_authorization_seconds", "x", buckets=BOUNDS, registry=theirs)

    tally.count(Reason.OK, seconds)
    reference.observe(seconds)

    mine, reference_samples = _samples(ours), _samples(theirs)
    for name in ("_bucket", "_count", "_sum"):
        expected = {k: v for k, v in reference_samples.items() if k[0].endswith(name)}
        assert {k: mine[k] for k in expected} == expected


def test_given_answers_when_scraped_then_counted_by_result_and_reason() -> None:
    registry = CollectorRegistry()
    tally = AuthorizationTally(BOUNDS)
    registry.register(tally)
    for reason in (Reason.OK, Reason.OK, Reason.NO_RATE):
        tally.count(reason)  # not timed: no histogram observation

    text = generate_latest(registry).decode()

    assert 'ratekeeper_authorizations_total{reason="OK",result="allow"} 2.0' in text
    assert 'ratekeeper_authorizations_total{reason="NO_RATE",result="deny"} 1.0' in text
    assert "ratekeeper_authorization_seconds_count 0.0" in text
    assert (tally.answers(Reason.OK), tally.answers(Reason.CPS_LIMIT)) == (2, 0)


def test_given_bounds_out_of_order_when_made_then_error_names_them() -> None:
    with pytest.raises(ValueError, match=r"increase strictly: \[0\.1, 0\.01\]"):
        AuthorizationTally((0.1, 0.01))
