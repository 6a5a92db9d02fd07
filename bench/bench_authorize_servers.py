"""Protocol overhead of the authorization front ends, with the fake authorizer.

    python bench/bench_authorize_servers.py [--quick] [--requests N] [--concurrency C]

Measured in one process, one event loop, against baselines run in the same run:
``echo-connect`` (TCP connect, one line of the AGI header's size each way, close) for
FastAGI, which Asterisk opens once per call, and ``echo-keepalive`` (the same line over
one kept connection per worker) for HTTP keep-alive. Ratios are throughput ratios to
the baseline (1.00 = as fast as a bare asyncio echo). Absolute numbers vary per machine;
the ratios are the figures to compare between runs.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from daemon.fastagi_server import FastAGIServer
from daemon.http_authorize import build_authorize_app, serve_authorize_http
from tests.support.fake_authorizer import FakeAuthorizer

AGI_HEADER = (
    b"agi_network: yes\nagi_network_script: authorize\n"
    b"agi_request: agi://127.0.0.1:4573/authorize\n"
    b"agi_channel: Local/15551230007@authorize-dial-0000001f;2\nagi_language: en\n"
    b"agi_type: Local\nagi_uniqueid: 1795630738.63\nagi_version: 22.10.1\n"
    b"agi_callerid: 15550001001\nagi_calleridname: Alice\nagi_callingpres: 0\n"
    b"agi_callingani2: 0\nagi_callington: 0\nagi_callingtns: 0\nagi_dnid: unknown\n"
    b"agi_rdnis: unknown\nagi_context: authorize-dial\nagi_extension: 15551230007\n"
    b"agi_priority: 4\nagi_enhanced: 0.0\nagi_accountcode: tenant-a\n"
    b"agi_threadid: 139833538516672\nagi_arg_1: 15551230007\nagi_arg_2: 15550001001\n"
    b"agi_arg_3: tenant-a\n\n"
)
ECHO_LINE = b"x" * (len(AGI_HEADER) - 1) + b"\n"
HTTP_REQUEST = (
    b"GET /v1/authorize?account=tenant-a&caller=15550001001&callee=15551230007"
    b"&call_id=1795630738.63 HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n\r\n"
)


async def _echo_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while line := await reader.readline():
        writer.write(line)
        await writer.drain()
    writer.close()


async def _echo_connect(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(ECHO_LINE)
    await writer.drain()
    await reader.readline()
    writer.close()
    await writer.wait_closed()


async def _agi_request(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(AGI_HEADER)
    await writer.drain()
    while await reader.readline():
        writer.write(b"200 result=1\n")
    writer.close()
    await writer.wait_closed()


async def _measure(
    total: int,
    concurrency: int,
    make_worker: Callable[[], Awaitable[Callable[[], Awaitable[None]]]],
) -> tuple[float, list[float]]:
    latencies: list[float] = []
    remaining = iter(range(total))

    async def worker() -> None:
        call = await make_worker()
        for _ in remaining:
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - began), latencies


def _row(name: str, rate: float, lat: list[float], base: float, base_name: str) -> str:
    q = statistics.quantiles(lat, n=100)
    return (
        f"{name:<16} {rate:>9.0f} {q[49] * 1000:>8.2f} {q[98] * 1000:>8.2f}"
        f" {rate / base:>7.2f}  vs {base_name}"
    )


async def main(total: int, concurrency: int) -> None:
    fake = FakeAuthorizer()
    echo = await asyncio.start_server(_echo_handler, "127.0.0.1", 0)
    echo_port = echo.sockets[0].getsockname()[1]
    agi = FastAGIServer(fake, host="127.0.0.1", port=0, default_switch_id="bench")
    await agi.start()
    http = serve_authorize_http(build_authorize_app(fake, default_switch_id="bench"), port=0)
    await http.start()

    async def connect_worker() -> Callable[[], Awaitable[None]]:
        return lambda: _echo_connect(echo_port)

    async def agi_worker() -> Callable[[], Awaitable[None]]:
        return lambda: _agi_request(agi.port)

    async def keepalive_worker() -> Callable[[], Awaitable[None]]:
        reader, writer = await asyncio.open_connection("127.0.0.1", echo_port)

        async def call() -> None:
            writer.write(ECHO_LINE)
            await writer.drain()
            await reader.readline()

        return call

    async def http_worker() -> Callable[[], Awaitable[None]]:
        reader, writer = await asyncio.open_connection("127.0.0.1", http.port)

        async def call() -> None:
            writer.write(HTTP_REQUEST)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(head.decode())
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)

        return call

    try:
        await _measure(min(total, 200), concurrency, agi_worker)  # warm-up
        results = {
            name: await _measure(total, concurrency, worker)
            for name, worker in (
                ("echo-connect", connect_worker),
                ("fastagi", agi_worker),
                ("echo-keepalive", keepalive_worker),
                ("http-keepalive", http_worker),
            )
        }
    finally:
        await http.stop()
        await agi.close()
        echo.close()
    print(f"{total} requests, concurrency {concurrency}, Python {sys.version.split()[0]}")
    print(f"{'case':<16} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'ratio':>7}")
    for name, base_name in (
        ("echo-connect", "echo-connect"),
        ("fastagi", "echo-connect"),
        ("echo-keepalive", "echo-keepalive"),
        ("http-keepalive", "echo-keepalive"),
    ):
        rate, lat = results[name]
        print(_row(name, rate, lat, results[base_name][0], base_name))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds")
    parser.add_argument("--requests", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=20)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    total = args.requests or (500 if args.quick else 5000)
    asyncio.run(main(total, args.concurrency))
