"""Prometheus metrics of one daemon, in a registry of its own.

Counted where they happen (label children made once; the hot paths allocate nothing
beyond a ``perf_counter``):

- ``ratekeeper_authorizations_total{result,reason}``: every answer, by result
  (allow/deny) and stable reason code; ``ratekeeper_authorization_seconds``: how long
  the answer took (buckets 0.25 ms .. 1 s); both tallied in plain integers and read at
  scrape time (``daemon.authorization_tally``: the hot path takes no lock);
- ``ratekeeper_call_cuts_total{reason}``, ``ratekeeper_seat_refusals_total{tenant}``;
- ``ratekeeper_debit_lag_seconds``: how late a debit tick ran after its schedule;
- ``ratekeeper_switch_events_total{switch}``: protocol items read from each switch
  (events/s is its ``rate()``); the time of the last one is kept for ``/health``;
- ``ratekeeper_sql_errors_total{component}``, ``ratekeeper_redis_errors_total{component}``;
  the last error of each component is kept for ``/health``.

Read from the running daemon at scrape time, once :meth:`Metrics.watch` names it
(:class:`DaemonCollector`): live calls per tenant (``SessionManager.live_sessions()``),
connector state per switch (1 connected, 0 not), notification sinks (MQTT connected,
queued, dropped), the settler (queue, written, duplicates, rejected), and live seats per
tenant. Seats live in Redis and SQL, and a scrape never waits for either: the seat gauge
shows the last census of open seat sessions in SQL (distinct seats per tenant, the rows
Redis's live seats are rebuilt from), taken every ``SEAT_CENSUS_INTERVAL`` seconds by
:meth:`Metrics.follow_seats`. Calls are this instance's; seats are every instance's.

The registry is per daemon so that tests running several daemons in one process count
apart; ``daemon.api.ops`` exposes it. Collection runs on the event loop's thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from balance.live import LiveStateError
from balance.seat_sessions import SeatSessions
from daemon.authorization import AuthorizationDecision, Reason
from daemon.authorization_tally import AuthorizationTally
from daemon.notifications import MQTTSink, Notifier
from daemon.webhook import WebhookSender
from storage.engine import StorageError

log = structlog.get_logger(__name__)

AUTHORIZATION_BUCKETS = (
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip
DEBIT_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SEAT_CENSUS_INTERVAL = 15.0
"""Seconds between two counts of live seats per tenant (:meth:`Metrics.follow_seats`)."""


# -- what the scrape-time collector reads of the daemon -------------------------------


class CallView(Protocol):
    """A live call: whose it is."""

    @property
    def account(self) -> str: ...


class CallSource(Protocol):
    """The session manager: the calls in progress."""

    def live_sessions(self) -> Sequence[CallView]: ...


class SwitchLink(Protocol):
    """A switch connector: which switch, and whether it is connected."""

    @property
    def switch_id(self) -> str: ...

    @property
    def connected(self) -> bool: ...


class SettlementQueue(Protocol):
    """The settler: its queue and what it wrote."""

    @property
    def queued(self) -> int: ...

    @property
    def written(self) -> int: ...

    @property
    def duplicates(self) -> int: ...

    @property
    def rejected(self) -> int: ...


class DaemonView(Protocol):
    """What the collector reads of a running daemon (``daemon.app.Daemon`` has it)."""

    @property
    def sessions(self) -> CallSource | None: ...

    @property
    def connectors(self) -> Sequence[SwitchLink]: ...

    @property
    def settler(self) -> SettlementQueue | None: ...

    @property
    def notifier(self) -> Notifier: ...


# -- counted where they happen ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LastError:
    """The last SQL or Redis error of a component."""

    kind: str  # "sql" | "redis"
    message: str
    at: float  # time.monotonic()

    def age(self) -> float:
        """Seconds since it happened."""
        return time.monotonic() - self.at


class SwitchEvents:
    """Counts one switch's protocol items: its connector calls it once per item."""

    __slots__ = ("_counter", "last_at")

    def __init__(self, counter: Counter) -> None:
        self._counter = counter
        self.last_at: float | None = None  # time.monotonic() of the last item

    def __call__(self) -> None:
        self._counter.inc()
        self.last_at = time.monotonic()


def error_kind(exc: BaseException) -> str | None:
    """``"redis"``, ``"sql"`` or None: what failed, read along the ``__cause__`` chain."""
    seen: BaseException | None = exc
    for _ in range(8):  # a bounded walk: chains are short, and may loop
        if seen is None:
            return None
        if isinstance(seen, RedisError | LiveStateError):
            return "redis"
        if isinstance(seen, SQLAlchemyError | StorageError):
            return "sql"
        seen = seen.__cause__
    return None


