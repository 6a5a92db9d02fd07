"""``[notifications]`` settings and the notifier they build.

::

    [notifications.mqtt]                 # optional: events to an MQTT broker
    url = "mqtts://ratekeeper:secret@broker.example.net"
    topic_prefix = "ratekeeper"
    buffer = 10000                       # messages kept while the broker is away

    [notifications.webhook]              # optional: events POSTed as JSON
    url = "https://hooks.example.net/ratekeeper"
    secret = "shared-hmac-secret"        # X-Ratekeeper-Signature: sha256=<hex>
    retries = 5
    timeout = 10.0
    buffer = 1000

    [[notifications.low_balance]]        # default thresholds of every account
    amount = "5.00"
    [[notifications.low_balance]]
    minutes = 10

Every model forbids unknown keys. URL passwords and the webhook secret are masked in
``repr`` and JSON dumps. Nothing configured builds a :class:`NullNotifier`.
"""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Iterator
from decimal import Decimal
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_serializer,
    field_validator,
    model_validator,
)

from balance.thresholds import ThresholdRule
from connectors.mqtt.publisher import BrokerAddress, MQTTPublisher
from connectors.reconnect import Backoff
from daemon.notifications import (
    DEFAULT_TOPIC_PREFIX,
    MQTTSink,
    NotificationSink,
    Notifier,
    NullNotifier,
)
from daemon.webhook import WebhookSender, WebhookTarget
from tariffs.money import MoneyError, parse_amount, to_micros


def redact_url(url: str) -> str:
    """``url`` with the password of its user info replaced by ``***``.

    The same rule as ``daemon.settings.redact_url``, kept here so that ``daemon.settings``
    can import this module without an import cycle.
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _WithSecretUrl(_Section):
    """A section whose required ``url`` may carry a password: masked in repr and JSON."""

    url: str

    @field_serializer("url", when_used="json")
    def _mask_url(self, url: str) -> str:
        return redact_url(url)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, redact_url(value) if name == "url" else value


def default_client_id() -> str:
    """``ratekeeper-<host>-<pid>``: unique per daemon process."""
    return f"ratekeeper-{socket.gethostname()}-{os.getpid()}"


class MQTTSettings(_WithSecretUrl):
    """``[notifications.mqtt]``: the broker (``mqtt://`` or ``mqtts://``), at least once."""

    client_id: str = Field(default_factory=default_client_id, min_length=1, max_length=128)
    topic_prefix: str = Field(default=DEFAULT_TOPIC_PREFIX, pattern=r"^[^#+]*[^#+/]$")
    buffer: int = Field(default=10_000, ge=1)
    qos: Literal[1] = 1
    reconnect_min: float = Field(default=0.5, gt=0)
    reconnect_max: float = Field(default=30.0, gt=0)

    @field_validator("url")
    @classmethod
    def _valid_url(cls, url: str) -> str:
        BrokerAddress.parse(url)
        return url

    @model_validator(mode="after")
    def _ordered_delays(self) -> MQTTSettings:
        if self.reconnect_min > self.reconnect_max:
            raise ValueError("reconnect_min must not exceed reconnect_max")
        return self


class WebhookSettings(_WithSecretUrl):
    """``[notifications.webhook]``: an ``http(s)://`` endpoint receiving each event."""

    secret: SecretStr | None = None
    retries: int = Field(default=5, ge=0, le=100)
    timeout: float = Field(default=10.0, gt=0)
    buffer: int = Field(default=1000, ge=1)
    retry_min: float = Field(default=1.0, gt=0)
    retry_max: float = Field(default=60.0, gt=0)

    @field_validator("url")
    @classmethod
    def _valid_url(cls, url: str) -> str:
        WebhookTarget.parse(url)
        return url

    @model_validator(mode="after")
    def _ordered_delays(self) -> WebhookSettings:
        if self.retry_min > self.retry_max:
            raise ValueError("retry_min must not exceed retry_max")
        return self


class ThresholdSettings(_Section):
    """One low-balance threshold: ``amount = "5.00"`` or ``minutes = 10`` (exactly one)."""

    amount: str | None = None
    minutes: int | None = Field(default=None, ge=0)

    @field_validator("amount")
    @classmethod
    def _valid_amount(cls, amount: str | None) -> str | None:
        if amount is not None:
            try:
                parse_amount(amount, allow_negative=False)
            except MoneyError as exc:
                raise ValueError(str(exc)) from exc
        return amount

    def rule(self) -> ThresholdRule:
        """The threshold as a rule (amount in micro-units)."""
        if (self.amount is None) == (self.minutes is None):
            raise ValueError("a threshold needs exactly one of amount and minutes")
        if self.amount is not None:
            return ThresholdRule(amount_micros=to_micros(Decimal(self.amount.strip())))
        return ThresholdRule(minutes=self.minutes)

    @model_validator(mode="after")
    def _exactly_one(self) -> ThresholdSettings:
        if (self.amount is None) == (self.minutes is None):
            raise ValueError("a threshold needs exactly one of amount and minutes")
        return self


class NotificationSettings(_Section):
    """``[notifications]``: where events go, and the default low-balance thresholds."""

    mqtt: MQTTSettings | None = None
    webhook: WebhookSettings | None = None
    low_balance: list[ThresholdSettings] = Field(default_factory=list)

    def threshold_rules(self) -> tuple[ThresholdRule, ...]:
        """The default thresholds of every account, as rules."""
        return tuple(threshold.rule() for threshold in self.low_balance)


def build_notifier(settings: NotificationSettings) -> Notifier:
    """One sink per configured destination; a ``NullNotifier`` when there is none."""
    sinks: list[NotificationSink] = []
    if settings.mqtt is not None:
        mqtt = settings.mqtt
        publisher = MQTTPublisher(
            mqtt.url,
            client_id=mqtt.client_id,
            buffer=mqtt.buffer,
            qos=mqtt.qos,
            backoff=Backoff(mqtt.reconnect_min, mqtt.reconnect_max, random.Random()),
        )
        sinks.append(MQTTSink(publisher, topic_prefix=mqtt.topic_prefix))
    if settings.webhook is not None:
        hook = settings.webhook
        sinks.append(
            WebhookSender(
                hook.url,
                secret=hook.secret.get_secret_value() if hook.secret else None,
                timeout=hook.timeout,
                retries=hook.retries,
                backoff=Backoff(hook.retry_min, hook.retry_max, random.Random()),
                buffer=hook.buffer,
            )
        )
    return Notifier(sinks) if sinks else NullNotifier()
