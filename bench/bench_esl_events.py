"""Bench: ESL parse + decode + translate throughput vs a bare split-into-dicts baseline.

Every recorded FreeSWITCH stream is replayed many times through ESLParser + decode_event
+ ESLTranslator on one core, fed in 64 KiB reads, ``text/event-plain`` streams and the
``text/event-json`` stream reported separately. The baseline frames the same bytes
(header block, Content-Length body) and turns each event into a plain dict: split lines
for plain (no URL decoding, no repeated names), ``json.loads`` for JSON. Run:
``python bench/bench_esl_events.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from connectors.esl.parser import ESLFrame, ESLParser, decode_event
from connectors.esl.translator import ESLTranslator

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "freeswitch"
READ = 65536
GOAL = 30_000  # events/s on one core


def corpus(json_format: bool) -> bytes:
    paths = sorted(FIXTURES.glob("*.esl"))
    return b"".join(p.read_bytes() for p in paths if (p.stem == "json_format") == json_format)


def run_ours(data: bytes, rounds: int) -> tuple[int, float]:
    count = 0
    start = time.perf_counter()
    for _ in range(rounds):
        parser = ESLParser()
        translator = ESLTranslator("bench")
        for pos in range(0, len(data), READ):
            for item in parser.feed(data[pos : pos + READ]):
                if type(item) is ESLFrame and item.content_type.startswith("text/event-"):
                    count += 1
                    translator.feed(decode_event(item))
    return count, time.perf_counter() - start


def run_baseline(data: bytes, rounds: int) -> tuple[int, float]:
    count = 0
    start = time.perf_counter()
    for _ in range(rounds):
        pos = 0
        while (end := data.find(b"\n\n", pos)) >= 0:
            headers = dict(line.split(b": ", 1) for line in data[pos:end].split(b"\n"))
            length = int(headers.get(b"Content-Length", 0))
            body = data[end + 2 : end + 2 + length]
            pos = end + 2 + length
            kind = headers.get(b"Content-Type")
            if kind == b"text/event-plain":
                dict(line.split(b": ", 1) for line in body.partition(b"\n\n")[0].split(b"\n"))
                count += 1
            elif kind == b"text/event-json":
                json.loads(body)
                count += 1
    return count, time.perf_counter() - start


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("--quick", action="store_true", help="a few seconds")
    quick = args.parse_args().quick
    print(f"{'run':<28}{'events':>10}{'seconds':>10}{'events/s':>12}")
    for label, data, rounds in (
        ("plain", corpus(json_format=False), 10 if quick else 100),
        ("json", corpus(json_format=True), 60 if quick else 600),
    ):
        base_n, base_t = run_baseline(data, rounds)
        ours_n, ours_t = run_ours(data, rounds)
        base_rate, ours_rate = base_n / base_t, ours_n / ours_t
        print(f"-- {label}: corpus {len(data)} bytes x {rounds} rounds")
        print(f"{'baseline split->dicts':<28}{base_n:>10}{base_t:>10.3f}{base_rate:>12,.0f}")
        print(f"{'parser+decode+translator':<28}{ours_n:>10}{ours_t:>10.3f}{ours_rate:>12,.0f}")
        verdict = "met" if ours_rate >= GOAL else "NOT met"
        print(f"ratio ours/baseline: {ours_rate / base_rate:.2f}  (goal {GOAL:,}/s {verdict})")


if __name__ == "__main__":
    main()
