"""Request batching: script calls issued in the same event-loop tick share one pipeline.

With hundreds of authorizations in flight, each EVALSHA paying its own redis-py round
trip (a pooled connection, one write, one read) dominates. ``BatchingRunner`` queues the
calls issued during one tick of the event loop and, on the next tick, sends them as ONE
non-transactional pipeline of EVALSHAs (``transaction=False``: no MULTI/EXEC, each
script is still atomic on its own). Every caller gets its own reply:

- a script error (a Lua error, a wrong-type key) fails only the caller that sent it;
- NOSCRIPT replies trigger ``SCRIPT LOAD`` of the scripts concerned and one retry of
  just those calls;
- a connection error fails every caller of that batch (redis-py's own retry policy
  applies to the whole pipeline first).

A batch holds at most ``max_batch`` calls; a full batch is sent at once. At most
``max_in_flight`` batches run concurrently (each on its own pooled connection, so the
pool never needs more); while that many are in flight, new calls wait and the next batch
leaves as soon as one finishes, so batches grow with load. Every batch task is kept in a
set until done; ``aclose`` waits for them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from balance.scripts import Arg, LuaScript

log = structlog.get_logger(__name__)

DEFAULT_MAX_BATCH = 256
DEFAULT_MAX_IN_FLIGHT = 8


@dataclass(frozen=True, slots=True)
class _Call:
    script: LuaScript
    keys: Sequence[str]
    args: Sequence[Arg]
    future: asyncio.Future[Any]


class BatchingRunner:
    """Coalesces the script calls of one event-loop tick into one pipeline."""

    def __init__(
        self,
        redis: Redis,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self._redis = redis
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._pending: list[_Call] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, script: LuaScript, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """Queue one EVALSHA for the current tick's batch and await its own reply."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append(_Call(script, keys, args, future))
        if len(self._pending) >= self._max_batch and len(self._tasks) < self._max_in_flight:
            self._flush()
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._on_tick)
        return await future

    async def aclose(self) -> None:
        """Send what is queued and wait for every batch in flight."""
        while self._tasks or self._pending:
            self._flush()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _on_tick(self) -> None:
        self._scheduled = False
        if len(self._tasks) < self._max_in_flight:
            self._flush()

    def _on_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._pending and not self._scheduled:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        batch = self._pending[: self._max_batch]
        del self._pending[: self._max_batch]
        task = asyncio.get_running_loop().create_task(self._execute(batch))
        self._tasks.add(task)
        task.add_done_callback(self._on_done)

    async def _execute(self, batch: list[_Call]) -> None:
        try:
            replies = await self._send(batch)
            missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
            if missing:
                await self._load_scripts({batch[i].script for i in missing})
                retried = await self._send([batch[i] for i in missing])
                for i, reply in zip(missing, retried, strict=True):
                    replies[i] = reply
        except asyncio.CancelledError:
            for call in batch:
                call.future.cancel()
            raise
        except Exception as exc:  # connection lost, timeout: the whole batch failed
            log.debug("redis batch failed", size=len(batch), error=repr(exc))
            for call in batch:
                if not call.future.done():
                    call.future.set_exception(exc)
            return
        for call, reply in zip(batch, replies, strict=True):
            if call.future.done():  # the caller was cancelled meanwhile
                continue
            if isinstance(reply, Exception):
                call.future.set_exception(reply)
            else:
                call.future.set_result(reply)

    async def _send(self, batch: Sequence[_Call]) -> list[Any]:
        pipe = self._redis.pipeline(transaction=False)
        for call in batch:
            pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
        return list(await pipe.execute(raise_on_error=False))

    async def _load_scripts(self, scripts: set[LuaScript]) -> None:
        log.info("loading lua scripts", scripts=sorted(s.name for s in scripts))
        for script in scripts:
            await self._redis.script_load(script.source)
