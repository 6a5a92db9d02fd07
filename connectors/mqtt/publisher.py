"""Publish messages to an MQTT broker at least once, through outages, without ever blocking.

:meth:`MQTTPublisher.enqueue` only appends to a bounded in-memory buffer
(:class:`DropOldestBuffer`: when full, the oldest message is dropped and counted). One task
owns the connection (aiomqtt) and a reconnect loop (:class:`connectors.reconnect.Backoff`):
it publishes the head of the buffer with QoS 1, up to ``inflight`` messages at once, and
removes a message only once the broker acknowledged it (PUBACK: the awaited publish
returned). A message in flight when the connection drops stays in the buffer and is sent
again after the reconnect: delivery is at least once, subscribers dedupe by an id carried
in the payload. The connection is watched while idle too, so ``connected`` is accurate.

URLs: ``mqtt://[user[:password]@]host[:port]`` (port 1883) or ``mqtts://...`` (TLS with
the system CA store, port 8883). The password is never logged.

Errors: a bad URL or option raises ``ValueError`` naming it; connection problems are logged
and retried, never raised to the caller of ``enqueue``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar
from urllib.parse import unquote, urlsplit

import aiomqtt
import structlog

from connectors.reconnect import Backoff, cancel_task

log = structlog.get_logger(__name__)

T = TypeVar("T")

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


class DropOldestBuffer(Generic[T]):
    """A bounded FIFO that never blocks its producer: when full, the oldest item goes.

    Drops are counted (``dropped``) and logged at WARNING once per overflow episode (an
    episode ends when an item is delivered). Single event loop, no locks.
    """

    def __init__(self, capacity: int, *, name: str) -> None:
        if capacity < 1:
            raise ValueError(f"{name}: buffer capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.name = name
        self.dropped = 0
        self._items: deque[T] = deque()
        self._nonempty = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()
        self._overflowing = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T) -> None:
        """Append ``item``; drop (and count) the oldest item first when the buffer is full."""
        if len(self._items) >= self.capacity:
            self._items.popleft()
            self.dropped += 1
            if not self._overflowing:
                self._overflowing = True
                log.warning(
                    "notification buffer full, dropping the oldest",
                    buffer=self.name,
                    capacity=self.capacity,
                    dropped_total=self.dropped,
                )
        self._items.append(item)
        self._empty.clear()
        self._nonempty.set()

    def peek(self, count: int) -> list[T]:
        """The ``count`` oldest items (fewer when the buffer holds fewer), not removed."""
        return [self._items[i] for i in range(min(count, len(self._items)))]

    def discard(self, item: T) -> None:
        """Remove ``item`` (delivered, or given up); a no-op when it was dropped meanwhile."""
        if self._items and self._items[0] is item:
            self._items.popleft()
        else:
            with contextlib.suppress(ValueError):
                self._items.remove(item)
        self._overflowing = False
        if not self._items:
            self._nonempty.clear()
            self._empty.set()

    async def wait_nonempty(self) -> None:
        """Return as soon as the buffer holds an item."""
        while not self._items:
            await self._nonempty.wait()

    async def wait_empty(self) -> None:
        """Return as soon as the buffer is empty."""
        while self._items:
            await self._empty.wait()


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where and how to connect, parsed from an ``mqtt://`` or ``mqtts://`` URL."""

    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        """Parse ``url``; ``ValueError`` (without the password) when it is not valid."""
        parts = urlsplit(url)
        shown = f"{parts.scheme}://{parts.hostname or ''}"
        if parts.scheme not in DEFAULT_PORTS:
            raise ValueError(f"MQTT URL {shown!r}: scheme must be mqtt or mqtts")
        if not parts.hostname:
            raise ValueError(f"MQTT URL {shown!r}: no host")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"MQTT URL {shown!r}: unexpected path, query or fragment")
        try:
            port = parts.port or DEFAULT_PORTS[parts.scheme]
        except ValueError as exc:
            raise ValueError(f"MQTT URL {shown!r}: invalid port") from exc
        return cls(
            host=parts.hostname,
            port=port,
            tls=parts.scheme == "mqtts",
            username=unquote(parts.username) if parts.username is not None else None,
            password=unquote(parts.password) if parts.password is not None else None,
        )


def _observe_disconnection(client: aiomqtt.Client) -> None:
    """Mark the client's disconnection error as seen.

    aiomqtt stores an unexpected disconnection as the exception of a future that only its
    message iterator reads; when the connection drops as our tasks are being cancelled,
    nobody does, and asyncio reports "Future exception was never retrieved" at exit.
    """
    disconnected = getattr(client, "_disconnected", None)
    if (
        isinstance(disconnected, asyncio.Future)
        and disconnected.done()
        and not disconnected.cancelled()
    ):
        disconnected.exception()


