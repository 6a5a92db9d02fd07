"""``/metrics`` and ``/health`` of a real daemon, read through the ops router.

A simulated Asterisk places calls over real AMI and FastAGI (two allowed, one denied
for credit); the router is served by a FastAPI app over ASGI. ``/metrics`` must parse
with prometheus-client's own parser and show the calls per tenant while they are up, the
denial by reason, one latency observation per answer, debit ticks, the switch connected
and its events; ``/health`` is ok, then down when its Redis probe points at a closed
port, degraded when its SQL probe points at a database that cannot be opened, and
degraded when the switch goes away.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from balance.seat_sessions import SeatSessions
from daemon.api.ops import ops_router
from daemon.app import Daemon
from daemon.health import HealthSubject
from daemon.notification_settings import MQTTSettings, NotificationSettings
from daemon.notifications import MQTTSink
from daemon.simulator.asterisk import CallPlan, SimulatedAsterisk
from daemon.simulator.loadgen import run_calls
from tests.integration.mqtt_fixtures import mqtt_url  # noqa: F401
from tests.support.daemon_harness import (
    eventually,
    make_settings,
    provision,
    running_daemon,
    unique_switch_id,
)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _samples(text: str) -> Samples:
    """Every sample of an exposition, by name and sorted labels (the official parser)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def _total(samples: Samples, name: str) -> float:
    return sum(value for (sample, _), value in samples.items() if sample == name)


@asynccontextmanager
async def _ops_client(subject: HealthSubject) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(ops_router(subject, health_timeout=2.0))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ops") as client:
        yield client


async def _scrape(client: httpx.AsyncClient) -> Samples:
    answer = await client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=")
    return _samples(answer.text)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class _Connections:
    engine: AsyncEngine
    redis: aioredis.Redis


def _mqtt_up(daemon: Daemon) -> bool:
    return all(
        sink.publisher.connected for sink in daemon.notifier.sinks if isinstance(sink, MQTTSink)
    )


class _Probed:
    """The daemon as health sees it, with its SQL and Redis probes replaced."""

    def __init__(self, daemon: Daemon, connections: _Connections) -> None:
        self._daemon = daemon
        self.resources = connections

    def __getattr__(self, name: str) -> Any:
        return getattr(self._daemon, name)