class Metrics:
    """The daemon's instruments (see the module docstring); one registry per daemon."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        reg = self.registry
        # answers by reason and their durations: plain integers (daemon.authorization_tally)
        self.authorizations = AuthorizationTally(AUTHORIZATION_BUCKETS)
        reg.register(self.authorizations)
        self.cuts = Counter(
            "ratekeeper_call_cuts",
            "Live calls cut by the daemon, by reason code.",
            ["reason"],
            registry=reg,
        )
        self.seat_refusals = Counter(
            "ratekeeper_seat_refusals",
            "Agent seats refused or logged off past the seat limit, by tenant.",
            ["tenant"],
            registry=reg,
        )
        self.debit_lag = Histogram(
            "ratekeeper_debit_lag_seconds",
            "How late a debit tick ran after its schedule.",
            buckets=DEBIT_LAG_BUCKETS,
            registry=reg,
        )
        self.switch_events_total = Counter(
            "ratekeeper_switch_events",
            "Protocol items (AMI/ESL events and replies) read from each switch.",
            ["switch"],
            registry=reg,
        )
        self.sql_errors = Counter(
            "ratekeeper_sql_errors", "SQL errors, by component.", ["component"], registry=reg
        )
        self.redis_errors = Counter(
            "ratekeeper_redis_errors", "Redis errors, by component.", ["component"], registry=reg
        )
        self._switches: dict[str, SwitchEvents] = {}
        self._last_errors: dict[str, LastError] = {}
        self._live_seats: dict[str, int] = {}
        self._collector: DaemonCollector | None = None

    # -- authorization, cuts, debit loop -------------------------------------------------

    def count_authorization(
        self, decision: AuthorizationDecision, seconds: float | None = None
    ) -> None:
        """Count one answer, and observe how long it took when ``seconds`` is given."""
        self.authorizations.count(decision.reason, seconds)

    def count_cut(self, reason: str) -> None:
        """Count one cut."""
        self.cuts.labels(reason or "UNKNOWN").inc()

    def observe_debit_lag(self, seconds: float) -> None:
        """One debit tick ran ``seconds`` after its schedule (early counts as 0)."""
        self.debit_lag.observe(max(0.0, seconds))

    def authorizations_of(self, reason: Reason) -> float:
        """How many answers had ``reason`` (for reports and tests)."""
        return float(self.authorizations.answers(reason))

    # -- switches ---------------------------------------------------------------------------

    def switch_events(self, switch_id: str) -> SwitchEvents:
        """The item counter of one switch (the same one on every call)."""
        meter = self._switches.get(switch_id)
        if meter is None:
            meter = SwitchEvents(self.switch_events_total.labels(switch_id))
            self._switches[switch_id] = meter
        return meter

    def last_event_age(self, switch_id: str) -> float | None:
        """Seconds since the switch's last protocol item (None: none yet)."""
        meter = self._switches.get(switch_id)
        if meter is None or meter.last_at is None:
            return None
        return time.monotonic() - meter.last_at

    # -- SQL and Redis errors ------------------------------------------------------------

    def count_sql_error(self, component: str, exc: BaseException) -> None:
        """Count an SQL error of ``component`` (``settlement``, ``accounts``, ...)."""
        self.sql_errors.labels(component).inc()
        self._last_errors[component] = LastError("sql", _describe(exc), time.monotonic())

    def count_redis_error(self, component: str, exc: BaseException) -> None:
        """Count a Redis error of ``component``."""
        self.redis_errors.labels(component).inc()
        self._last_errors[component] = LastError("redis", _describe(exc), time.monotonic())

    def count_error(self, component: str, exc: BaseException) -> str | None:
        """Count ``exc`` as an SQL or Redis error by its type (:func:`error_kind`).

        Returns the kind counted; None (nothing counted) for any other error.
        """
        kind = error_kind(exc)
        if kind == "sql":
            self.count_sql_error(component, exc)
        elif kind == "redis":
            self.count_redis_error(component, exc)
        return kind

    def last_error(self, component: str) -> LastError | None:
        """The last SQL or Redis error counted for ``component``."""
        return self._last_errors.get(component)

    # -- live seats ----------------------------------------------------------------------

    @property
    def live_seats(self) -> Mapping[str, int]:
        """Live seats per tenant at the last census (a tenant seen before stays, at 0)."""
        return self._live_seats

    async def refresh_seats(self, sessions: SeatSessions) -> bool:
        """Count live seats per tenant from the open seat sessions; False on an error
        (counted as ``seat_census``, the previous census kept)."""
        try:
            opened = await sessions.open_sessions()
        except Exception as exc:
            if self.count_error("seat_census", exc) is None:
                log.exception("seat census failed")
            return False
        seats: dict[str, set[str]] = {}
        for session in opened:
            if session.tenant:
                seats.setdefault(session.tenant, set()).add(session.seat)
        census = dict.fromkeys(self._live_seats, 0)
        census.update((tenant, len(names)) for tenant, names in seats.items())
        self._live_seats = census
        return True

    async def follow_seats(
        self, sessions: SeatSessions, interval: float = SEAT_CENSUS_INTERVAL
    ) -> None:
        """Take a seat census every ``interval`` seconds, forever (a daemon task)."""
        while True:
            await self.refresh_seats(sessions)
            await asyncio.sleep(interval)

    # -- the scrape-time collector -------------------------------------------------------

    def watch(self, daemon: DaemonView) -> None:
        """Read ``daemon``'s live gauges at every scrape (again: the new daemon is read)."""
        if self._collector is None:
            self._collector = DaemonCollector(self, daemon)
            self.registry.register(self._collector)
        else:
            self._collector.daemon = daemon


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