@dataclass(frozen=True, slots=True, eq=False)
class _Message:
    topic: str
    payload: bytes


class MQTTPublisher:
    """Buffered, reconnecting, at-least-once MQTT publisher (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        client_id: str,
        buffer: int = 10_000,
        qos: int = 1,
        backoff: Backoff | None = None,
        inflight: int = 32,
        publish_timeout: float = 10.0,
        keepalive: int = 30,
    ) -> None:
        if qos not in (1, 2):
            raise ValueError(f"MQTT qos must be 1 or 2 (at least once), got {qos!r}")
        if inflight < 1:
            raise ValueError(f"MQTT inflight must be at least 1, got {inflight}")
        if not client_id:
            raise ValueError("MQTT client_id must not be empty")
        self._address = BrokerAddress.parse(url)
        self._client_id = client_id
        self._qos = qos
        self._backoff = backoff or Backoff(0.5, 30.0, random.Random())
        self._inflight = inflight
        self._publish_timeout = publish_timeout
        self._keepalive = keepalive
        self._buffer: DropOldestBuffer[_Message] = DropOldestBuffer(buffer, name="mqtt")
        self._task: asyncio.Task[None] | None = None
        self._connected = False
        self.delivered = 0

    @property
    def connected(self) -> bool:
        """True while a broker connection is up."""
        return self._connected

    @property
    def queued(self) -> int:
        """Messages waiting for the broker's acknowledgement (in flight included)."""
        return len(self._buffer)

    @property
    def dropped(self) -> int:
        """Messages dropped because the buffer was full."""
        return self._buffer.dropped

    def enqueue(self, topic: str, payload: bytes) -> None:
        """Queue one message; never blocks, never waits for the broker."""
        self._buffer.put(_Message(topic, payload))

    async def start(self) -> None:
        """Start the connection task (once)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"mqtt-publisher-{self._client_id}")

    async def aclose(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 - flush deadline
        """Deliver what can be delivered within ``timeout`` seconds, then disconnect."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._buffer.wait_empty()
        await cancel_task(self._task)
        self._task = None
        self._connected = False
        if len(self._buffer):
            log.warning("mqtt publisher closed with undelivered messages", queued=self.queued)

    async def _run(self) -> None:
        address = self._address
        where = {"host": address.host, "port": address.port, "client_id": self._client_id}
        while True:
            client = self._client()
            try:
                try:
                    async with client:
                        self._connected = True
                        self._backoff.reset()
                        log.info("mqtt connected", queued=self.queued, **where)
                        await self._serve(client)
                finally:
                    _observe_disconnection(client)
            except aiomqtt.MqttError as exc:
                if self._connected:
                    log.warning("mqtt connection lost", error=str(exc), queued=self.queued, **where)
                else:
                    log.warning("mqtt connection failed", error=str(exc), **where)
            except Exception:  # the task must outlive any surprise: log it and reconnect
                log.exception("mqtt publisher failed", **where)
            finally:
                self._connected = False
            await asyncio.sleep(self._backoff.next_delay())

    def _client(self) -> aiomqtt.Client:
        address = self._address
        client = aiomqtt.Client(
            address.host,
            address.port,
            username=address.username,
            password=address.password,
            identifier=self._client_id,
            tls_context=ssl.create_default_context() if address.tls else None,
            keepalive=self._keepalive,
            clean_session=True,
            timeout=self._publish_timeout,
            max_inflight_messages=self._inflight,
            logger=logging.getLogger("connectors.mqtt.aiomqtt"),
        )
        client.pending_calls_threshold = self._inflight + 1
        return client

    async def _serve(self, client: aiomqtt.Client) -> None:
        """Publish until the connection drops (raises ``MqttError``)."""
        watcher = asyncio.create_task(self._watch(client))
        sender = asyncio.create_task(self._send(client))
        try:
            await asyncio.wait({watcher, sender}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
            sender.cancel()
            # retrieve both outcomes, so that no task error is left unobserved
            outcomes = await asyncio.gather(watcher, sender, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                raise outcome

    @staticmethod
    async def _watch(client: aiomqtt.Client) -> None:
        """Raise ``MqttError`` as soon as the connection drops (nothing is subscribed)."""
        async for _message in client.messages:
            pass

    async def _send(self, client: aiomqtt.Client) -> None:
        while True:
            await self._buffer.wait_nonempty()
            batch = self._buffer.peek(self._inflight)
            results = await asyncio.gather(
                *(self._publish(client, message) for message in batch), return_exceptions=True
            )
            for result in results:
                if isinstance(result, BaseException):
                    raise result

    async def _publish(self, client: aiomqtt.Client, message: _Message) -> None:
        await client.publish(
            message.topic, message.payload, qos=self._qos, timeout=self._publish_timeout
        )
        self._buffer.discard(message)
        self.delivered += 1
