"""Settlement: rated calls written to SQL in batches, exactly once, then Redis settled.

One SQL transaction carries many calls (``RatedCallWriter.write``). Only a call that the
transaction newly wrote debits the hot balance in Redis; a duplicate (the same call seen
again, after a reconnect or a restart) only releases what it still holds. A failed write
is retried with backoff: nothing is dropped. A call under a reseller chain settles every
level's reservation at its own cost (``daemon.reseller_chain.settle_chain``). A call
of an account with plans is then counted in its month's tier usage and settles the
bundled seconds it used, once per call (as ``balance.bundles.settle_call_plans``, in the
period the seconds were held in); a call without plans does none of it. ``close()``
drains the queue, shielded from cancellation, so that SIGTERM never loses a started
settlement.

Up to ``concurrency`` batches are written at once (``[database] write_concurrency``, on
PostgreSQL; SQLite has one writer): each in its own transaction on its own connection,
so the database works on one batch while the daemon sends the next. Exactly once still
holds: a call in two batches at once is inserted by one, and the other, which waits on
its unique key until the first commits, sees a duplicate and only releases; the Redis
scripts (settle, release, and their bundle forms) give the same end state in either
order. Batches insert their calls in key order, so two never deadlock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

import structlog

from balance.bundles import BundleService
from balance.caps import SharedCaps
from balance.live import LiveState
from balance.rated_calls import InvalidRatedCall, RatedCallRecord, RatedCallWriter
from balance.usage import TierService, call_period
from daemon.metrics import Metrics
from daemon.reseller_chain import settle_chain

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Settlement:
    """One finished call to write: its rated record and the reservation it held.

    ``bundle_period``: the period its bundled seconds were held in (the authorization's
    month; '' = the month of the call's start).
    """

    record: RatedCallRecord
    reservation_key: str
    bundle_period: str = ""


class Settler:
    """Batches settlements into single SQL transactions and settles Redis after commit.

    ``concurrency``: how many batches may be in flight at once (1: one after the other).
    """

    def __init__(
        self,
        writer: RatedCallWriter,
        live: LiveState,
        *,
        batch_size: int = 500,
        batch_delay: float = 0.02,
        concurrency: int = 1,
        on_written: Callable[[RatedCallRecord, bool], None] | None = None,
        tiers: TierService | None = None,
        bundles: BundleService | None = None,
        timezone_of: Callable[[str], Awaitable[str]] | None = None,
        caps: SharedCaps | None = None,
        after_settle: Callable[[RatedCallRecord, bool], Awaitable[None]] | None = None,
    ) -> None:
        self._caps = caps
        self._after_settle = after_settle
        self.metrics: Metrics | None = None  # set by the daemon: SQL and Redis errors
        self._writer = writer
        self._tiers = tiers
        self._bundles = bundles
        self._timezone_of = timezone_of
        self._live = live
        self._batch_size = batch_size
        self._batch_delay = batch_delay
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self._slots = asyncio.Semaphore(concurrency)
        self._in_flight: set[asyncio.Task[None]] = set()
        self._unsettled = 0  # submitted, not yet written and settled
        self._queue: asyncio.Queue[Settlement | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._on_written = on_written
        self._idle = asyncio.Event()
        self._idle.set()
        self.written = 0
        self.duplicates = 0
        self.rejected = 0

    def start(self) -> None:
        """Start the writer task."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="settler")

    @property
    def queued(self) -> int:
        """Settlements waiting to be written."""
        return self._queue.qsize()

    def submit(self, settlement: Settlement) -> None:
        """Queue a finished call; returns at once."""
        self._idle.clear()
        self._unsettled += 1
        self._queue.put_nowait(settlement)

    async def wait_idle(self) -> None:
        """Wait until every submitted settlement is written and settled."""
        await self._idle.wait()

    async def close(self) -> None:
        """Drain every queued settlement, then stop (shielded from cancellation)."""
        if self._task is None:
            return
        self._queue.put_nowait(None)
        await asyncio.shield(self._task)
        self._task = None

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                break
            await self._slots.acquire()  # at most ``concurrency`` batches in flight
            batch = [first]
            deadline = asyncio.get_running_loop().time() + self._batch_delay
            while len(batch) < self._batch_size:
                timeout = deadline - asyncio.get_running_loop().time()
                try:
                    item = (
                        self._queue.get_nowait()
                        if timeout <= 0
                        else await asyncio.wait_for(self._queue.get(), timeout)
                    )
                except (asyncio.QueueEmpty, TimeoutError):
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            # a task of its own: cancelling this loop never cancels a started settlement
            task = asyncio.create_task(self._settle(batch), name="settler-batch")
            self._in_flight.add(task)
            task.add_done_callback(partial(self._batch_done, len(batch)))
        while self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)
        self._idle.set()

    def _batch_done(self, size: int, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._slots.release()
        self._unsettled -= size
        if not task.cancelled() and task.exception() is not None:
            log.error("settlement batch failed", error=str(task.exception()))
        if self._unsettled == 0:
            self._idle.set()

    async def _write(self, records: list[RatedCallRecord]) -> list[bool]:
        delay = 0.1
        while True:
            try:
                return await self._writer.write(records)
            except InvalidRatedCall:
                raise
            except Exception as exc:
                log.error("rated call write failed, retrying", error=str(exc), calls=len(records))
                if self.metrics is not None:
                    self.metrics.count_error("settlement", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _write_one_by_one(
        self, batch: list[Settlement]
    ) -> tuple[list[Settlement], list[bool]]:
        kept: list[Settlement] = []
        fresh: list[bool] = []
        for item in batch:
            try:
                fresh.extend(await self._write([item.record]))
                kept.append(item)
            except InvalidRatedCall as exc:
                self.rejected += 1
                log.error("rated call rejected", error=str(exc), record=repr(item.record))
        return kept, fresh

    async def _settle(self, batch: list[Settlement]) -> None:
        try:
            fresh = await self._write([item.record for item in batch])
        except InvalidRatedCall:
            # One bad record must not block the others: write them one by one and set
            # the invalid ones aside, logged in full (a dead letter, never silently lost).
            batch, fresh = await self._write_one_by_one(batch)
        # every call's Redis work at once: the batching runner pipelines them
        await asyncio.gather(
            *(self._settle_one(item, is_new) for item, is_new in zip(batch, fresh, strict=True))
        )

    async def _settle_one(self, item: Settlement, is_new: bool) -> None:
        """Redis side of one written (or duplicate) call; failures are logged, not raised."""
        record = item.record
        try:
            if is_new:
                await self._live.settle(record.account_id, item.reservation_key, record.cost_micros)
                self.written += 1
            else:
                await self._live.release(record.account_id, item.reservation_key)
                self.duplicates += 1
            if record.chain:  # each reseller level at its own cost
                await settle_chain(self._live, record, item.reservation_key, is_new=is_new)
            if self._caps is not None:  # the resellers' and trunks' slots
                await self._caps.release(item.reservation_key)
        except Exception as exc:
            # SQL is the truth; Redis is rebuilt from it on start.
            if self.metrics is not None:
                self.metrics.count_error("settlement", exc)
            log.error(
                "redis settle failed",
                call_id=record.call_id,
                account=record.account_id,
                error=str(exc),
            )
        try:
            await self._settle_plans(item, is_new)
        except Exception as exc:  # SQL is the truth: the next start rebuilds from it
            log.error(
                "plan settle failed",
                call_id=record.call_id,
                account=record.account_id,
                error=str(exc),
            )
        if self._on_written is not None:
            self._on_written(record, is_new)
        if self._after_settle is not None:
            try:
                await self._after_settle(record, is_new)
            except Exception as exc:  # notifications and account checks never block a call
                log.error("after-settle hook failed", call_id=record.call_id, error=str(exc))
        if is_new:
            log.info(
                "call rated",
                call_id=record.call_id,
                account=record.account_id,
                cost_micros=record.cost_micros,
                billable_seconds=record.billable_seconds,
            )
        else:
            log.info("duplicate call ignored", call_id=record.call_id, account=record.account_id)

    async def _settle_plans(self, item: Settlement, is_new: bool) -> None:
        """Tier usage and bundled seconds of one written call (nothing without plans)."""
        record = item.record
        tiers, bundles = self._tiers, self._bundles
        counted = tiers is not None and is_new and tiers.plan_for(record.account_id) is not None
        if not counted and not (bundles is not None and record.bundle):
            return
        tz = "UTC" if self._timezone_of is None else await self._timezone_of(record.account_id)
        if counted and tiers is not None:
            await tiers.count(record, tz)
        if bundles is not None and record.bundle:
            period = item.bundle_period or call_period(record, tz)
            balances, key = bundles.balances, item.reservation_key
            if is_new:
                await balances.settle(
                    record.account_id, record.bundle, period, key, record.bundle_seconds
                )
            else:
                await balances.release(record.account_id, record.bundle, period, key)
