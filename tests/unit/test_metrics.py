"""The daemon's metrics and health rules, over a small in-memory stand-in of a daemon.

The stand-in has what ``daemon.metrics.DaemonView`` and ``daemon.health.HealthSubject``
name (calls, connectors, a settler, a notifier); the exposition is read back with
prometheus-client's own parser.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from redis.exceptions import ConnectionError as RedisConnectionError

from daemon.authorization import AuthorizationDecision, Reason
from daemon.health import DEGRADED, DOWN, OK, health, http_status, overall
from daemon.metrics import AUTHORIZATION_BUCKETS, Metrics, error_kind
from daemon.notifications import Notifier, NullNotifier
from storage.engine import StorageError


@dataclass
class _Call:
    account: str


@dataclass
class _Calls:
    calls: list[_Call]
    broken: bool = False

    def live_sessions(self) -> list[_Call]:
        if self.broken:
            raise RuntimeError("session table unreadable")
        return list(self.calls)


@dataclass
class _Link:
    switch_id: str
    connected: bool


@dataclass
class _Settler:
    queued: int = 0
    written: int = 0
    duplicates: int = 0
    rejected: int = 0


@dataclass
class _Daemon:
    sessions: _Calls | None = None
    connectors: list[_Link] = field(default_factory=list)
    settler: _Settler | None = None
    notifier: Notifier = field(default_factory=NullNotifier)
    resources: None = None
    metrics: Metrics = field(default_factory=Metrics)


def _samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_given_live_calls_when_scraped_then_calls_per_tenant_switches_and_settler_show() -> None:
    daemon = _Daemon(
        sessions=_Calls([_Call("acme"), _Call("acme"), _Call("zeta")]),
        connectors=[_Link("pbx-1", True), _Link("pbx-2", False)],
        settler=_Settler(queued=3, written=7, duplicates=1, rejected=0),
    )
    daemon.metrics.watch(daemon)

    samples = _samples(daemon.metrics)

    assert samples[("ratekeeper_live_calls", (("tenant", "acme"),))] == 2
    assert samples[("ratekeeper_live_calls", (("tenant", "zeta"),))] == 1
    assert samples[("ratekeeper_switch_connected", (("switch", "pbx-1"),))] == 1
    assert samples[("ratekeeper_switch_connected", (("switch", "pbx-2"),))] == 0
    assert samples[("ratekeeper_settlement_queued", ())] == 3
    assert samples[("ratekeeper_rated_calls_written_total", ())] == 7
    assert samples[("ratekeeper_rated_calls_duplicates_total", ())] == 1


def test_given_a_part_that_fails_when_scraped_then_the_rest_is_still_exposed() -> None:
    daemon = _Daemon(sessions=_Calls([_Call("acme")], broken=True), connectors=[_Link("p", True)])
    daemon.metrics.watch(daemon)

    samples = _samples(daemon.metrics)

    assert not any(name == "ratekeeper_live_calls" for name, _ in samples)
    assert samples[("ratekeeper_switch_connected", (("switch", "p"),))] == 1


def test_given_watch_called_twice_then_the_latest_daemon_is_read_once() -> None:
    metrics = Metrics()
    metrics.watch(_Daemon(sessions=_Calls([_Call("old")])))
    metrics.watch(_Daemon(sessions=_Calls([_Call("new")])))

    samples = _samples(metrics)

    assert samples[("ratekeeper_live_calls", (("tenant", "new"),))] == 1
    assert ("ratekeeper_live_calls", (("tenant", "old"),)) not in samples


def test_given_answers_with_durations_then_counted_by_reason_and_observed_in_buckets() -> None:
    metrics = Metrics()
    metrics.count_authorization(AuthorizationDecision.deny(Reason.CPS_LIMIT), 0.0002)
    metrics.count_authorization(AuthorizationDecision.deny(Reason.CPS_LIMIT), 0.7)
    metrics.count_authorization(AuthorizationDecision.deny(Reason.NO_RATE))  # not timed

    samples = _samples(metrics)

    assert metrics.authorizations_of(Reason.CPS_LIMIT) == 2
    assert samples[("ratekeeper_authorization_seconds_count", ())] == 2
    assert samples[("ratekeeper_authorization_seconds_bucket", (("le", "0.00025"),))] == 1
    assert samples[("ratekeeper_authorization_seconds_bucket", (("le", "0.5"),))] == 1
    assert samples[("ratekeeper_authorization_seconds_bucket", (("le", "1.0"),))] == 2
    assert AUTHORIZATION_BUCKETS[0] == 0.00025 and AUTHORIZATION_BUCKETS[-1] == 1.0


def test_given_switch_items_then_counted_per_switch_with_the_last_ones_age() -> None:
    metrics = Metrics()
    assert metrics.last_event_age("pbx-1") is None
    count = metrics.switch_events("pbx-1")
    assert metrics.switch_events("pbx-1") is count
    count()
    count()

    age = metrics.last_event_age("pbx-1")
    assert age is not None and age >= 0
    assert _samples(metrics)[("ratekeeper_switch_events_total", (("switch", "pbx-1"),))] == 2


def test_given_errors_then_classified_as_sql_or_redis_along_the_cause_chain() -> None:
    metrics = Metrics()
    try:
        try:
            raise RedisConnectionError("refused")
        except RedisConnectionError as exc:
            raise RuntimeError("batch failed") from exc
    except RuntimeError as wrapped:
        assert metrics.count_error("settlement", wrapped) == "redis"
    assert metrics.count_error("accounts", StorageError("listing failed")) == "sql"
    assert metrics.count_error("accounts", ValueError("not a store error")) is None
    assert error_kind(KeyError("x")) is None

    samples = _samples(metrics)
    assert samples[("ratekeeper_redis_errors_total", (("component", "settlement"),))] == 1
    assert samples[("ratekeeper_sql_errors_total", (("component", "accounts"),))] == 1
    last = metrics.last_error("settlement")
    assert last is not None and last.kind == "redis" and "batch failed" in last.message


def test_debit_lag_early_ticks_count_as_zero() -> None:
    metrics = Metrics()
    metrics.observe_debit_lag(-0.003)
    metrics.observe_debit_lag(0.2)

    samples = _samples(metrics)
    assert samples[("ratekeeper_debit_lag_seconds_bucket", (("le", "0.001"),))] == 1
    assert samples[("ratekeeper_debit_lag_seconds_count", ())] == 2


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ({"sql": OK, "redis": OK, "settler": OK}, OK),
        ({"sql": DOWN, "redis": OK, "settler": OK}, DEGRADED),
        ({"sql": OK, "redis": OK, "switch:p": DOWN}, DEGRADED),
        ({"sql": OK, "redis": DOWN, "settler": OK}, DOWN),
    ],
)
def test_overall_status_is_down_only_when_redis_is(statuses: dict[str, str], expected: str) -> None:
    report = {"status": overall({name: {"status": s} for name, s in statuses.items()})}
    assert report["status"] == expected
    assert http_status(report) == (503 if expected == DOWN else 200)


async def test_given_a_daemon_not_started_then_health_is_down_without_raising() -> None:
    daemon = _Daemon(connectors=[_Link("pbx-1", False)])

    report = await health(daemon, timeout=0.5)

    assert report["status"] == DOWN
    assert report["components"]["redis"]["status"] == DOWN
    assert report["components"]["switch:pbx-1"]["status"] == DOWN
    assert report["components"]["settler"]["status"] == DOWN
    assert report["components"]["notifier"] == {"status": OK, "enabled": False, "sinks": {}}
