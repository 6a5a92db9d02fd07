"""Notifications over a real MQTT broker, received by a real aiomqtt subscriber.

The broker is Mosquitto when ``RATEKEEPER_TEST_MQTT_URL`` is set, else an in-process amqtt
broker; outage tests always use a private amqtt broker that they stop and restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import aiomqtt
import pytest
from structlog.testing import capture_logs

from balance.rated_calls import RatedCallRecord
from balance.thresholds import ThresholdRule
from connectors.mqtt.publisher import BrokerAddress, MQTTPublisher
from connectors.reconnect import Backoff
from daemon import notifications as events
from daemon.notification_settings import MQTTSettings, NotificationSettings, build_notifier
from daemon.notifications import MQTTSink, Notification, Notifier
from tests.integration.mqtt_fixtures import mqtt_url, private_mqtt_broker  # noqa: F401
from tests.support.mqtt import InProcessBroker, TcpProxy

WAIT = 30.0  # a guard against hanging forever, not a speed assertion


class Subscriber:
    """A real MQTT client subscribed to ``<prefix>/#`` with QoS 1, keeping what it gets."""

    def __init__(self, url: str, prefix: str) -> None:
        address = BrokerAddress.parse(url)
        self._client = aiomqtt.Client(
            address.host,
            address.port,
            username=address.username,
            password=address.password,
            identifier=f"test-sub-{uuid.uuid4().hex[:12]}",
        )
        self._prefix = prefix
        self.messages: list[aiomqtt.Message] = []
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def __aenter__(self) -> Subscriber:
        await self._client.__aenter__()
        await self._client.subscribe(f"{self._prefix}/#", qos=1)
        self._task = asyncio.create_task(self._collect())
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(aiomqtt.MqttError):  # the broker went away first
            await self._client.__aexit__(None, None, None)
        if self._task is not None:  # ends by itself now, having seen the disconnection
            await asyncio.wait_for(self._task, WAIT)

    async def _collect(self) -> None:
        try:
            async for message in self._client.messages:
                self.messages.append(message)
                self._changed.set()
        except aiomqtt.MqttError:
            return  # broker stopped: the test reconnects with a new subscriber

    def documents(self) -> list[dict[str, Any]]:
        """The JSON documents received, in order."""
        return [json.loads(bytes(m.payload)) for m in self.messages]

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Wait until ``condition()`` holds (fails after ``WAIT`` seconds)."""
        async with asyncio.timeout(WAIT):
            while not condition():
                self._changed.clear()
                await self._changed.wait()


async def _eventually(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` until it holds (fails after ``WAIT`` seconds)."""
    async with asyncio.timeout(WAIT):
        while not condition():  # noqa: ASYNC110 - plain attributes of the code under test
            await asyncio.sleep(0.01)


def _prefix() -> str:
    return f"rk-test-{uuid.uuid4().hex[:10]}"


def _notifier(url: str, prefix: str, client_id: str, **mqtt: Any) -> Notifier:
    settings = NotificationSettings(
        mqtt=MQTTSettings(url=url, client_id=client_id, topic_prefix=prefix, **mqtt)
    )
    return build_notifier(settings)


def _publisher(notifier: Notifier) -> MQTTPublisher:
    (sink,) = notifier.sinks
    assert isinstance(sink, MQTTSink)
    return sink.publisher


@pytest.fixture
async def tenant() -> AsyncIterator[str]:
    """A unique tenant (account id) per test."""
    yield f"acct-{uuid.uuid4().hex[:8]}"


def _one_of_each_kind(tenant: str) -> list[Notification]:
    record = RatedCallRecord(
        switch_id="pbx-1",
        call_id="call-1",
        account_id=tenant,
        caller="1001",
        callee="33123456789",
        started_at_us=1_700_000_000_000_000,
        answered_at_us=1_700_000_002_000_000,
        ended_at_us=1_700_000_062_000_000,
        billsec_us=60_000_000,
        billable_seconds=60,
        cost_micros=123_456,
        currency="EUR",
        deck="retail",
        prefix="331",
        destination="France Paris",
        rate_micros=123_456,
        disposition="ANSWER",
        cause="16",
    )
    return [
        events.call_rated(record),
        events.call_cut(
            tenant, switch_id="pbx-1", call_id="call-2", reason="INSUFFICIENT_CREDIT", seconds=90
        ),
        events.denial(
            tenant,
            switch_id="pbx-1",
            call_id="call-3",
            caller="1001",
            callee="999",
            reason="NO_RATE",
        ),
        events.seat(
            tenant,
            switch_id="pbx-1",
            agent="Agent:1001",
            state="logged_in",
            seats_in_use=3,
            seat_limit=5,
        ),
        events.balance_threshold(
            tenant,
            rule=ThresholdRule(amount_micros=5_000_000),
            available_micros=4_990_000,
            minutes_left=None,
            currency="EUR",
        ),
        events.trial_expired(
            tenant, plan="starter", trial_ended_at=datetime(2025, 1, 31, tzinfo=UTC)
        ),
        events.account_suspended(tenant, reason="manual"),
    ]


