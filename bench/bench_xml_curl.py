"""Bench: FreeSWITCH mod_xml_curl dialplan authorizations/s through the real stack.

    python bench/bench_xml_curl.py [--quick] [--profile]

In one run, on one Redis (``RATEKEEPER_BENCH_REDIS_URL``, default
redis://127.0.0.1:6379/0) and a temporary SQLite state dir, with the helpers of
``bench_auth_stack`` (same accounts, deck, first slice, load generator process):

  (a) baseline     the bare redis-py loop: 50 tasks EVALSHA-ing the ``reserve`` script
  (b) http GET     the real ``Daemon``'s ``GET /v1/authorize`` over 50 keep-alive
                   connections (the reference front end)
  (c) xml_curl     ``POST /v1/freeswitch/dialplan`` over 50 keep-alive connections, the
                   routes of ``daemon.http_xml_curl`` over the daemon's own
                   ``AuthorizationService`` (real Redis, accounts and deck from SQL),
                   served by a second uvicorn in the daemon's process and loop; the body
                   is what mod_xml_curl posts for a SIP channel hunting a dialplan
                   (field names and values of a recorded CHANNEL_CREATE of
                   ``sip_bridged_call.esl`` + ``Hunt-*`` + the basic fields, ~164
                   fields, ~6 KB), with a unique ``Unique-ID`` per request
  (d) xml_curl/conn the same, one TCP connection per lookup, as mod_xml_curl really
                   does (a new curl handle per fetch)

Also, in this process: decoding the wanted fields of that body with
``http_xml_curl.form_fields`` against ``urllib.parse.parse_qsl`` of the whole body.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import multiprocessing
import os
import re
import sys
import tempfile
import timeit
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))
sys.path.insert(0, str(BENCH_DIR))

import bench_auth_stack as stack  # noqa: E402
from bench_auth_stack import CALLEE, CONCURRENCY, Run  # noqa: E402
from starlette.applications import Starlette  # noqa: E402

from daemon.app import Daemon  # noqa: E402
from daemon.gc_tuning import freeze_startup_heap  # noqa: E402
from daemon.http_authorize import serve_authorize_http  # noqa: E402
from daemon.http_xml_curl import DIALPLAN_PATH, form_fields, xml_curl_routes  # noqa: E402
from daemon.logging_setup import configure_logging  # noqa: E402
from daemon.settings import ApiSettings, AuthorizationSettings, RedisSettings, Settings  # noqa: E402

FIXTURE = BENCH_DIR.parents[1] / "shared" / "fixtures" / "freeswitch" / "sip_bridged_call.esl"
SIP_CHANNEL = "sofia/local/1000@127.0.0.1"  # the inbound SIP leg: the largest CHANNEL_CREATE
ACCOUNT_MARK, UUID_MARK = "@@ACCOUNT@@", "@@UUID@@"


# ---- the realistic post -----------------------------------------------------------------


def _channel_create(path: Path, channel_name: str) -> list[tuple[str, str]]:
    """Decoded headers, in order, of the CHANNEL_CREATE of ``channel_name`` in an ESL stream."""
    data, pos = path.read_bytes(), 0
    while (end := data.find(b"\n\n", pos)) >= 0:
        head = dict(line.split(": ", 1) for line in data[pos:end].decode().split("\n"))
        length = int(head.get("Content-Length", "0"))
        body, pos = data[end + 2 : end + 2 + length], end + 2 + length
        if head.get("Content-Type") != "text/event-plain":
            continue
        pairs = [
            (name, unquote(value))
            for name, _, value in (line.partition(": ") for line in body.decode().split("\n"))
            if name
        ]
        event = dict(pairs)
        if event.get("Event-Name") == "CHANNEL_CREATE" and event["Channel-Name"] == channel_name:
            return pairs
    raise LookupError(channel_name)


def dialplan_post_template() -> tuple[list[bytes], int]:
    """The body mod_xml_curl posts for this channel hunting context ``ratekeeper``, as
    literal parts with the account and uuid marks between them, and its field count."""
    overrides = {
        "Event-Name": "REQUEST_PARAMS",
        "Unique-ID": UUID_MARK,
        "Caller-Unique-ID": UUID_MARK,
        "Caller-Destination-Number": CALLEE,
        "Caller-Context": "ratekeeper",
        "variable_accountcode": ACCOUNT_MARK,
    }
    channel = [
        (name, overrides.get(name, value))
        for name, value in _channel_create(FIXTURE, SIP_CHANNEL)
    ]
    if not any(name == "variable_accountcode" for name, _ in channel):
        channel.append(("variable_accountcode", ACCOUNT_MARK))
    hunt = [("Hunt-" + n[len("Caller-") :], v) for n, v in channel if n.startswith("Caller-")]
    basic = [
        ("hostname", "vm"),
        ("section", "dialplan"),
        ("tag_name", ""),
        ("key_name", ""),
        ("key_value", ""),
    ]
    fields = [*basic, *channel, *hunt]
    body = "&".join(f"{quote(n, safe='')}={quote(v, safe='')}" for n, v in fields)
    marks = f"({re.escape(quote(ACCOUNT_MARK, safe=''))}|{re.escape(quote(UUID_MARK, safe=''))})"
    return [part.encode() for part in re.split(marks, body)], len(fields)


def fill(parts: list[bytes], account: str, call_id: str) -> bytes:
    """The body of one lookup: ``parts`` with the marks replaced."""
    values = {
        quote(ACCOUNT_MARK, safe="").encode(): quote(account, safe="").encode(),
        quote(UUID_MARK, safe="").encode(): call_id.encode(),
    }
    return b"".join(values.get(part, part) for part in parts)


# ---- the load generator (runs in the child process) -------------------------------------


def _request(parts: list[bytes], account: str, call_id: str) -> bytes:
    body = fill(parts, account, call_id)
    return (
        f"POST {DIALPLAN_PATH}?switch_id={stack.SWITCH_ID} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"User-Agent: freeswitch-xml/1.0\r\nAccept: */*\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _read_answer(reader: asyncio.StreamReader) -> bool:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    body = await reader.readexactly(length)
    return head.startswith(b"HTTP/1.1 200") and b'data="rk_auth_result=ALLOW"' in body


async def _xml_curl_closed(
    port: int, accounts: list[str], run_id: str, total: int, keepalive: bool
) -> Run:
    template = dialplan_post_template()[0]

    async def make() -> Callable[[int, int], Awaitable[bool]]:
        if keepalive:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)

            async def call(n: int, i: int) -> bool:
                account = stack._account(accounts, n, i)
                writer.write(_request(template, account, f"{run_id}-{n}-{i}"))
                return await _read_answer(reader)

            return call

        async def call_once(n: int, i: int) -> bool:
            account = stack._account(accounts, n, i)
            conn_reader, conn_writer = await asyncio.open_connection("127.0.0.1", port)
            conn_writer.write(_request(template, account, f"{run_id}-{n}-{i}"))
            try:
                return await _read_answer(conn_reader)
            finally:
                conn_writer.close()

        return call_once

    return await stack._closed_loop(total, CONCURRENCY, make)


def load_phase(kind: str, target: Any, accounts: list[str], run_id: str, size: float) -> Run:
    """Child process entry point: the xml_curl phases here, the others from bench_auth_stack."""
    import uvloop

    if kind in ("xml_curl", "xml_curl_conn"):
        return uvloop.run(
            _xml_curl_closed(target, accounts, run_id, int(size), keepalive=kind == "xml_curl")
        )
    return stack.load_phase(kind, target, accounts, run_id, size)


# ---- field decoding, in this process ------------------------------------------------------


def decoding_figures(rounds: int) -> tuple[int, int, float, float]:
    """(fields, body bytes, µs per form_fields, µs per parse_qsl) on the realistic post."""
    from daemon.http_xml_curl import _WANTED

    parts, count = dialplan_post_template()
    body = fill(parts, "tenant-a", str(uuid.uuid4()))
    ours = min(timeit.repeat(lambda: form_fields(body, _WANTED), number=rounds, repeat=5))
    text = body.decode()
    full = min(timeit.repeat(lambda: dict(parse_qsl(text)), number=rounds, repeat=5))
    return count, len(body), ours / rounds * 1e6, full / rounds * 1e6


# ---- the daemon side (main process) ------------------------------------------------------


async def main(args: argparse.Namespace) -> None:
    url = os.environ.get("RATEKEEPER_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    quick: bool = args.quick
    n_accounts = 50 if quick else 500
    total = 3_000 if quick else 15_000
    conn_total = 1_000 if quick else 4_000
    rounds = 1 if quick else 3
    warmup = 300
    prefix = f"bench-xc-{uuid.uuid4().hex[:8]}"
    accounts = [f"{prefix}-{i}" for i in range(n_accounts)]
    loop = asyncio.get_running_loop()
    ctx = multiprocessing.get_context("spawn")
    profile_report = ""
    with (
        tempfile.TemporaryDirectory(prefix="ratekeeper-bench-") as tmp,
        ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool,
    ):
        settings = Settings(
            state_dir=Path(tmp),
            redis=RedisSettings(url=url, lease_ttl=stack.LEASE_TTL),
            api=ApiSettings(port=0),

            authorization=AuthorizationSettings(
                http_port=0, fastagi_port=0, debit_interval=stack.DEBIT_INTERVAL
            ),
        )
        await stack.provision(settings, accounts)
        daemon = Daemon(settings)
        await daemon.start()
        freeze_startup_heap()  # as ``ratekeeper run`` does once started
        service = daemon.service
        assert service is not None
        routes = xml_curl_routes(
            service, default_switch_id=stack.SWITCH_ID, accepting=lambda: service.accepting
        )
        xml_server = serve_authorize_http(Starlette(routes=routes), "127.0.0.1", 0)
        await xml_server.start()

        async def phase(kind: str, target: Any, size: float) -> Run:
            run_id = f"{kind}-{uuid.uuid4().hex[:8]}"
            return await loop.run_in_executor(
                pool, load_phase, kind, target, accounts, run_id, size
            )

        plan = {
            "a": ("baseline", (url, stack.first_slice_micros()), total),
            "b": ("http", daemon.http_port, total),
            "c": ("xml_curl", xml_server.port, total),
            "d": ("xml_curl_conn", xml_server.port, conn_total),
        }
        runs: dict[str, list[Run]] = {mode: [] for mode in plan}
        try:
            for kind, target, _ in plan.values():
                await phase(kind, target, warmup)
            for _ in range(rounds):  # interleaved: drift of a noisy machine hits all
                for mode, (kind, target, size) in plan.items():
                    runs[mode].append(await phase(kind, target, size))
            if args.profile:
                profile = cProfile.Profile()
                profile.enable()
                await phase("xml_curl", xml_server.port, total // 2)
                profile.disable()
                profile_report = stack._profiled_top(profile, "xml_curl")
        finally:
            await xml_server.stop()
            await daemon.stop()
            await stack._delete_keys(url, accounts)

    fields, size, ours, full = decoding_figures(2_000 if quick else 20_000)
    print(
        f"xml_curl: {n_accounts} accounts, concurrency {CONCURRENCY}, median of {rounds} "
        f"interleaved round(s), post of {fields} fields / {size} bytes, load generator in a "
        f"separate process (uvloop), daemon on asyncio, redis {url}, {os.cpu_count()} CPUs"
    )
    print(f"{'mode':<30}{'requests':>9}{'auth/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'vs (a)':>8}")
    base = stack._median(runs["a"])
    names = {
        "a": "(a) bare EVALSHA loop",
        "b": "(b) daemon HTTP GET keep-alive",
        "c": "(c) xml_curl POST keep-alive",
        "d": "(d) xml_curl POST per-conn",
    }
    for mode, name in names.items():
        run = stack._median(runs[mode])
        p50, p99 = stack._quantiles(run)
        print(
            f"{name:<30}{run.count:>9}{run.rate:>9,.0f}{p50:>8.2f}{p99:>8.2f}"
            f"{run.rate / base.rate:>8.2f}"
        )
    xml_rate, http_rate = stack._median(runs["c"]).rate, stack._median(runs["b"]).rate
    print(f"xml_curl keep-alive vs HTTP GET: {xml_rate / http_rate:.2f}")
    print(
        f"decoding the post: form_fields {ours:.1f} µs, parse_qsl of every field {full:.1f} µs "
        f"({full / ours:.1f}x)"
    )
    for mode, mode_runs in runs.items():
        for run in mode_runs:
            if run.allowed != run.count:
                print(f"WARNING ({mode}): only {run.allowed} of {run.count} answers were ALLOW")
    if profile_report:
        print(profile_report)


def run() -> None:
    """Parse the flags and run the bench."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="under 30 s, smaller counts")
    parser.add_argument("--profile", action="store_true", help="cProfile the daemon under (c)")
    args = parser.parse_args()
    configure_logging("WARNING", "console")
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    asyncio.run(main(args))


if __name__ == "__main__":
    run()
