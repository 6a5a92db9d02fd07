"""Bench: the whole authorization stack (real ``Daemon``) against a bare Redis loop.

    python bench/bench_auth_stack.py [--quick] [--profile] [--pin] [--daemon-loop asyncio|uvloop]

In one run, on one Redis (``RATEKEEPER_BENCH_REDIS_URL``, default
redis://127.0.0.1:6379/0) and a temporary SQLite state dir:

  (a) baseline     a bare redis-py loop (uvloop + hiredis): 50 tasks EVALSHA-ing the
                   same ``reserve`` script the daemon runs, with the same arguments
  (b) http         the real ``Daemon`` (``Settings``: http_port=0, fastagi_port=0, the
                   Redis URL, no switches), ``GET /v1/authorize`` over 50 keep-alive
                   connections from a raw asyncio client
  (c) fastagi      the same daemon over FastAGI, a new connection per request (as
                   Asterisk does), 50 concurrent sessions
  (d) http-1000/s  open loop: requests sent on a fixed schedule of 1,000/s for ~5 s,
                   latency measured from the scheduled send time (no coordinated
                   omission)
  (e) http floor   the daemon's own HTTP listener (``serve_authorize_http``: uvicorn,
                   httptools, the same protocol class and settings) in the same process,
                   whose fast path answers a constant from a callback (as the
                   common call is answered, without a task): what the HTTP stack alone
                   costs a switch's plain GET, i.e. the ceiling of (b)
  (f) asgi floor   the same listener serving an ASGI app that answers a constant: what
                   every request the fast path does not take costs at least

The load generator (and the baseline loop) runs in a separate process, so the daemon
process only serves: on a 2-core machine what is measured is "the daemon on one core"
(Redis and the load generator share the other). The daemon runs on the event loop
``ratekeeper run`` uses (``event_loop = "auto"``: uvloop when installed), unless
``--daemon-loop asyncio|uvloop``.

Live reservations: every request uses a unique call id and is never released; the
lease is 3600 s (longer than the run, so no lease expires and no expiry sweep runs
during the measure) and the calls are spread over many accounts, so each account's
calls hash and leases zset stay small (``total / accounts`` entries). Every key of the
run's accounts (unique prefix) is deleted at the end.

Besides throughput, each row gives the CPU time per request of the process under test
(the bare loop's own for (a), the daemon process's for (b)-(d)) and the ratio of (a)'s to
it: the "on one core" ratio, which the other processes on a shared machine disturb less.

``--pin`` measures "on one core" literally (Linux, a local Redis, the right to set its
CPU affinity): the process under test runs alone on CPU 0 (the bare loop in (a), the
daemon in the other rows), Redis and the load generator on CPU 1. Unpinned, the
scheduler runs whichever of the three processes is ready on either core, and the one
measured is preempted by the others it wakes.

``--profile`` adds a cProfile run of the daemon process under HTTP and FastAGI load
(after the measured runs; it does not change the table) and prints the top costs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import dataclasses
import io
import logging
import multiprocessing
import os
import pstats
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import redis.asyncio as aioredis
from starlette.applications import Starlette

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from balance import keys
from balance.accounts import Account, AccountStore
from balance.ledger import Ledger
from balance.scripts import load_script
from daemon import event_loop
from daemon.app import Daemon, open_resources
from daemon.authorization import AuthorizationRequest
from daemon.demo import DEMO_DECK, DEMO_RATES
from daemon.gc_tuning import freeze_startup_heap
from daemon.http_authorize import serve_authorize_http
from daemon.logging_setup import configure_logging
from daemon.settings import ApiSettings, AuthorizationSettings, RedisSettings, Settings
from storage.decks import DeckStore
from tariffs.money import to_micros
from tariffs.rating import call_cost

CONCURRENCY = 50
CALLER, CALLEE = "15550001001", "12125550100"  # US/Canada in the demo deck
DEBIT_INTERVAL = 30
LEASE_TTL = 3600
SWITCH_ID = "default"  # the daemon's default switch id when no switch is configured
BALANCE = Decimal("1000000")
OPEN_LOOP_RATE = 1000.0


@dataclass(frozen=True)
class Run:
    """What one load phase did: completions, wall time, latencies, allowed answers."""

    count: int
    elapsed: float
    latencies: list[float]
    allowed: int
    cpu: float = 0.0  # CPU seconds of the process under test (the loop's, or the daemon's)

    @property
    def cpu_us(self) -> float:
        """CPU microseconds per request of the process under test."""
        return self.cpu / self.count * 1e6

    @property
    def rate(self) -> float:
        """Completed requests per second."""
        return self.count / self.elapsed


class CorePinning:
    """``--pin``: the process under test alone on CPU 0; Redis and the load generator
    (and the daemon, idle, while the bare loop runs) as the phase needs."""

    def __init__(self, redis_pid: int, load_pid: int) -> None:
        if (os.cpu_count() or 1) < 2:
            raise SystemExit("--pin needs two CPUs")
        self._redis_pid, self._load_pid = redis_pid, load_pid
        self._all = os.sched_getaffinity(0)
        try:
            os.sched_setaffinity(redis_pid, {1})
        except OSError as exc:
            raise SystemExit(f"--pin: cannot pin Redis (pid {redis_pid}): {exc}") from exc

    def phase(self, kind: str) -> None:
        """Pin for one phase: ``baseline`` puts the bare loop on CPU 0."""
        os.sched_setaffinity(0, {0})
        os.sched_setaffinity(self._load_pid, {0} if kind == "baseline" else {1})

    def restore(self) -> None:
        """Every process back on every CPU."""
        for pid in (0, self._redis_pid, self._load_pid):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(pid, self._all)


async def _pinning(url: str, pool: ProcessPoolExecutor) -> CorePinning:
    client = aioredis.Redis.from_url(url)
    try:
        redis_pid = int((await client.info("server"))["process_id"])
    finally:
        await client.aclose()
    load_pid = await asyncio.get_running_loop().run_in_executor(pool, os.getpid)
    return CorePinning(redis_pid, load_pid)


# ---- the load generator (runs in the child process) --------------------------------


async def _closed_loop(
    total: int,
    concurrency: int,
    make: Callable[[], Awaitable[Callable[[int, int], Awaitable[bool]]]],
) -> Run:
    """``total`` requests from ``concurrency`` workers, each one request at a time."""
    latencies: list[float] = []
    allowed = 0
    remaining = iter(range(total))
    calls = [await make() for _ in range(concurrency)]

    async def worker(n: int) -> None:
        nonlocal allowed
        call = calls[n]
        for i in remaining:
            started = time.perf_counter()
            ok = await call(n, i)
            latencies.append(time.perf_counter() - started)
            allowed += ok

    began = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return Run(total, time.perf_counter() - began, latencies, allowed)


def _account(accounts: list[str], n: int, i: int) -> str:
    return accounts[(n * 7919 + i) % len(accounts)]


async def _bare_redis(url: str, accounts: list[str], amount: int, run_id: str, total: int) -> Run:
    client = aioredis.Redis.from_url(url, max_connections=CONCURRENCY * 2)
    script = load_script("reserve")
    await client.script_load(script.source)
    ttl_ms = LEASE_TTL * 1000

    async def make() -> Callable[[int, int], Awaitable[bool]]:
        async def call(n: int, i: int) -> bool:
            account = _account(accounts, n, i)
            reply = await client.evalsha(
                script.sha,
                3,
                keys.account_key(account),
                keys.calls_key(account),
                keys.leases_key(account),
                f"{SWITCH_ID}:{run_id}-{n}-{i}",
                amount,
                ttl_ms,
            )
            return bool(reply[0] == b"OK")

        return call

    try:
        return await _closed_loop(total, CONCURRENCY, make)
    finally:
        await client.aclose()


def _authorize_path(account: str, call_id: str) -> bytes:
    return (
        f"/v1/authorize?account={account}&caller={CALLER}&callee={CALLEE}&call_id={call_id}"
    ).encode()


class _HTTPClient(asyncio.Protocol):
    """One raw HTTP/1.1 keep-alive connection of the load generator: send a GET, read one
    response (framed by its content-length). A protocol, not streams: the generator
    shares a core with Redis, so what it spends per request is taken from Redis."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._waiter: asyncio.Future[bool] | None = None
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(buffer[:end]).lower()
        length, at = 0, head.find(b"content-length:")
        if at >= 0:
            stop = head.find(b"\r\n", at)
            length = int(head[at + 15 : stop if stop >= 0 else None])
        if len(buffer) < end + 4 + length:
            return
        body = bytes(buffer[end + 4 : end + 4 + length])
        del buffer[: end + 4 + length]
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(head.startswith(b"http/1.1 200") and b'"allowed":true' in body)

    def connection_lost(self, exc: Exception | None) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionError("the daemon closed the connection"))

    def get(self, path: bytes) -> asyncio.Future[bool]:
        """Send ``GET path``; the future of "answered 200 and allowed"."""
        assert self._transport is not None
        self._waiter = waiter = asyncio.get_running_loop().create_future()
        self._transport.write(b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        return waiter


async def _http_connection(port: int) -> Callable[[bytes], Awaitable[bool]]:
    """A raw HTTP/1.1 keep-alive connection: ``get(path)`` sends a GET, reads one response."""
    _transport, client = await asyncio.get_running_loop().create_connection(
        _HTTPClient, "127.0.0.1", port
    )
    return client.get


async def _http_closed(port: int, accounts: list[str], run_id: str, total: int) -> Run:
    async def make() -> Callable[[int, int], Awaitable[bool]]:
        get = await _http_connection(port)

        async def call(n: int, i: int) -> bool:
            return await get(_authorize_path(_account(accounts, n, i), f"{run_id}-{n}-{i}"))

        return call

    return await _closed_loop(total, CONCURRENCY, make)


def _agi_header(account: str, call_id: str) -> bytes:
    lines = [
        "agi_network: yes",
        "agi_network_script: authorize",
        "agi_request: agi://127.0.0.1/authorize",
        "agi_channel: PJSIP/trunk-00000001",
        "agi_type: PJSIP",
        f"agi_uniqueid: {call_id}",
        "agi_version: 22.10.1",
        f"agi_callerid: {CALLER}",
        "agi_context: authorize-dial",
        f"agi_extension: {CALLEE}",
        "agi_priority: 1",
        f"agi_accountcode: {account}",
        f"agi_arg_1: {CALLEE}",
        f"agi_arg_2: {CALLER}",
        f"agi_arg_3: {account}",
    ]
    return ("\n".join(lines) + "\n\n").encode()


async def _agi_closed(port: int, accounts: list[str], run_id: str, total: int) -> Run:
    """Like Asterisk: connect, send the environment, answer every command, see EOF."""

    async def make() -> Callable[[int, int], Awaitable[bool]]:
        async def call(n: int, i: int) -> bool:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(_agi_header(_account(accounts, n, i), f"{run_id}-{n}-{i}"))
            allowed = False
            while line := await reader.readline():
                if line.startswith(b"SET VARIABLE AUTH_RESULT ") and b"ALLOW" in line:
                    allowed = True
                writer.write(b"200 result=1\n")
            writer.close()
            return allowed

        return call

    return await _closed_loop(total, CONCURRENCY, make)


async def _http_open(port: int, accounts: list[str], run_id: str, seconds: float) -> Run:
    """Open loop: request i is due at t0 + i / rate; latency counts from its due time."""
    pool: asyncio.Queue[Callable[[bytes], Awaitable[bool]]] = asyncio.Queue()
    for _ in range(CONCURRENCY):
        pool.put_nowait(await _http_connection(port))
    latencies: list[float] = []
    allowed = 0
    tasks: set[asyncio.Task[None]] = set()

    async def one(i: int, due: float) -> None:
        nonlocal allowed
        get = await pool.get()
        try:
            ok = await get(_authorize_path(accounts[i % len(accounts)], f"{run_id}-{i}"))
        finally:
            pool.put_nowait(get)
        latencies.append(time.perf_counter() - due)
        allowed += ok

    total = int(OPEN_LOOP_RATE * seconds)
    t0 = time.perf_counter() + 0.01
    for i in range(total):
        due = t0 + i / OPEN_LOOP_RATE
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(i, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    while tasks:
        await asyncio.gather(*tasks)
    return Run(total, time.perf_counter() - t0, latencies, allowed)


def load_phase(kind: str, target: Any, accounts: list[str], run_id: str, size: float) -> Run:
    """Entry point of the child process: run one phase on uvloop, return its figures
    (``cpu``: the child's own CPU time, i.e. the bare loop's for the baseline)."""
    import uvloop

    began = time.process_time()
    if kind == "baseline":
        url, amount = target
        run = uvloop.run(_bare_redis(url, accounts, amount, run_id, int(size)))
    elif kind == "http":
        run = uvloop.run(_http_closed(target, accounts, run_id, int(size)))
    elif kind == "fastagi":
        run = uvloop.run(_agi_closed(target, accounts, run_id, int(size)))
    elif kind == "http-open":
        run = uvloop.run(_http_open(target, accounts, run_id, size))
    else:
        raise ValueError(f"unknown phase {kind!r}")
    return dataclasses.replace(run, cpu=time.process_time() - began)


# ---- the daemon side (main process) --------------------------------------------------


async def provision(settings: Settings, accounts: list[str]) -> None:
    """The demo deck and ``accounts`` with large balances and no concurrency cap."""
    res = await open_resources(settings)
    try:
        await DeckStore(res.engine).replace(DEMO_DECK, list(DEMO_RATES))
        store, ledger = AccountStore(res.engine), Ledger(res.engine)
        for account in accounts:
            await store.create(Account(id=account, name=account, rate_deck=DEMO_DECK.name))
            await ledger.topup(account, BALANCE, f"bench-initial-{account}")
    finally:
        await res.close()


async def _constant_answer(scope: Any, receive: Any, send: Any) -> None:
    """An ASGI app that does no work: what the HTTP stack alone costs per request."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"16")],
        }
    )
    await send({"type": "http.response.body", "body": b'{"allowed":true}'})


class _ConstantFastPath:
    """The fast path's endpoint answering a constant (``FastAuthorize``): what the
    listener and its fast path alone cost per request."""

    request = AuthorizationRequest(
        switch_id=SWITCH_ID, call_id="c", account="a", caller=CALLER, callee=CALLEE
    )

    def plain_get(self, query: bytes, accept: bytes) -> AuthorizationRequest | None:
        return self.request

    def start_json(
        self, request: AuthorizationRequest, answer: Callable[[int, bytes], None]
    ) -> bool:
        asyncio.get_running_loop().call_soon(answer, 200, b'{"allowed":true}')
        return True

    async def answer_json(self, request: AuthorizationRequest) -> tuple[int, bytes]:
        return 200, b'{"allowed":true}'


async def _constant_fast_app(scope: Any, receive: Any, send: Any) -> None:
    await _constant_answer(scope, receive, send)


_constant_fast_app.authorize_endpoint = _ConstantFastPath()  # type: ignore[attr-defined]


def first_slice_micros() -> int:
    """What the daemon reserves for CALLEE: one debit interval of the matching rate."""
    rate = max((r for r in DEMO_RATES if CALLEE.startswith(r.prefix)), key=lambda r: len(r.prefix))
    return to_micros(call_cost(DEMO_DECK, rate, Decimal(DEBIT_INTERVAL)))


def _median(runs: list[Run]) -> Run:
    """The run with the median rate (its latencies go with it)."""
    return sorted(runs, key=lambda run: run.rate)[len(runs) // 2]


def _quantiles(run: Run) -> tuple[float, float]:
    q = statistics.quantiles(run.latencies, n=100)
    return q[49] * 1000, q[98] * 1000


def _profiled_top(profile: cProfile.Profile, title: str, limit: int = 22) -> str:
    out = io.StringIO()
    for order in ("tottime", "cumulative"):
        out.write(f"\n== cProfile of the daemon process under {title} (by {order}) ==\n")
        stats = pstats.Stats(profile, stream=out).strip_dirs().sort_stats(order)
        stats.print_stats(limit)
    return out.getvalue()


async def main(args: argparse.Namespace) -> None:
    url = os.environ.get("RATEKEEPER_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    quick: bool = args.quick
    n_accounts = 50 if quick else 500
    total = 4_000 if quick else 20_000
    agi_total = 2_000 if quick else 6_000
    rounds = 1 if quick else 3
    open_seconds = 2.0 if quick else 5.0
    warmup = 300
    prefix = f"bench-{uuid.uuid4().hex[:10]}"
    accounts = [f"{prefix}-{i}" for i in range(n_accounts)]
    loop = asyncio.get_running_loop()
    ctx = multiprocessing.get_context("spawn")
    reports: list[str] = []
    with (
        tempfile.TemporaryDirectory(prefix="ratekeeper-bench-") as tmp,
        ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool,
    ):
        settings = Settings(
            state_dir=Path(tmp),
            redis=RedisSettings(url=url, lease_ttl=LEASE_TTL),
            api=ApiSettings(port=0),
            authorization=AuthorizationSettings(
                http_port=0, fastagi_port=0, debit_interval=DEBIT_INTERVAL
            ),
        )
        began = time.perf_counter()
        await provision(settings, accounts)
        provisioned = time.perf_counter() - began
        daemon = Daemon(settings)
        await daemon.start()
        floor = serve_authorize_http(cast(Starlette, _constant_fast_app), "127.0.0.1", 0)
        await floor.start()
        asgi_floor = serve_authorize_http(cast(Starlette, _constant_answer), "127.0.0.1", 0)
        await asgi_floor.start()
        freeze_startup_heap()  # as ``ratekeeper run`` does once started
        pinning = await _pinning(url, pool) if args.pin else None

        async def phase(kind: str, target: Any, size: float) -> Run:
            run_id = f"{kind}-{uuid.uuid4().hex[:8]}"
            if pinning is not None:
                pinning.phase(kind)
            began = time.process_time()
            run = await loop.run_in_executor(pool, load_phase, kind, target, accounts, run_id, size)
            if kind == "baseline":
                return run
            return dataclasses.replace(run, cpu=time.process_time() - began)  # the daemon's

        try:
            amount = first_slice_micros()
            runs: dict[str, list[Run]] = {"a": [], "b": [], "c": [], "e": [], "f": []}
            await phase("baseline", (url, amount), warmup)
            await phase("http", daemon.http_port, warmup)
            await phase("fastagi", daemon.fastagi_port, warmup)
            await phase("http", floor.port, warmup)
            await phase("http", asgi_floor.port, warmup)
            for _ in range(rounds):  # interleaved, so drift of a noisy machine hits all
                runs["a"].append(await phase("baseline", (url, amount), total))
                runs["b"].append(await phase("http", daemon.http_port, total))
                runs["c"].append(await phase("fastagi", daemon.fastagi_port, agi_total))
                runs["e"].append(await phase("http", floor.port, total))
                runs["f"].append(await phase("http", asgi_floor.port, total))
            opened = await phase("http-open", daemon.http_port, open_seconds)
            if args.profile:
                for kind, port, size in (
                    ("http", daemon.http_port, total // 2),
                    ("fastagi", daemon.fastagi_port, agi_total // 2),
                ):
                    profile = cProfile.Profile()
                    profile.enable()
                    await phase(kind, port, size)
                    profile.disable()
                    reports.append(_profiled_top(profile, kind))
        finally:
            if pinning is not None:
                pinning.restore()
            await floor.stop()
            await asgi_floor.stop()
            await daemon.stop()
            await _delete_keys(url, accounts)

    print(
        f"auth stack: {n_accounts} accounts (provisioned in {provisioned:.1f} s), "
        f"concurrency {CONCURRENCY}, median of {rounds} interleaved round(s), "
        f"daemon loop {args.daemon_loop}, load generator in a separate process (uvloop), "
        f"redis {url}, {os.cpu_count()} CPUs"
        + (", pinned: the process under test alone on CPU 0" if args.pin else "")
    )
    print(
        f"{'mode':<30}{'requests':>9}{'auth/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'vs (a)':>8}"
        f"{'cpu us':>8}{'cpu vs (a)':>11}"
    )
    base, http, agi, floor_run, asgi_run = (_median(runs[mode]) for mode in "abcef")
    rows = [
        ("(a) bare EVALSHA loop", base),
        ("(b) daemon HTTP keep-alive", http),
        ("(c) daemon FastAGI per-conn", agi),
        ("(e) HTTP floor: no work", floor_run),
        ("(f) HTTP floor over ASGI", asgi_run),
    ]
    for name, run in rows:
        p50, p99 = _quantiles(run)
        print(
            f"{name:<30}{run.count:>9}{run.rate:>9,.0f}{p50:>8.2f}{p99:>8.2f}"
            f"{run.rate / base.rate:>8.2f}{run.cpu_us:>8.1f}{base.cpu_us / run.cpu_us:>11.2f}"
        )
    p50, p99 = _quantiles(opened)
    print(
        f"{'(d) HTTP open loop 1000/s':<30}{opened.count:>9}{opened.rate:>9,.0f}"
        f"{p50:>8.2f}{p99:>8.2f}{'':>8}{opened.cpu_us:>8.1f}"
    )
    print(
        "cpu us: CPU time per request of the process under test (the bare loop's for (a), "
        "the daemon's for (b)-(f)); 'cpu vs (a)' is the one-core ratio, steadier than "
        "throughput on a shared machine; (e) is the daemon's own HTTP listener (uvicorn, "
        "httptools, the same protocol class) answering a constant on its fast path: the "
        "ceiling of (b); (f) the same listener answering a constant over ASGI (the way of "
        "every request the fast path does not take)"
    )
    every = [
        (name, run)
        for name, mode in zip(("(a)", "(b)", "(c)", "(e)", "(f)"), "abcef", strict=True)
        for run in runs[mode]
    ]
    for name, run in [*every, ("(d)", opened)]:
        if run.allowed != run.count:
            print(f"WARNING {name}: only {run.allowed} of {run.count} answers were ALLOW/OK")
    for report in reports:
        print(report)


async def _delete_keys(url: str, accounts: list[str]) -> None:
    """Delete the accounts' keys: ONE scan of the keyspace, matched here (a scan per
    account walks a large keyspace hundreds of times)."""
    tags = {keys.tag(account).encode() for account in accounts}
    client = aioredis.Redis.from_url(url)
    try:
        found = [
            key
            async for key in client.scan_iter(match=f"{keys.PREFIX}:{{*", count=10_000)
            if key[: key.index(b"}") + 2] in tags
        ]
        for start in range(0, len(found), 1000):
            await client.delete(*found[start : start + 1000])
    finally:
        await client.aclose()


def run() -> None:
    """Parse the flags and run the bench."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="under 30 s, smaller counts")
    parser.add_argument("--profile", action="store_true", help="cProfile the daemon process too")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="the process under test alone on CPU 0, Redis and the load generator on CPU 1",
    )
    parser.add_argument(
        "--daemon-loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="the daemon process's event loop (default: as `ratekeeper run`, uvloop if installed)",
    )
    args = parser.parse_args()
    args.daemon_loop = event_loop.resolve(args.daemon_loop)
    configure_logging("WARNING", "console")
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    event_loop.run(main(args), args.daemon_loop)


if __name__ == "__main__":
    run()
