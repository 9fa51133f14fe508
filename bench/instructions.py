"""Benchmark: CPU instructions per request of the app itself, counted by valgrind (cachegrind),
for the no-auth app and the auth app with the in-memory limiter.

    python bench/instructions.py [--requests 3200]

Each app runs in a child process under `valgrind --tool=cachegrind`, driven through ASGI
directly (the same signed GET /v5/account/wallet-balance as auth_overhead.py, 16 requests at a
time). A child is run twice, with 1600 and 1600 + --requests requests, so start-up and imports
cancel out: instructions per request = (Ir_long - Ir_short) / requests. The apps' background
tasks (lifespan) are not started, PYTHONHASHSEED is fixed and the app clock runs 100x slower
than the wall clock (so the signed headers stay inside their recv_window under valgrind's
slowdown): the count repeats to within ~0.3% between runs.

Why: on this shared 2-vCPU machine the timed benchmarks (auth_overhead.py, inprocess.py) move by
several percent between runs of the same build, so a change worth 1-2 µs per request cannot be
told apart by time. Instruction counts can, and they are what a hot-path change is judged by
first. They are not time: the auth path's straight-line code runs at about half the
instructions per cycle of the baseline's loops (more cache misses and branch mispredictions,
measured with cachegrind's simulators), so the ratio of instructions is higher than the ratio of
CPU time; the target (>= 0.8) is judged by auth_overhead.py.

Needs valgrind (Debian package `valgrind`; `make bench` installs it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from apps import build
from common import PATH, QUERY, app_bench_setup, run_main, signed_get_scope, signed_headers

from keyplane.build import hot_path_build
from keyplane.clock import SystemClock

WARM_REQUESTS = 1600
CONCURRENCY = 16
#: the app clock runs this many times slower than the wall clock in the child
CLOCK_SLOWDOWN = 100
_IR = re.compile(r"I\s+refs:\s+([\d,]+)")


def child(mode: str, requests: int) -> None:
    """Serve `requests` signed GETs in process (no lifespan); exit 1 when one is not retCode 0."""
    with tempfile.TemporaryDirectory(prefix="keyplane-bench-") as tmp:
        db = f"sqlite:///{Path(tmp) / 'bench.db'}"
        key, env = app_bench_setup(db)
        os.environ.update(env)
        start_ns = time.time_ns()
        start_ms = start_ns // 1_000_000

        def slow_now_ms(_: SystemClock) -> int:
            return start_ms + (time.time_ns() - start_ns) // (1_000_000 * CLOCK_SLOWDOWN)

        SystemClock.now_ms = slow_now_ms  # type: ignore[method-assign]
        app = build(mode, db, key.api_key)
        # signed on the app's slowed clock: however long build() took under valgrind, the
        # timestamp is not ahead of the server's time (10002)
        scope = signed_get_scope(signed_headers(key, now_ms=slow_now_ms(SystemClock())))
        refused: list[bytes] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            body = message.get("body", b"")
            if message["type"] == "http.response.body" and not body.startswith(b'{"retCode":0,'):
                refused.append(body)

        async def worker(n: int) -> None:
            for _ in range(n):
                await app(dict(scope), receive, send)

        async def drive() -> None:
            await asyncio.gather(*(worker(requests // CONCURRENCY) for _ in range(CONCURRENCY)))

        asyncio.run(drive())
        if refused:
            sys.exit(f"{len(refused)} requests refused, first: {refused[0][:200]!r}")


def instructions(mode: str, requests: int) -> int:
    """Instructions (cachegrind Ir) of one child serving `requests` requests."""
    argv = [
        "valgrind",
        "--tool=cachegrind",
        "--cache-sim=no",
        "--cachegrind-out-file=/dev/null",
        sys.executable,
        __file__,
        "--child",
        mode,
        "--requests",
        str(requests),
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    match = _IR.search(done.stderr)
    if done.returncode != 0 or match is None:
        sys.exit(f"{mode}: valgrind run failed:\n{done.stderr[-2000:]}")
    return int(match.group(1).replace(",", ""))


def per_request(mode: str, requests: int) -> float:
    """Instructions per request: the difference of a short and a long run."""
    short = instructions(mode, WARM_REQUESTS)
    long = instructions(mode, WARM_REQUESTS + requests)
    return (long - short) / requests


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=3200)
    parser.add_argument("--child", choices=["noauth", "auth"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.requests)
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed: apt-get install valgrind (or `make bench`)")
    print(
        f"cachegrind, {args.requests} requests per app, GET {PATH}?{QUERY}, "
        f"hot path: {hot_path_build()}",
        flush=True,
    )
    counts = {}
    for mode, label in (("noauth", "noauth"), ("auth", "memory")):
        counts[label] = per_request(mode, args.requests)
        print(f"{label:7s} {counts[label]:10,.0f} instructions per request", flush=True)
    overhead = counts["memory"] - counts["noauth"]
    print(
        f"auth + limiter: {overhead:,.0f} instructions per request "
        f"({overhead / counts['noauth']:.1%} of the no-auth request); "
        f"instruction ratio noauth/memory {counts['noauth'] / counts['memory']:.3f}"
    )


if __name__ == "__main__":
    run_main(main)