async def test_given_a_subscriber_when_every_kind_is_published_then_each_arrives_on_its_topic(
    mqtt_url: str,  # noqa: F811
    tenant: str,
) -> None:
    prefix = _prefix()
    notifier = _notifier(mqtt_url, prefix, f"test-pub-{uuid.uuid4().hex[:12]}")
    sent = _one_of_each_kind(tenant)
    async with Subscriber(mqtt_url, prefix) as subscriber:
        await notifier.start()
        for notification in sent:
            notifier.publish(notification)
        await subscriber.wait_until(lambda: len(subscriber.messages) >= len(sent))
        await notifier.aclose(5.0)

    got = {str(m.topic): m for m in subscriber.messages}
    expected_topics = {
        "call.rated": f"{prefix}/{tenant}/calls/rated",
        "call.cut": f"{prefix}/{tenant}/calls/cut",
        "denial": f"{prefix}/{tenant}/denials",
        "seat": f"{prefix}/{tenant}/seats",
        "balance.threshold": f"{prefix}/{tenant}/balance/threshold",
        "trial.expired": f"{prefix}/{tenant}/trial/expired",
        "account.suspended": f"{prefix}/{tenant}/account/suspended",
    }
    assert set(got) == set(expected_topics.values())
    for notification in sent:
        message = got[expected_topics[str(notification.kind)]]
        assert message.qos == 1
        document = json.loads(bytes(message.payload))
        assert document == notification.to_dict()
    rated = json.loads(bytes(got[expected_topics["call.rated"]].payload))
    assert rated["payload"]["cost"] == "0.123456"
    assert Decimal(rated["payload"]["cost"]) == Decimal("0.123456")
    threshold = json.loads(bytes(got[expected_topics["balance.threshold"]].payload))
    assert threshold["payload"]["available"] == "4.990000"
    assert threshold["payload"]["rule"] == {"amount": "5.000000"}
    assert _publisher(notifier).dropped == 0


async def test_given_a_broker_outage_when_publishing_then_nothing_blocks_and_all_arrive_after(
    private_mqtt_broker: InProcessBroker,  # noqa: F811
    tenant: str,
) -> None:
    broker = private_mqtt_broker
    prefix = _prefix()
    pub_id = f"test-pub-{uuid.uuid4().hex[:12]}"
    notifier = _notifier(broker.url, prefix, pub_id, reconnect_min=0.05, reconnect_max=0.2)
    publisher = _publisher(notifier)
    sent = [
        events.call_cut(tenant, switch_id="pbx-1", call_id=f"c{i}", reason="CAP", seconds=i)
        for i in range(200)
    ]
    await notifier.start()
    async with Subscriber(broker.url, prefix) as before:
        for notification in sent[:50]:
            notifier.publish(notification)
        await before.wait_until(lambda: len(before.messages) >= 50)
        broker.gate.refuse(pub_id)  # after the restart the subscriber must be in first
        await broker.astop()

    await _eventually(lambda: not publisher.connected)
    for notification in sent[50:]:
        notifier.publish(notification)  # returns at once: the broker is down
    assert publisher.queued >= 150

    await broker.astart()
    async with Subscriber(broker.url, prefix) as after:
        broker.gate.admit(pub_id)
        expected = {n.id for n in sent[50:]}
        await after.wait_until(lambda: expected <= {d["id"] for d in after.documents()})
        await notifier.aclose(5.0)

    received = [d["id"] for d in before.documents() + after.documents()]
    assert set(received) == {n.id for n in sent}
    assert publisher.dropped == 0
    assert publisher.queued == 0
    order = [d["payload"]["call_id"] for d in after.documents()]
    assert order == sorted(set(order), key=lambda call: int(call[1:]))  # oldest first


