"""Request batching: script calls issued in the same event-loop tick share one round trip.

With hundreds of authorizations in flight, each EVALSHA paying its own round trip (a
pooled connection, one write, one read) dominates, and so does redis-py's per-command
pipeline machinery. ``BatchingRunner`` queues the calls issued during one tick of the
event loop and, on the next tick, writes them as ONE buffer of EVALSHA commands (encoded
here, in RESP, when each call is queued) on a connection taken from the client's pool,
then reads one reply per call straight from the connection's hiredis reader
(``_read_replies``; redis-py's ``read_response`` with any other parser). No
MULTI/EXEC: each script is atomic on its own. Every caller gets its own reply:

- a script error (a Lua error, a wrong-type key) fails only the caller that sent it, and
  an argument that cannot be encoded fails only its caller, at once;
- NOSCRIPT replies (a fresh, restarted or flushed server) trigger ``SCRIPT LOAD`` of the
  scripts concerned and one retry of just those calls, in one more round trip (a call
  that got NOSCRIPT did not run, so the retry is safe for every script);
- a lost connection or a timeout (the pool's ``socket_timeout``, one deadline per round
  trip) gives the replies read before it to their callers and the error to every other
  caller of the batch; nothing is re-sent, since a call without a reply may have run
  (``extend`` is not idempotent). The connection is dropped, never reused half-read.

A batch holds at most ``max_batch`` calls; a full batch is sent at once. At most
``max_in_flight`` batches run concurrently (each on its own pooled connection, so the
pool never needs more); while that many are in flight, new calls wait and the next batch
leaves as soon as one finishes. Every batch task is kept in a set until done; ``aclose``
waits for them. The default is two in flight: one batch in Redis while the next one
fills. More batches in flight make them smaller, not faster: measured on the whole daemon
on uvloop (2026-11-26, alternating the limit in one process), 1 / 2 / 8 in flight cost
69 / 74 / 75 us of CPU per HTTP authorization and 184 / 200 / 250 us per FastAGI one
(whose requests arrive one connection at a time), for 12.3k / 13.0k / 13.4k HTTP
answers/s; three in flight cost FastAGI 7-11% of its rate (measured again, session 6).

Small batches (``max_batch`` 8) keep Redis and the daemon busy at once. With batches
as large as the load (up to 256), the calls of a busy daemon move in waves: both
batches sit in Redis while the daemon, its replies written, has nothing to do, then
every reply arrives at once while Redis idles; the daemon worked 73-78% of the time with
50 or 200 requests always waiting. Capped at 8, a batch leaves each time one returns, so
Redis works on one while the daemon answers the other's calls: the daemon works 86-97%
of the time. Measured on the whole daemon (``ratekeeper run``, uvloop), alternating the
cap in one process, 4-5 rounds each, four runs: HTTP authorizations/s 1.03, 1.12 and
1.30x those with 256 (50 keep-alive clients) and 1.36x (200 clients), CPU per request
-17 to +6%; FastAGI 0.98x (its requests never arrive in waves); the caps bench's
caps-on / caps-off ratio 0.73-0.76 against 0.65 (two quick runs each).
``LiveState.reserve`` alone, with nothing else to do, does best with large batches (it
pays a round trip per 8 calls).

Connections: a connection whose batch was read to the end is kept by the runner for the
next batch instead of going back to the pool: the pool's checkout (a lock, a connect
check and a non-blocking read to see the connection is clean, per round trip) cost more
than a small batch itself. A connection that failed is disconnected and given back to the
pool (which reconnects it on its next checkout); ``aclose`` gives every kept one back.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from balance.scripts import Arg, DirectRunner, LuaScript, ScriptRunner

try:  # the hiredis reader behind redis-py's parser (``_read_replies``)
    from redis._parsers.hiredis import NOT_ENOUGH_DATA as _NOT_ENOUGH_DATA
    from redis._parsers.hiredis import _AsyncHiredisParser as _HiredisParser
except ImportError:  # pragma: no cover - another redis-py layout: read_response for all
    _HiredisParser = None  # type: ignore[assignment,misc]
    _NOT_ENOUGH_DATA = object()

log = structlog.get_logger(__name__)

DEFAULT_MAX_BATCH = 8  # small batches keep Redis and the daemon busy at once (module doc)
DEFAULT_MAX_IN_FLIGHT = 2  # one batch in Redis while the next fills (module doc)
_NO_REPLY: Any = object()  # a call whose reply never came (the connection was lost)


@dataclass(slots=True)  # not frozen: its __init__ is 2.5x quicker, one per call
class _Call:
    script: LuaScript
    command: bytes  # the whole EVALSHA command, RESP-encoded
    future: asyncio.Future[Any]


class BatchingRunner:
    """Coalesces the script calls of one event-loop tick into one write and one read."""

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
        self._pool = redis.connection_pool
        # the client's own encoder: its encoding, and DataError for a bad argument type
        self._encode = redis.get_encoder().encode  # type: ignore[no-untyped-call]
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._pending: list[_Call] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle: list[Any] = []  # connections read to the end, kept for the next batch

    async def run(self, script: LuaScript, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        """Queue one EVALSHA for the current tick's batch and await its own reply."""
        encode = self._encode
        parts = [b"EVALSHA", script.sha.encode(), b"%d" % len(keys)]
        for value in (*keys, *args):
            # the common types at once; the client's encoder for the rest (it raises
            # DataError for a bad type, a bool included, which fails only this caller)
            if type(value) is str:
                parts.append(value.encode())
            elif type(value) is bytes:
                parts.append(value)
            elif type(value) is int:
                parts.append(b"%d" % value)
            else:
                parts.append(encode(value))
        return await self.run_packed(script, _pack(parts))

    async def run_packed(self, script: LuaScript, command: bytes) -> Any:
        """Queue one EVALSHA already in RESP (``pack``) and await its own reply."""
        return await self.submit_packed(script, command)

    def submit_packed(self, script: LuaScript, command: bytes) -> asyncio.Future[Any]:
        """Queue one EVALSHA already in RESP (``pack``); the future of its own reply.

        For a caller that goes on from a callback (``future.add_done_callback``) instead
        of a task. The reply as ``run_packed`` returns it; a Redis error, or the batch's
        failure, as the future's exception. Cancelling the future drops only its reply.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append(_Call(script, command, future))
        if len(self._pending) >= self._max_batch and len(self._tasks) < self._max_in_flight:
            self._flush()
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._on_tick)
        return future

    async def aclose(self) -> None:
        """Send what is queued, wait for every batch in flight, give the connections back."""
        while self._tasks or self._pending:
            self._flush()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        idle, self._idle = self._idle, []
        for conn in idle:
            await self._pool.release(conn)

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
        replies: list[Any] = []
        failure: Exception | None = None
        try:
            await self._round_trip([call.command for call in batch], replies)
            missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
            if missing:
                await self._load_and_retry(batch, missing, replies)
        except asyncio.CancelledError:
            for call in batch:
                call.future.cancel()
            raise
        except Exception as exc:  # connection lost, timeout: the calls without a reply fail
            log.debug("redis batch failed", size=len(batch), replied=len(replies), error=repr(exc))
            failure = exc
        replies += [_NO_REPLY] * (len(batch) - len(replies))
        for call, reply in zip(batch, replies, strict=True):
            if call.future.done():  # the caller was cancelled meanwhile
                continue
            if reply is _NO_REPLY:
                assert failure is not None
                call.future.set_exception(failure)
            elif isinstance(reply, Exception):
                call.future.set_exception(reply)
            else:
                call.future.set_result(reply)

    async def _load_and_retry(
        self, batch: list[_Call], missing: list[int], replies: list[Any]
    ) -> None:
        """SCRIPT LOAD the scripts that got NOSCRIPT and re-send just those calls.

        One round trip: the loads come first on the connection, so they run first. A
        call whose script failed to load gets the load's error, not NOSCRIPT again.
        """
        scripts = list({batch[i].script for i in missing})
        log.info("loading lua scripts", scripts=sorted(s.name for s in scripts))
        loads = [_pack([b"SCRIPT", b"LOAD", s.source.encode()]) for s in scripts]
        retried: list[Any] = []
        try:
            await self._round_trip(loads + [batch[i].command for i in missing], retried)
        finally:
            load_errors = {
                script: reply
                for script, reply in zip(scripts, retried[: len(loads)], strict=False)
                if isinstance(reply, Exception)
            }
            retried = retried[len(loads) :] + [_NO_REPLY] * len(missing)
            for i, reply in zip(missing, retried, strict=False):
                failed_load = isinstance(reply, NoScriptError) and batch[i].script in load_errors
                replies[i] = load_errors[batch[i].script] if failed_load else reply

    async def _round_trip(self, commands: list[bytes], replies: list[Any]) -> None:
        """Write ``commands`` at once on a pooled connection; append one reply per command.

        A Redis error reply is appended as its exception. On a lost connection or a
        timeout, ``replies`` holds what was read before and the error is raised.
        """
        idle = self._idle
        conn = idle.pop() if idle else await self._pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            if conn.socket_timeout is None:  # no deadline: no timer to arm
                await _send(conn, b"".join(commands))
                await _read_replies(conn, len(commands), replies)
            else:  # one deadline for the whole round trip (a per-read one: ~10 us a reply)
                async with asyncio.timeout(conn.socket_timeout):
                    await _send(conn, b"".join(commands))
                    await _read_replies(conn, len(commands), replies)
        except BaseException as exc:
            await conn.disconnect()  # never reused with unread replies
            await self._pool.release(conn)
            if isinstance(exc, TimeoutError):
                timeout = conn.socket_timeout
                raise RedisTimeoutError(f"redis batch timed out after {timeout} s") from exc
            raise
        idle.append(conn)  # read to the end: clean for the next batch


async def _send(conn: Any, data: bytes) -> None:
    """Write one batch on ``conn``: straight to its connected stream, under the round
    trip's own deadline. redis-py's ``send_packed_command`` arms a second deadline per
    write when the connection has a ``socket_timeout`` (redis-py 8 sets 5 s by default):
    ``asyncio.wait_for``, a task per batch. Not connected, or another kind of connection:
    redis-py's way (it connects, checks health). A failed write raises redis-py's
    ``ConnectionError``, as ``send_packed_command`` does; the caller drops the connection.
    """
    writer = getattr(conn, "_writer", None)
    if type(writer) is not asyncio.StreamWriter or not conn.is_connected:
        await conn.send_packed_command(data)
        return
    try:
        writer.write(data)
        await writer.drain()
    except OSError as exc:
        raise RedisConnectionError(f"error while writing to redis: {exc}") from exc


async def _read_replies(conn: Any, count: int, replies: list[Any]) -> None:
    """Append ``count`` replies read from ``conn``, an error reply as its exception.

    With hiredis (RESP2 or RESP3), straight from the connection's hiredis reader: one
    ``gets()`` per reply, the socket read only when a reply is incomplete, a push frame
    handed to the parser's handler as ``read_response`` does. redis-py's
    ``read_response`` costs several microseconds per reply around that same ``gets()``
    (a timeout context, the peer's address as text, protocol and health checks), which a
    batch pays once per call. Any other parser: ``read_response``.
    """
    parser = getattr(conn, "_parser", None)
    reader = getattr(parser, "_reader", None)
    if _HiredisParser is None or type(parser) is not _HiredisParser or reader is None:
        for _ in range(count):
            try:
                replies.append(await conn.read_response(timeout=math.inf))
            except ResponseError as exc:
                replies.append(exc)
        return
    gets, fill = reader.gets, parser.read_from_socket
    push_type = parser._hiredis_PushNotificationType  # None on RESP2 / an old hiredis
    while count:
        reply = gets()
        while reply is _NOT_ENOUGH_DATA:
            await fill()  # type: ignore[no-untyped-call]  # ConnectionError at EOF
            reply = gets()
        if isinstance(reply, RedisConnectionError):
            raise reply
        if push_type is not None and isinstance(reply, push_type):
            await parser.handle_push_response(reply)  # not a reply to a command of ours
            continue
        replies.append(reply)  # an error reply is its ResponseError, as read_response's
        count -= 1


def _pack(parts: Sequence[bytes]) -> bytes:
    """One command in RESP: an array of bulk strings."""
    return b"*%d\r\n" % len(parts) + b"".join([b"$%d\r\n%s\r\n" % (len(p), p) for p in parts])


def bulk(value: bytes) -> bytes:
    """One RESP bulk string (a part of a command packed ahead of time)."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


def evalsha_head(script: LuaScript) -> bytes:
    """``EVALSHA <sha>`` as two bulk strings: the start of every packed call of ``script``."""
    return bulk(b"EVALSHA") + bulk(script.sha.encode())


def packed_evalsha(head: bytes, numkeys: int, numargs: int, *chunks: bytes) -> bytes:
    """One EVALSHA command in RESP: ``head`` (``evalsha_head``), then ``chunks`` holding
    ``numkeys`` keys and ``numargs`` arguments as bulk strings, keys first."""
    count = 3 + numkeys + numargs
    return b"".join([b"*%d\r\n" % count, head, bulk(b"%d" % numkeys), *chunks])


def script_runner(redis: Redis, *, batch: bool) -> ScriptRunner:
    """The runner of a Redis client's scripts: batched into pipelines, or one call each."""
    return BatchingRunner(redis) if batch else DirectRunner(redis)
