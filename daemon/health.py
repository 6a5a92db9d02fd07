"""The health of a running daemon, one entry per component: ``await health(daemon)``.

::

    {"status": "degraded",
     "components": {
        "sql":           {"status": "ok", "latency_ms": 0.8},
        "redis":         {"status": "ok", "latency_ms": 0.2},
        "switch:pbx-1":  {"status": "down", "connected": false, "last_event_seconds": 41.2},
        "notifier":      {"status": "ok", "enabled": true,
                          "sinks": {"mqtt": {"connected": true, "queued": 0, "dropped": 0}}},
        "settler":       {"status": "ok", "queued": 0, "last_error": null}}}

Probes: SQL ``SELECT 1`` and Redis ``PING``, each bounded by ``timeout``; the switches,
the notifier and the settler are read from memory (a switch's last event and the
settler's last error from ``daemon.metrics``). A component is ``ok``, ``degraded`` or
``down``. The daemon is ``down`` when Redis is (no call can be authorized, every
answer would be ``SERVICE_UNAVAILABLE``); ``degraded`` when anything else is not ok
(SQL away: calls are still authorized from Redis and their settlements wait and retry;
a switch disconnected; a notification sink away; a settler error in the last
``RECENT_ERROR_SECONDS``); else ``ok``. :func:`http_status`: 200 for ok and degraded,
503 for down. ``health`` never raises: a probe that fails is the component's status.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import redis.asyncio as aioredis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from daemon.metrics import DaemonView, Metrics, SwitchLink
from daemon.notifications import MQTTSink
from daemon.webhook import WebhookSender

OK, DEGRADED, DOWN = "ok", "degraded", "down"
CRITICAL = frozenset({"redis"})
"""Components without which the daemon is down."""

DEFAULT_TIMEOUT = 2.0
"""Seconds a probe may take before its component is reported down."""

RECENT_ERROR_SECONDS = 60.0
"""A settler error younger than this makes the settler degraded."""

Component = dict[str, Any]


class Connections(Protocol):
    """The daemon's SQL engine and Redis client (``daemon.app.Resources``)."""

    @property
    def engine(self) -> AsyncEngine: ...

    @property
    def redis(self) -> aioredis.Redis: ...


class HealthSubject(DaemonView, Protocol):
    """What health reads of a running daemon (``daemon.app.Daemon`` has it)."""

    @property
    def resources(self) -> Connections | None: ...

    @property
    def metrics(self) -> Metrics: ...


async def health(daemon: HealthSubject, *, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:  # noqa: ASYNC109 - each probe's bound
    """Every component's health and the daemon's overall status (see the module doc)."""
    resources = daemon.resources
    if resources is None:
        sql: Component = {"status": DOWN, "error": "not started"}
        redis: Component = {"status": DOWN, "error": "not started"}
    else:
        sql, redis = await asyncio.gather(
            _probe(lambda: _select_one(resources.engine), timeout),
            _probe(lambda: _ping(resources.redis), timeout),
        )
    components: dict[str, Component] = {"sql": sql, "redis": redis}
    for connector in daemon.connectors:
        components[f"switch:{connector.switch_id}"] = _guarded(_switch, connector, daemon)
    components["notifier"] = _guarded(_notifier, daemon)
    components["settler"] = _guarded(_settler, daemon)
    return {"status": overall(components), "components": components}


def overall(components: dict[str, Component]) -> str:
    """``down`` if a critical component is down, ``degraded`` if any is not ok, else ok."""
    if any(components[name]["status"] == DOWN for name in CRITICAL if name in components):
        return DOWN
    if any(entry["status"] != OK for entry in components.values()):
        return DEGRADED
    return OK


def http_status(report: dict[str, Any]) -> int:
    """200 when the daemon is ok or degraded, 503 when it is down."""
    return 503 if report.get("status") == DOWN else 200


async def _probe(check: Callable[[], Awaitable[None]], timeout: float) -> Component:  # noqa: ASYNC109
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            await check()
    except TimeoutError:
        return {"status": DOWN, "error": f"no answer within {timeout} s"}
    except Exception as exc:
        return {"status": DOWN, "error": f"{type(exc).__name__}: {exc}"}
    return {"status": OK, "latency_ms": round((time.perf_counter() - started) * 1000, 3)}


async def _select_one(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


async def _ping(client: aioredis.Redis) -> None:
    await client.ping()


def _guarded(check: Callable[..., Component], *args: Any) -> Component:
    try:
        return check(*args)
    except Exception as exc:
        return {"status": DOWN, "error": f"{type(exc).__name__}: {exc}"}


def _switch(connector: SwitchLink, daemon: HealthSubject) -> Component:
    connected = connector.connected
    age = daemon.metrics.last_event_age(connector.switch_id)
    seconds = None if age is None else round(age, 3)
    status = OK if connected else DOWN
    return {"status": status, "connected": connected, "last_event_seconds": seconds}


def _notifier(daemon: HealthSubject) -> Component:
    sinks: dict[str, Component] = {}
    status = OK
    for sink in daemon.notifier.sinks:
        if isinstance(sink, MQTTSink):
            publisher = sink.publisher
            sinks[sink.name] = {
                "connected": publisher.connected,
                "queued": publisher.queued,
                "dropped": publisher.dropped,
            }
            if not publisher.connected:
                status = DEGRADED
        elif isinstance(sink, WebhookSender):
            sinks[sink.name] = {"queued": sink.queued, "dropped": sink.dropped}
    return {"status": status, "enabled": daemon.notifier.enabled, "sinks": sinks}


def _settler(daemon: HealthSubject) -> Component:
    settler = daemon.settler
    if settler is None:
        return {"status": DOWN, "error": "not started"}
    entry: Component = {"status": OK, "queued": settler.queued, "last_error": None}
    error = daemon.metrics.last_error("settlement")
    if error is not None:
        age = error.age()
        entry |= {"last_error": error.message, "last_error_seconds": round(age, 3)}
        if age < RECENT_ERROR_SECONDS:
            entry["status"] = DEGRADED
    return entry
