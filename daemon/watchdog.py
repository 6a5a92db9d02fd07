"""The systemd watchdog, fed only while the daemon's loops make progress.

Every half watchdog interval (``$WATCHDOG_USEC`` / 2) :class:`ProgressWatchdog` checks
every connector's ``last_progress`` (``daemon/connector_base.py``): when each moved
within the last interval it sends ``WATCHDOG=1``, otherwise it withholds the ping, logs
the stuck switches once and puts them in the STATUS line. Then it probes every connector
again, so that a quiet switch still shows progress at the next check. systemd kills and
restarts (``Restart=on-failure``) a service whose pings stop for ``WatchdogSec``.

What counts as progress, and what does not:

- a connector whose client delivers events, or keeps reconnecting to a dead switch,
  answers the probes: progress (a dead PBX must not restart the daemon);
- a connector whose dispatcher is stuck on one item (a handler awaiting forever), whose
  lock is never released, or whose client task died: no progress;
- the event loop itself: the pings come from a task on it, so a blocked loop stops them
  by construction.

While the daemon drains (``draining()``, after STOPPING=1) the connectors are being
closed on purpose: the pings go on for as long as the loop runs, and systemd's
``TimeoutStopSec`` bounds the drain instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import structlog

from daemon.sd_notify import SystemdNotifier

log = structlog.get_logger(__name__)


class ProgressSource(Protocol):
    """A loop the watchdog watches (every switch connector is one)."""

    switch_id: str
    last_progress: float  # time.monotonic() of the last item through the loop

    def probe(self) -> None:
        """Ask the loop to move ``last_progress`` (it does unless it is stuck)."""


class ProgressWatchdog:
    """Pings ``WATCHDOG=1`` every ``interval / 2`` while every source made progress."""

    def __init__(
        self,
        notifier: SystemdNotifier,
        sources: Callable[[], Sequence[ProgressSource]],
        *,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"watchdog interval must be > 0 seconds: {interval!r}")
        self._notifier = notifier
        self._sources = sources
        self.interval = interval
        self._clock = clock
        self._draining = False
        self._stuck: list[str] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start pinging (once)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="systemd-watchdog")

    def draining(self) -> None:
        """From now on, ping without looking at the connectors (they are being closed)."""
        self._draining = True

    async def stop(self) -> None:
        """Stop pinging."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def stuck(self) -> list[str]:
        """The switch ids of the sources with no progress within the last interval."""
        if self._draining:
            return []
        now = self._clock()
        return [s.switch_id for s in self._sources() if now - s.last_progress > self.interval]

    async def _run(self) -> None:
        while True:
            stuck = self.stuck()
            if not stuck:
                self._notifier.watchdog()
                if self._stuck:
                    log.info("watchdog: every connector makes progress again")
            elif stuck != self._stuck:
                log.error(
                    "watchdog: connector loop stuck, WATCHDOG=1 withheld",
                    switches=stuck,
                    interval=self.interval,
                )
                self._notifier.status(f"connector loop stuck: {', '.join(stuck)}")
            self._stuck = stuck
            if not self._draining:
                for source in self._sources():
                    source.probe()
            await asyncio.sleep(self.interval / 2)
