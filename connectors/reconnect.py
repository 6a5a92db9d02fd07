"""What the AMI and ESL clients share: the ordered event stream and the reconnect pieces.

:class:`EventStream` carries one client's items (switch events, ``SwitchConnected`` /
``SwitchDisconnected``, ``Marker``) to one async handler, in order, from one dispatcher
task; a handler that raises is reported through ``on_failure`` and the stream goes on.
Events of a new connection are held (:meth:`EventStream.hold`) until its
``SwitchConnected`` is announced, so that it always comes first (resync relies on it).
:class:`Backoff` gives the jittered exponential delays between connection attempts;
:func:`serve_until` waits until a connection is lost or the client closes;
:func:`mark_retrieved` keeps a pending request's future, failed by a lost connection
after its caller went away (or reported the loss itself), from being logged as unseen.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from connectors.events import Marker

T = TypeVar("T")


class EventStream(Generic[T]):
    """One client's items, delivered in order to one async handler by one task."""

    def __init__(
        self,
        handler: Callable[[T | Marker], Awaitable[None]],
        on_failure: Callable[[T | Marker], None],
        name: str,
    ) -> None:
        self._handler = handler
        self._on_failure = on_failure
        self._name = name
        self._queue: asyncio.Queue[T | Marker | None] = asyncio.Queue()
        self._dispatcher: asyncio.Task[None] | None = None
        self._held: list[T] | None = None

    def start(self) -> None:
        """Start the dispatcher task (once)."""
        if self._dispatcher is None:
            self._dispatcher = asyncio.create_task(self._dispatch(), name=self._name)

    def put(self, item: T) -> None:
        """Queue ``item``, or hold it while a connection is not announced yet."""
        if self._held is not None:
            self._held.append(item)
        else:
            self._queue.put_nowait(item)

    def hold(self) -> None:
        """Hold the items put from now on (a new connection, not announced yet)."""
        self._held = []

    def announce(self, first: T) -> None:
        """Queue ``first`` (``SwitchConnected``), then the held items; stop holding."""
        held, self._held = self._held, None
        self._queue.put_nowait(first)
        for item in held or ():
            self._queue.put_nowait(item)

    def inject(self, payload: object) -> None:
        """Deliver ``Marker(payload)`` after every item queued so far."""
        self._queue.put_nowait(Marker(payload))

    async def close(self) -> None:
        """Deliver what is queued, then stop the dispatcher."""
        if self._dispatcher is not None:
            self._queue.put_nowait(None)
            await self._dispatcher
            self._dispatcher = None

    async def _dispatch(self) -> None:
        while True:
            item = await self._queue.get()
            if item is None:
                return
            try:
                await self._handler(item)
            except Exception:
                self._on_failure(item)


def mark_retrieved(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception as retrieved (a done callback: its waiter may be gone)."""
    if not future.cancelled():
        future.exception()


class Backoff:
    """Jittered exponential delays: uniform in [b/2, b], b doubling up to ``maximum``."""

    def __init__(self, minimum: float, maximum: float, rng: random.Random) -> None:
        self._minimum = minimum
        self._maximum = maximum
        self._rng = rng
        self._current = minimum

    def reset(self) -> None:
        """Start again from ``minimum`` (after a connection that worked)."""
        self._current = self._minimum

    def next_delay(self) -> float:
        """The delay before the next attempt; doubles the bound for the one after."""
        delay = self._rng.uniform(self._current / 2, self._current)
        self._current = min(self._current * 2, self._maximum)
        return delay


async def sleep_unless(closing: asyncio.Event, delay: float) -> None:
    """Sleep ``delay`` seconds, or less when ``closing`` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(delay):
            await closing.wait()


async def serve_until(lost: asyncio.Future[str], closing: asyncio.Event) -> None:
    """Wait until the connection is ``lost`` or the client is ``closing``."""
    waiter = asyncio.ensure_future(closing.wait())
    either: set[asyncio.Future[Any]] = {lost, waiter}
    try:
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()


async def cancel_task(task: asyncio.Task[None] | None) -> None:
    """Cancel ``task`` (if any) and wait until it has stopped."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
