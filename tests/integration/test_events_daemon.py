"""Events out of the real daemon, received by a real MQTT subscriber.

Simulated Asterisk traffic over AMI + FastAGI: rated calls, a cut (the account suspended
during its call), denials, and ONE low-balance event per threshold crossing however many
debit ticks see the balance below it. A broker outage never blocks authorization, and
the events of the outage arrive once the broker is back (within the buffer).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from daemon.notification_settings import MQTTSettings, NotificationSettings, ThresholdSettings
from daemon.settings import Settings
from daemon.simulator.asterisk import CallPlan, SimulatedAsterisk
from daemon.simulator.loadgen import run_calls
from tests.integration.mqtt_fixtures import mqtt_url, private_mqtt_broker  # noqa: F401
from tests.integration.test_mqtt_notifications import Subscriber
from tests.support.daemon_harness import (
    eventually,
    make_settings,
    provision,
    running_daemon,
    unique_switch_id,
)
from tests.support.mqtt import InProcessBroker


def _with_events(base: Settings, url: str, prefix: str, **extra: Any) -> Settings:
    notifications = NotificationSettings(
        mqtt=MQTTSettings(url=url, client_id=f"rk-{prefix}", topic_prefix=prefix), **extra
    )
    return base.model_copy(update={"notifications": notifications})


def _topics(subscriber: Subscriber) -> list[str]:
    return [str(m.topic) for m in subscriber.messages]


async def test_given_calls_when_they_are_rated_cut_and_denied_then_each_event_arrives_once(
    sql_url: str,
    redis_url: str,
    tmp_path: Path,
    mqtt_url: str,  # noqa: F811
) -> None:
    prefix = f"rk-ev-{uuid.uuid4().hex[:8]}"
    rich, poor = f"rich-{prefix}", f"poor-{prefix}"
    ast = SimulatedAsterisk(
        ami_username="billing", ami_secret="billing", fastagi_host="127.0.0.1", fastagi_port=0
    )
    await ast.start()
    try:
        base = make_settings(
            tmp_path, sql_url, redis_url, switch_id=unique_switch_id(), ami_port=ast.ami_port
        )
        # 0.60/min in 1 s increments: 10.00 - a 3 s call = 9.97, below 9.99 once
        settings = _with_events(
            base, mqtt_url, prefix, low_balance=[ThresholdSettings(amount="9.99")]
        )
        await provision(settings, {rich: Decimal("10"), poor: Decimal("9.50")})
        async with (
            Subscriber(mqtt_url, prefix) as subscriber,
            running_daemon(settings) as daemon,
        ):
            await eventually(lambda: all(c.connected for c in daemon.connectors))
            ast.fastagi_port = daemon.fastagi_port
            sessions = daemon.sessions
            assert sessions is not None and daemon.admin is not None
            calls = asyncio.create_task(
                run_calls(
                    ast,
                    [
                        CallPlan(rich, "15550001", "15551001", 0.0, 3.0),
                        CallPlan(rich, "15550002", "15551002", 0.0, 2.0),
                        CallPlan(poor, "15550003", "15551003", 0.0, 8.0),
                        CallPlan(f"nobody-{prefix}", "15550004", "15551004", 0.0, 1.0),
                    ],
                    cps=50,
                )
            )
            await eventually(
                lambda: any(
                    s.account == poor and s.state == "answered" for s in sessions.live_sessions()
                )
            )
            await daemon.admin.suspend(poor)  # its live call is cut at the next tick
            outcomes = await calls
            await eventually(lambda: not sessions.live_sessions())
            assert daemon.settler is not None
            await daemon.settler.wait_idle()
            with contextlib.suppress(TimeoutError):  # the assertions below say what is missing
                await subscriber.wait_until(lambda: len(subscriber.messages) >= 8)
            await asyncio.sleep(0.5)  # nothing more is on its way
    finally:
        await ast.stop()

    topics = _topics(subscriber)
    assert [o.reason for o in outcomes] == ["OK", "OK", "OK", "UNKNOWN_ACCOUNT"]
    assert sorted(topics) == sorted(
        [
            f"{prefix}/{rich}/calls/rated",
            f"{prefix}/{rich}/calls/rated",
            f"{prefix}/{rich}/balance/threshold",  # one crossing, one event
            f"{prefix}/{poor}/calls/cut",
            f"{prefix}/{poor}/balance/threshold",  # below it from the start: once too
            f"{prefix}/{poor}/calls/rated",
            f"{prefix}/nobody-{prefix}/denials",
            f"{prefix}/nobody-{prefix}/calls/rated",  # the denied attempt, rated at 0
        ]
    )
    documents = {str(m.topic): m for m in subscriber.messages}
    assert all(m.qos == 1 for m in subscriber.messages)
    cut = subscriber.documents()[topics.index(f"{prefix}/{poor}/calls/cut")]
    assert cut["payload"]["reason"] == "ACCOUNT_SUSPENDED"
    assert f"{prefix}/nobody-{prefix}/denials" in documents


async def test_given_a_broker_outage_when_calls_are_authorized_then_none_waits_and_no_event_is_lost(
    sql_url: str,
    redis_url: str,
    tmp_path: Path,
    private_mqtt_broker: InProcessBroker,  # noqa: F811
) -> None:
    broker = private_mqtt_broker
    prefix = f"rk-out-{uuid.uuid4().hex[:8]}"
    account = f"acct-{prefix}"
    base = make_settings(tmp_path, sql_url, redis_url, switch_id=unique_switch_id(), ami_port=1)
    settings = _with_events(base, broker.url, prefix)
    await provision(settings, {account: Decimal("10")})
    async with running_daemon(settings) as daemon:
        url = f"http://127.0.0.1:{daemon.http_port}/v1/authorize"
        await broker.astop()
        async with httpx.AsyncClient(timeout=2.0) as client:
            answers = await asyncio.gather(
                *(
                    client.get(
                        url,
                        params={
                            "call_id": f"{prefix}-{i}",
                            "account": f"ghost-{i}-{prefix}" if i % 2 else account,
                            "callee": "15551230000",
                        },
                    )
                    for i in range(40)
                )
            )
        await broker.astart()
        async with Subscriber(broker.url, prefix) as subscriber:
            await subscriber.wait_until(lambda: len(subscriber.messages) >= 20)

    assert all(a.status_code == 200 for a in answers)  # answered during the outage
    assert sum(a.json()["allowed"] for a in answers) == 20
    denied = sorted(str(m.topic) for m in subscriber.messages)
    assert denied == sorted(f"{prefix}/ghost-{i}-{prefix}/denials" for i in range(1, 40, 2))