async def test_given_messages_in_flight_when_the_connection_drops_then_they_are_sent_again(
    mqtt_url: str,  # noqa: F811
    tenant: str,
) -> None:
    prefix = _prefix()
    proxy = TcpProxy(mqtt_url)
    await proxy.start()
    notifier = _notifier(
        proxy.url,
        prefix,
        f"test-pub-{uuid.uuid4().hex[:12]}",
        reconnect_min=0.05,
        reconnect_max=0.2,
    )
    publisher = _publisher(notifier)
    sent = [events.account_suspended(tenant, reason=f"r{i}") for i in range(50)]
    try:
        async with Subscriber(mqtt_url, prefix) as subscriber:
            await notifier.start()
            for notification in sent[:20]:
                notifier.publish(notification)
            await subscriber.wait_until(lambda: len(subscriber.messages) >= 20)

            proxy.black_hole = True  # PUBLISHes leave, no PUBACK comes back
            for notification in sent[20:]:
                notifier.publish(notification)
            in_flight = sum(len(n.to_json()) for n in sent[20:])
            await _eventually(lambda: proxy.swallowed >= in_flight)
            assert publisher.queued == 30  # not acknowledged: still buffered
            proxy.drop()
            proxy.black_hole = False

            expected = {n.id for n in sent}
            await subscriber.wait_until(
                lambda: expected <= {d["id"] for d in subscriber.documents()}
            )
            await notifier.aclose(5.0)
    finally:
        await proxy.close()
    assert publisher.queued == 0
    assert publisher.dropped == 0


async def test_given_a_full_buffer_when_more_arrive_then_the_oldest_are_dropped_and_counted(
    private_mqtt_broker: InProcessBroker,  # noqa: F811
) -> None:
    broker = private_mqtt_broker
    prefix = _prefix()
    pub_id = f"test-pub-{uuid.uuid4().hex[:12]}"
    await broker.astop()
    publisher = MQTTPublisher(
        broker.url, client_id=pub_id, buffer=10, backoff=Backoff(0.05, 0.2, random.Random(7))
    )
    await publisher.start()
    with capture_logs() as logs:
        for i in range(25):
            publisher.enqueue(f"{prefix}/t/{i}", str(i).encode())
    assert publisher.queued == 10
    assert publisher.dropped == 15
    full = [
        entry for entry in logs if entry["event"] == "notification buffer full, dropping the oldest"
    ]
    assert len(full) == 1  # one warning per overflow episode, not one per message
    assert full[0]["log_level"] == "warning"

    broker.gate.refuse(pub_id)
    await broker.astart()
    async with Subscriber(broker.url, prefix) as subscriber:
        broker.gate.admit(pub_id)
        await subscriber.wait_until(lambda: len(subscriber.messages) >= 10)
        await publisher.aclose(5.0)

    assert [bytes(m.payload) for m in subscriber.messages] == [
        str(i).encode() for i in range(15, 25)
    ]
    assert publisher.queued == 0


async def test_given_credentials_in_the_url_then_the_password_is_never_logged(
    private_mqtt_broker: InProcessBroker,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = private_mqtt_broker
    password = f"pw-{uuid.uuid4().hex}"
    prefix = _prefix()
    url = f"mqtt://rk-user:{password}@127.0.0.1:{broker.port}"
    notifier = _notifier(url, prefix, f"test-pub-{uuid.uuid4().hex[:12]}")
    caplog.set_level(logging.DEBUG)
    with capture_logs() as logs:
        async with Subscriber(broker.url, prefix) as subscriber:
            await notifier.start()
            notifier.publish(events.account_suspended("t1", reason="x"))
            await subscriber.wait_until(lambda: len(subscriber.messages) >= 1)
            await notifier.aclose(5.0)
    assert any(entry["event"] == "mqtt connected" for entry in logs)
    assert password not in repr(logs)
    assert password not in caplog.text
    assert password not in repr(NotificationSettings(mqtt=MQTTSettings(url=url, client_id="x")))


async def test_given_no_destination_then_the_null_notifier_accepts_and_does_nothing(
    tenant: str,
) -> None:
    notifier = build_notifier(NotificationSettings())
    assert not notifier.enabled
    await notifier.start()
    notifier.publish(events.account_suspended(tenant, reason="manual"))
    await notifier.aclose(1.0)
