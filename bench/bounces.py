"""Bounce reading benchmark: how fast ``delivery.dsn.read_report`` classifies each fixture, and the worst cases.

    python bench/bounces.py [--seconds S] [--json]

For each fixture in tests/delivery/fixtures/bounces (placeholders filled with made-up addresses), the
messages per second ``read_report`` classifies in a loop of S seconds; then the time for the hostile
extremes the processor bounds: a message just under the 10 MiB limit (one text part), 200 nested
multiparts, and 10 MiB of random bytes. No database: matching and recording cost a few queries on top.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from delivery.dsn import MAX_BYTES, read_report  # noqa: E402

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "delivery" / "fixtures" / "bounces"
VALUES = {
    "@@VERP@@": "bounces+1234-AAAA.BBBBBBBBBBBBBBBB@shop.example.com",
    "@@RECIPIENT@@": "ana@example.org",
    "@@MESSAGE_ID@@": "<0123456789abcdef@shop.example.com>",
    "@@MAILTO@@": "unsubscribe+1234-AAAA.CCCCCCCCCCCCCCCC@shop.example.com",
}


def fixture(path: Path) -> bytes:
    text = path.read_text()
    for name, value in VALUES.items():
        text = text.replace(name, value)
    return text.encode()


def rate(raw: bytes, seconds: float) -> tuple[float, str]:
    """(messages per second, kind) of read_report on ``raw`` over about ``seconds``."""
    count, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        kind = read_report(raw).kind
        count += 1
    return count / elapsed, kind


def once(raw: bytes) -> tuple[float, str]:
    started = time.perf_counter()
    kind = read_report(raw).kind
    return time.perf_counter() - started, kind


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="per fixture [default: 1]")
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args(argv)
    report = {"fixtures": {}, "extremes": {}}
    for path in sorted(FIXTURES.glob("*.eml")):
        per_second, kind = rate(fixture(path), options.seconds)
        report["fixtures"][path.name] = {"kind": kind, "msgs_per_s": round(per_second)}
    big = b"Subject: big\n\n" + b"x" * 76 + (b"\n" + b"x" * 76) * ((MAX_BYTES - 100) // 77)
    nested = b"".join(b'Content-Type: multipart/mixed; boundary="b%d"\n\n--b%d\n' % (i, i) for i in range(199))
    extremes = {"just under 10 MiB": big, "199 nested multiparts": nested, "10 MiB random": os.urandom(MAX_BYTES)}
    for name, raw in extremes.items():
        seconds, kind = once(raw)
        report["extremes"][name] = {"kind": kind, "seconds": round(seconds, 3)}
    if options.json:
        print(json.dumps(report))
        return 0
    for name, row in report["fixtures"].items():
        print(f"{name:28} {row['kind']:12} {row['msgs_per_s']:>7} msgs/s")
    for name, row in report["extremes"].items():
        print(f"{name:28} {row['kind']:12} {row['seconds']:>7} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
