"""Bench: AMI parse + translate throughput vs a bare split-into-dicts baseline.

Every recorded Asterisk stream (banner stripped) is concatenated and replayed many
times through AMIParser + AMITranslator on one core, fed in 64 KiB reads; the baseline
splits the same bytes on ``\\r\\n\\r\\n`` into dicts. Run: ``python bench/bench_ami_events.py
[--quick]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from connectors.ami.parser import AMIMessage, AMIParser
from connectors.ami.translator import AMITranslator

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "asterisk"
READ = 65536


def corpus() -> bytes:
    parts = []
    for path in sorted(FIXTURES.glob("*.ami")):
        body = path.read_bytes().split(b"\r\n", 1)[1]
        parts.append(body)
    return b"".join(parts)


def run_ours(data: bytes, rounds: int) -> tuple[int, float]:
    count = 0
    start = time.perf_counter()
    for _ in range(rounds):
        parser = AMIParser(expect_banner=False)
        translator = AMITranslator("bench")
        for pos in range(0, len(data), READ):
            for item in parser.feed(data[pos : pos + READ]):
                if type(item) is AMIMessage:
                    count += 1
                    translator.feed(item)
    return count, time.perf_counter() - start


def run_baseline(data: bytes, rounds: int) -> tuple[int, float]:
    count = 0
    start = time.perf_counter()
    for _ in range(rounds):
        for block in data.split(b"\r\n\r\n"):
            if block:
                dict(line.split(b": ", 1) for line in block.split(b"\r\n"))
                count += 1
    return count, time.perf_counter() - start


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("--quick", action="store_true", help="a few seconds")
    quick = args.parse_args().quick
    data = corpus()
    rounds = 15 if quick else 150
    base_n, base_t = run_baseline(data, rounds)
    ours_n, ours_t = run_ours(data, rounds)
    base_rate, ours_rate = base_n / base_t, ours_n / ours_t
    print(f"corpus {len(data)} bytes x {rounds} rounds")
    print(f"{'run':<28}{'messages':>10}{'seconds':>10}{'msg/s':>12}")
    print(f"{'baseline split->dicts':<28}{base_n:>10}{base_t:>10.3f}{base_rate:>12,.0f}")
    print(f"{'parser+translator':<28}{ours_n:>10}{ours_t:>10.3f}{ours_rate:>12,.0f}")
    print(f"ratio ours/baseline: {ours_rate / base_rate:.2f}")


if __name__ == "__main__":
    main()
