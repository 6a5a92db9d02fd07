"""The notification schema, topics and fan-out rules (daemon.notifications), no I/O."""

from __future__ import annotations

import json
import re
import tomllib
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from daemon import notifications as events
from daemon.notification_settings import MQTTSettings, NotificationSettings, build_notifier
from daemon.notifications import EventKind, Notification, Notifier


def test_given_a_notification_then_its_document_has_id_time_kind_and_payload() -> None:
    n = events.call_cut("acct-1", switch_id="pbx", call_id="c1", reason="CAP", seconds=7)
    document = json.loads(n.to_json())
    assert document == {
        "id": n.id,
        "kind": "call.cut",
        "tenant": "acct-1",
        "at": n.at,
        "payload": {"switch_id": "pbx", "call_id": "c1", "reason": "CAP", "seconds": 7},
    }
    assert len(n.id) == 32
    assert datetime.fromisoformat(n.at).utcoffset() is not None
    assert n.topic() == "ratekeeper/acct-1/calls/cut"
    assert n.topic("billing/eu") == "billing/eu/acct-1/calls/cut"


def test_given_money_and_times_then_they_are_strings() -> None:
    n = Notification(
        EventKind.SEAT,
        "t",
        {"amount": Decimal("1.50"), "when": datetime(2025, 1, 1, tzinfo=UTC), "list": [Decimal(2)]},
    )
    assert n.payload == {"amount": "1.50", "when": "2025-01-01T00:00:00+00:00", "list": ["2"]}


@pytest.mark.parametrize(
    ("payload", "culprit"),
    [
        ({"cost": 1.5}, "payload.cost"),
        ({"nested": {"x": 0.1}}, "payload.nested.x"),
        ({"items": [1, 2.0]}, r"payload.items\[1\]"),
        ({"when": datetime(2025, 1, 1)}, "naive"),
        ({"cost": Decimal("NaN")}, "finite"),
    ],
)
def test_given_a_float_or_bad_value_then_type_error_naming_it(
    payload: dict[str, Any], culprit: str
) -> None:
    with pytest.raises(TypeError, match=culprit):
        Notification(EventKind.SEAT, "t", payload)


@pytest.mark.parametrize("tenant", ["", "a/b", "a+", "#"])
def test_given_a_tenant_unfit_for_a_topic_then_value_error(tenant: str) -> None:
    with pytest.raises(ValueError, match="tenant"):
        events.account_suspended(tenant, reason="x")


class BrokenSink:
    name = "broken"

    def offer(self, notification: Notification) -> None:
        raise RuntimeError("boom")

    async def start(self) -> None:
        return None

    async def aclose(self, timeout: float) -> None:  # noqa: ASYNC109
        return None


class ListSink(BrokenSink):
    name = "list"

    def __init__(self) -> None:
        self.got: list[Notification] = []

    def offer(self, notification: Notification) -> None:
        self.got.append(notification)


def test_given_a_failing_sink_then_publish_does_not_raise_and_others_still_get_it() -> None:
    good = ListSink()
    notifier = Notifier([BrokenSink(), good])
    n = events.account_suspended("t", reason="x")
    with capture_logs() as logs:
        notifier.publish(n)
    assert good.got == [n]
    assert notifier.failures == 1
    assert logs[0]["event"] == "notification not queued"
    assert logs[0]["sink"] == "broken"


def test_given_mqtt_settings_then_the_password_is_masked_and_unknown_keys_refused() -> None:
    settings = MQTTSettings(url="mqtt://rk:hunter2@broker:1883", client_id="x")
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in settings.model_dump_json()
    with pytest.raises(ValidationError, match="topic_prefx"):
        NotificationSettings.model_validate({"mqtt": {"url": "mqtt://b", "topic_prefx": "x"}})
    with pytest.raises(ValidationError, match="scheme must be mqtt or mqtts"):
        MQTTSettings(url="http://broker")
    with pytest.raises(ValidationError, match="qos"):
        MQTTSettings(url="mqtt://broker", qos=0)  # type: ignore[arg-type]


def test_given_the_documented_configuration_then_it_is_valid() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "events.md").read_text("utf-8")
    (block,) = re.findall(r"```toml\n(.*?)```", text, flags=re.DOTALL)
    settings = NotificationSettings.model_validate(tomllib.loads(block)["notifications"])
    assert settings.mqtt is not None
    assert settings.mqtt.topic_prefix == "ratekeeper"
    assert settings.webhook is not None
    assert settings.webhook.secret is not None
    assert [r.key for r in settings.threshold_rules()] == ["amount:5000000", "minutes:10"]
    assert build_notifier(settings).enabled
