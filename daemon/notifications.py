"""Event notifications: the schema, the topics, and the fan-out to MQTT and a webhook.

Every event is a :class:`Notification` (kind, tenant, payload, ``id``, ``at``), built by
one helper per kind below. Topics (``<prefix>`` is ``ratekeeper`` by default; docs/events.md
lists the payload fields of each kind)::

    <prefix>/<tenant>/calls/rated          call.rated          a call was rated and charged
    <prefix>/<tenant>/calls/cut            call.cut            a live call was hung up
    <prefix>/<tenant>/denials              denial              an authorization was refused
    <prefix>/<tenant>/seats                seat                an agent seat logged in/out/refused
    <prefix>/<tenant>/balance/threshold    balance.threshold   a low-balance rule was crossed
    <prefix>/<tenant>/trial/expired        trial.expired       a trial ended
    <prefix>/<tenant>/account/suspended    account.suspended   an account was suspended

Money is a string of a ``Decimal`` (``"1.234500"``), never a float; a float anywhere in a
payload is refused when the notification is built.

:meth:`Notifier.publish` never blocks and never raises: it hands the notification to each
sink (the MQTT publisher, the webhook sender), which keeps it in a bounded buffer of its
own and delivers it from its own task. :class:`NullNotifier` is the notifier when nothing
is configured; building a notification costs a uuid and a timestamp, so hot paths check
``notifier.enabled`` first.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from balance.thresholds import ThresholdRule
from connectors.mqtt.publisher import MQTTPublisher
from tariffs.money import from_micros

if TYPE_CHECKING:
    from balance.rated_calls import RatedCallRecord

log = structlog.get_logger(__name__)

DEFAULT_TOPIC_PREFIX = "ratekeeper"
_TOPIC_SPECIALS = frozenset("/+#\x00")


class EventKind(StrEnum):
    """The kinds of notification; each has one topic below the tenant."""

    CALL_RATED = "call.rated"
    CALL_CUT = "call.cut"
    DENIAL = "denial"
    SEAT = "seat"
    BALANCE_THRESHOLD = "balance.threshold"
    TRIAL_EXPIRED = "trial.expired"
    ACCOUNT_SUSPENDED = "account.suspended"

    @property
    def topic(self) -> str:
        """The topic below ``<prefix>/<tenant>/``."""
        return _TOPICS[self]


_TOPICS = {
    EventKind.CALL_RATED: "calls/rated",
    EventKind.CALL_CUT: "calls/cut",
    EventKind.DENIAL: "denials",
    EventKind.SEAT: "seats",
    EventKind.BALANCE_THRESHOLD: "balance/threshold",
    EventKind.TRIAL_EXPIRED: "trial/expired",
    EventKind.ACCOUNT_SUSPENDED: "account/suspended",
}


def _json_safe(value: Any, where: str) -> Any:
    """``value`` with Decimals and datetimes as strings; TypeError naming ``where`` else."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise TypeError(f"notification payload {where}: not a finite amount: {value}")
        return f"{value:f}"
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise TypeError(f"notification payload {where}: naive datetime {value!r}")
        return value.astimezone(UTC).isoformat()
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise TypeError(
        f"notification payload {where}: {type(value).__name__} is not allowed "
        f"(money is a Decimal, never a float): {value!r}"
    )


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _new_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class Notification:
    """One event: ``kind`` for ``tenant`` (an account id), a JSON-safe ``payload``."""

    kind: EventKind
    tenant: str
    payload: dict[str, Any]
    id: str = field(default_factory=_new_id)
    at: str = field(default_factory=_now_iso)

    def __post_init__(self) -> None:
        if not isinstance(self.kind, EventKind):
            object.__setattr__(self, "kind", EventKind(self.kind))
        if not self.tenant or _TOPIC_SPECIALS & set(self.tenant):
            raise ValueError(f"notification tenant {self.tenant!r}: empty, or has / + # or NUL")
        object.__setattr__(self, "payload", _json_safe(self.payload, "payload"))

    def topic(self, prefix: str = DEFAULT_TOPIC_PREFIX) -> str:
        """``<prefix>/<tenant>/<kind's topic>``."""
        return f"{prefix}/{self.tenant}/{self.kind.topic}"

    def to_dict(self) -> dict[str, Any]:
        """The JSON document sent to MQTT and the webhook."""
        return {
            "id": self.id,
            "kind": str(self.kind),
            "tenant": self.tenant,
            "at": self.at,
            "payload": self.payload,
        }

    def to_json(self) -> bytes:
        """``to_dict`` as compact UTF-8 JSON."""
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True).encode()


# --- one builder per kind (the payload fields are documented in docs/events.md) ---------


def call_rated(record: RatedCallRecord) -> Notification:
    """A call was rated and charged (after its SQL transaction committed)."""
    return Notification(
        EventKind.CALL_RATED,
        record.account_id,
        {
            "switch_id": record.switch_id,
            "call_id": record.call_id,
            "account": record.account_id,
            "caller": record.caller,
            "callee": record.callee,
            "destination": record.destination,
            "prefix": record.prefix,
            "deck": record.deck,
            "disposition": record.disposition,
            "cause": record.cause,
            "billable_seconds": record.billable_seconds,
            "cost": from_micros(record.cost_micros),
            "rate": from_micros(record.rate_micros),
            "currency": record.currency,
            "carrier": record.carrier,
            "bundle": record.bundle,
            "bundle_seconds": record.bundle_seconds,
            "started_at_us": record.started_at_us,
            "answered_at_us": record.answered_at_us,
            "ended_at_us": record.ended_at_us,
        },
    )