async def test_given_calls_through_a_real_daemon_then_metrics_parse_and_health_follows(
    sql_url: str,
    redis_url: str,
    mqtt_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    run = uuid.uuid4().hex[:8]
    rich, broke, seat_tenant = f"rich-{run}", f"broke-{run}", f"seats-{run}"
    sim = SimulatedAsterisk(
        ami_username="billing", ami_secret="billing", fastagi_host="127.0.0.1", fastagi_port=0
    )
    await sim.start()
    switch_id = unique_switch_id()
    base = make_settings(tmp_path, sql_url, redis_url, switch_id=switch_id, ami_port=sim.ami_port)
    mqtt = MQTTSettings(url=mqtt_url, client_id=f"rk-{run}", topic_prefix=f"rk-{run}")
    settings = base.model_copy(update={"notifications": NotificationSettings(mqtt=mqtt)})
    await provision(settings, {rich: Decimal("10.00"), broke: Decimal("0")})
    sim_running = True
    try:
        async with running_daemon(settings) as daemon, _ops_client(daemon) as ops:
            sim.fastagi_port = daemon.fastagi_port
            await eventually(lambda: all(c.connected for c in daemon.connectors))
            await eventually(lambda: daemon.notifier.enabled and _mqtt_up(daemon))
            plans = [
                CallPlan(rich, "15550001001", "15551001001", 0.05, 3.0),
                CallPlan(rich, "15550001002", "15551001002", 0.05, 3.0),
                CallPlan(broke, "15550001003", "15551001003", 0.05, 3.0),
            ]
            calls = asyncio.create_task(run_calls(sim, plans, cps=100))

            async def both_calls_live() -> bool:
                scraped = await _scrape(ops)
                return _value(scraped, "ratekeeper_live_calls", tenant=rich) == 2

            await eventually(both_calls_live)
            outcomes = await calls
            sessions, settler = daemon.sessions, daemon.settler
            assert sessions is not None and settler is not None
            await eventually(lambda: not sessions.live_sessions())
            await settler.wait_idle()

            async def events_delivered() -> bool:
                scraped = await _scrape(ops)
                return _value(scraped, "ratekeeper_notification_sink_queued", sink="mqtt") == 0

            await eventually(events_delivered)
            scraped = await _scrape(ops)
            health = await ops.get("/health")

            # seats: two seats of one tenant open in SQL, counted by the census
            assert daemon.resources is not None
            seat_sessions = SeatSessions(daemon.resources.engine)
            now_us = time.time_ns() // 1000
            for seat in ("Agent:1001", "Agent:1002"):
                await seat_sessions.open(seat_tenant, seat, switch_id, now_us)
            assert await daemon.metrics.refresh_seats(seat_sessions)
            with_seats = await _scrape(ops)

            broken_redis = aioredis.Redis(
                host="127.0.0.1", port=_closed_port(), socket_connect_timeout=1
            )
            broken_sql = create_async_engine(
                f"sqlite+aiosqlite:///{tmp_path / 'no-such-dir' / 'x.db'}"
            )
            engine, client = daemon.resources.engine, daemon.resources.redis
            try:
                async with _ops_client(_Probed(daemon, _Connections(engine, broken_redis))) as o:
                    redis_away = await o.get("/health")
                async with _ops_client(_Probed(daemon, _Connections(broken_sql, client))) as o:
                    sql_away = await o.get("/health")
            finally:
                await broken_redis.aclose()
                await broken_sql.dispose()

            await sim.stop()
            sim_running = False
            await eventually(lambda: not any(c.connected for c in daemon.connectors))
            switch_away = await ops.get("/health")
            disconnected = await _scrape(ops)
    finally:
        if sim_running:
            await sim.stop()

    assert [o.authorized for o in outcomes] == [True, True, False]
    # answers by result and reason; one latency observation per answer
    assert _value(scraped, "ratekeeper_authorizations_total", result="allow", reason="OK") == 2
    denied = _value(
        scraped, "ratekeeper_authorizations_total", result="deny", reason="INSUFFICIENT_CREDIT"
    )
    assert denied == 1
    answers = _total(scraped, "ratekeeper_authorizations_total")
    assert _value(scraped, "ratekeeper_authorization_seconds_count") == answers == 3
    # the calls are over: no live call left, each written once (the denied one at 0)
    assert _value(scraped, "ratekeeper_live_calls", tenant=rich) is None
    assert _value(scraped, "ratekeeper_rated_calls_written_total") == 3
    assert _value(scraped, "ratekeeper_settlement_queued") == 0
    # three-second calls with a one-second debit interval ticked the debit loop
    assert (_value(scraped, "ratekeeper_debit_lag_seconds_count") or 0) >= 2
    # the switch: connected, its events counted
    assert _value(scraped, "ratekeeper_switch_connected", switch=switch_id) == 1
    assert (_value(scraped, "ratekeeper_switch_events_total", switch=switch_id) or 0) > 0
    assert _value(scraped, "ratekeeper_sql_errors_total", component="settlement") is None
    assert _value(with_seats, "ratekeeper_live_seats", tenant=seat_tenant) == 2
    # the events went out over MQTT: connected, nothing dropped
    assert _value(scraped, "ratekeeper_notification_sink_connected", sink="mqtt") == 1
    assert _value(scraped, "ratekeeper_notification_sink_dropped_total", sink="mqtt") == 0

    assert health.status_code == 200
    report = health.json()
    assert report["status"] == "ok", report
    components = report["components"]
    assert {"sql", "redis", f"switch:{switch_id}", "notifier", "settler"} <= set(components)
    assert components[f"switch:{switch_id}"]["connected"] is True
    assert components[f"switch:{switch_id}"]["last_event_seconds"] is not None
    assert components["settler"] == {"status": "ok", "queued": 0, "last_error": None}
    assert components["notifier"]["sinks"]["mqtt"]["connected"] is True

    assert redis_away.status_code == 503
    assert redis_away.json()["status"] == "down"
    assert redis_away.json()["components"]["redis"]["status"] == "down"
    assert redis_away.json()["components"]["sql"]["status"] == "ok"

    assert sql_away.status_code == 200
    assert sql_away.json()["status"] == "degraded"
    assert sql_away.json()["components"]["sql"]["status"] == "down"
    assert sql_away.json()["components"]["redis"]["status"] == "ok"

    assert switch_away.status_code == 200
    assert switch_away.json()["status"] == "degraded"
    assert switch_away.json()["components"][f"switch:{switch_id}"]["status"] == "down"
    assert _value(disconnected, "ratekeeper_switch_connected", switch=switch_id) == 0