_GAUGES = {
    "ratekeeper_live_calls": ("Calls in progress on this instance, by tenant.", ["tenant"]),
    "ratekeeper_live_seats": ("Live agent seats by tenant (last census).", ["tenant"]),
    "ratekeeper_switch_connected": ("1 while the switch connection is up.", ["switch"]),
    "ratekeeper_notification_sink_connected": ("1 while the sink is connected.", ["sink"]),
    "ratekeeper_notification_sink_queued": ("Notifications waiting in a sink.", ["sink"]),
    "ratekeeper_settlement_queued": ("Finished calls waiting to be written.", []),
}
_COUNTERS = {
    "ratekeeper_notification_sink_dropped": ("Notifications dropped (buffer full).", ["sink"]),
    "ratekeeper_rated_calls_written": ("Rated calls newly written to SQL.", []),
    "ratekeeper_rated_calls_duplicates": ("Rated calls found already written.", []),
    "ratekeeper_rated_calls_rejected": ("Rated calls rejected as invalid.", []),
}


class _Families:
    """The families of one scrape, empty until filled."""

    def __init__(self) -> None:
        self.gauges = {
            name: GaugeMetricFamily(name, doc, labels=labels)
            for name, (doc, labels) in _GAUGES.items()
        }
        self.counters = {
            name: CounterMetricFamily(name, doc, labels=labels)
            for name, (doc, labels) in _COUNTERS.items()
        }

    def gauge(self, name: str, labels: list[str], value: float) -> None:
        self.gauges[name].add_metric(labels, value)

    def counter(self, name: str, labels: list[str], value: float) -> None:
        self.counters[name].add_metric(labels, value)

    def all(self) -> list[Metric]:
        return [*self.gauges.values(), *self.counters.values()]


class DaemonCollector:
    """Gauges read from a running daemon at scrape time (see the module docstring).

    A part that fails is logged and left out; a scrape never raises for it.
    """

    def __init__(self, metrics: Metrics, daemon: DaemonView) -> None:
        self.metrics = metrics
        self.daemon = daemon

    def describe(self) -> Iterable[Metric]:
        """The families :meth:`collect` yields (for the registry's name checks)."""
        return _Families().all()

    def collect(self) -> Iterable[Metric]:
        """Every family, filled from the daemon."""
        out = _Families()
        for part in (self._calls, self._seats, self._switches, self._sinks, self._settler):
            try:
                part(out)
            except Exception:
                log.exception("metrics collection failed", part=part.__name__)
        return out.all()

    def _calls(self, out: _Families) -> None:
        sessions = self.daemon.sessions
        if sessions is None:
            return
        per_tenant: dict[str, int] = {}
        for call in sessions.live_sessions():
            per_tenant[call.account] = per_tenant.get(call.account, 0) + 1
        for tenant, count in sorted(per_tenant.items()):
            out.gauge("ratekeeper_live_calls", [tenant], count)

    def _seats(self, out: _Families) -> None:
        for tenant, count in sorted(self.metrics.live_seats.items()):
            out.gauge("ratekeeper_live_seats", [tenant], count)

    def _switches(self, out: _Families) -> None:
        for connector in self.daemon.connectors:
            up = 1 if connector.connected else 0
            out.gauge("ratekeeper_switch_connected", [connector.switch_id], up)

    def _sinks(self, out: _Families) -> None:
        for sink in self.daemon.notifier.sinks:
            if isinstance(sink, MQTTSink):
                publisher = sink.publisher
                up = 1 if publisher.connected else 0
                out.gauge("ratekeeper_notification_sink_connected", [sink.name], up)
                queued, dropped = publisher.queued, publisher.dropped
            elif isinstance(sink, WebhookSender):
                queued, dropped = sink.queued, sink.dropped
            else:
                continue
            out.gauge("ratekeeper_notification_sink_queued", [sink.name], queued)
            out.counter("ratekeeper_notification_sink_dropped", [sink.name], dropped)

    def _settler(self, out: _Families) -> None:
        settler = self.daemon.settler
        if settler is None:
            return
        out.gauge("ratekeeper_settlement_queued", [], settler.queued)
        out.counter("ratekeeper_rated_calls_written", [], settler.written)
        out.counter("ratekeeper_rated_calls_duplicates", [], settler.duplicates)
        out.counter("ratekeeper_rated_calls_rejected", [], settler.rejected)