def call_cut(
    tenant: str, *, switch_id: str, call_id: str, reason: str, seconds: int
) -> Notification:
    """A live call was hung up by ratekeeper (``reason``: a stable code such as
    ``INSUFFICIENT_CREDIT``), after ``seconds`` of talk time."""
    payload = {"switch_id": switch_id, "call_id": call_id, "reason": reason, "seconds": seconds}
    return Notification(EventKind.CALL_CUT, tenant, payload)


def denial(
    tenant: str, *, switch_id: str, call_id: str, caller: str, callee: str, reason: str
) -> Notification:
    """An authorization was refused with the stable ``reason`` code."""
    payload = {
        "switch_id": switch_id,
        "call_id": call_id,
        "caller": caller,
        "callee": callee,
        "reason": reason,
    }
    return Notification(EventKind.DENIAL, tenant, payload)


def seat(
    tenant: str,
    *,
    switch_id: str,
    agent: str,
    state: str,
    seats_in_use: int,
    seat_limit: int | None,
) -> Notification:
    """An agent seat changed: ``state`` is ``logged_in``, ``logged_out`` or ``refused``."""
    if state not in ("logged_in", "logged_out", "refused"):
        raise ValueError(f"seat state {state!r}: expected logged_in, logged_out or refused")
    payload = {
        "switch_id": switch_id,
        "agent": agent,
        "state": state,
        "seats_in_use": seats_in_use,
        "seat_limit": seat_limit,
    }
    return Notification(EventKind.SEAT, tenant, payload)


def balance_threshold(
    tenant: str,
    *,
    rule: ThresholdRule,
    available_micros: int,
    minutes_left: int | None,
    currency: str,
) -> Notification:
    """The available credit fell to or below a low-balance ``rule``."""
    payload = {
        "rule": rule.describe(),
        "available": from_micros(available_micros),
        "minutes_left": minutes_left,
        "currency": currency,
    }
    return Notification(EventKind.BALANCE_THRESHOLD, tenant, payload)


def trial_expired(tenant: str, *, plan: str, trial_ended_at: datetime) -> Notification:
    """The account's trial of ``plan`` ended (its calls are now denied TRIAL_EXPIRED)."""
    payload = {"plan": plan, "trial_ended_at": trial_ended_at}
    return Notification(EventKind.TRIAL_EXPIRED, tenant, payload)


def account_suspended(tenant: str, *, reason: str) -> Notification:
    """The account was suspended (its calls are now denied ACCOUNT_SUSPENDED)."""
    return Notification(EventKind.ACCOUNT_SUSPENDED, tenant, {"reason": reason})


# --- fan-out -----------------------------------------------------------------------------


class NotificationSink(Protocol):
    """A destination with its own bounded buffer and delivery task."""

    name: str

    def offer(self, notification: Notification) -> None:
        """Buffer ``notification`` for delivery; must not block."""
        ...

    async def start(self) -> None:
        """Start delivering."""
        ...

    async def aclose(self, timeout: float) -> None:  # noqa: ASYNC109 - flush deadline
        """Deliver what can be delivered within ``timeout`` seconds, then stop."""
        ...


class MQTTSink:
    """Publishes each notification as JSON on its topic (``<prefix>/<tenant>/...``)."""

    name = "mqtt"

    def __init__(self, publisher: MQTTPublisher, *, topic_prefix: str) -> None:
        self.publisher = publisher
        self._prefix = topic_prefix

    def offer(self, notification: Notification) -> None:
        """Queue the notification in the publisher's buffer."""
        self.publisher.enqueue(notification.topic(self._prefix), notification.to_json())

    async def start(self) -> None:
        """Start the publisher's connection task."""
        await self.publisher.start()

    async def aclose(self, timeout: float) -> None:  # noqa: ASYNC109 - flush deadline
        """Flush the publisher's buffer for up to ``timeout`` seconds, then disconnect."""
        await self.publisher.aclose(timeout)


class Notifier:
    """Fans each notification out to every sink; ``publish`` never blocks nor raises."""

    def __init__(self, sinks: Sequence[NotificationSink]) -> None:
        self.sinks = tuple(sinks)
        self.failures = 0

    @property
    def enabled(self) -> bool:
        """True when at least one sink is configured."""
        return bool(self.sinks)

    def publish(self, notification: Notification) -> None:
        """Hand ``notification`` to every sink's buffer (drops the oldest when full)."""
        for sink in self.sinks:
            try:
                sink.offer(notification)
            except Exception:
                self.failures += 1
                log.exception(
                    "notification not queued",
                    sink=sink.name,
                    kind=str(notification.kind),
                    notification_id=notification.id,
                )

    async def start(self) -> None:
        """Start every sink's delivery task."""
        for sink in self.sinks:
            await sink.start()

    async def aclose(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 - flush deadline
        """Flush every sink (concurrently) for up to ``timeout`` seconds, then stop them."""
        results = await asyncio.gather(
            *(sink.aclose(timeout) for sink in self.sinks), return_exceptions=True
        )
        for sink, result in zip(self.sinks, results, strict=True):
            if isinstance(result, Exception):
                log.error(
                    "notification sink did not close cleanly", sink=sink.name, exc_info=result
                )


class NullNotifier(Notifier):
    """The notifier when no destination is configured: ``publish`` does nothing."""

    def __init__(self) -> None:
        super().__init__(())

    def publish(self, notification: Notification) -> None:
        """Do nothing."""
