"""Benchmark: CPU per request of the app itself, in one process, with no HTTP server or load
generator sharing the CPUs.

    python bench/inprocess.py [--requests 16000] [--concurrency 16] [--rounds 3]

Builds the apps of bench/apps.py in this process and drives them through ASGI directly (the
same signed GET /v5/account/wallet-balance as auth_overhead.py): "noauth" (auth and limits off),
"memory" (auth + in-memory limiter), "redis" (auth + Redis limiter on a private redis-server
started for the run). `--concurrency` requests run at once, as from that many connections, so
the Redis limiter coalesces them as it does under load. Rounds alternate the apps; reported:
median CPU time of this process per request (time.process_time; redis-server's own CPU is not
included) and the in-process ratios noauth/memory and noauth/redis.

Why: over HTTP on this 2-vCPU machine wrk, uvicorn, redis-server and PostgreSQL share the CPUs,
and the auth_overhead.py ratios move by several hundredths between runs of the same build; a
change worth a few µs per request can only be told apart here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from apps import build
from common import (
    PATH,
    QUERY,
    app_bench_setup,
    private_redis,
    run_main,
    signed_get_scope,
    signed_headers,
)

from keyplane.build import hot_path_build

MODES = ("noauth", "memory", "redis")


async def cpu_per_request(app: Any, headers: list[str], requests: int, concurrency: int) -> float:
    """µs of this process's CPU per request over `requests` requests, `concurrency` at a time
    (after a warm-up of 100 per worker); raises when a reply is not HTTP 200 with retCode 0."""
    scope = signed_get_scope(headers)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if len(sent) < 2:
            sent.append(message)

    async def worker(n: int) -> None:
        for _ in range(n):
            await app(dict(scope), receive, send)

    async with app.router.lifespan_context(app):
        await asyncio.gather(*(worker(100) for _ in range(concurrency)))
        if sent[0]["status"] != 200 or not sent[1]["body"].startswith(b'{"retCode":0,'):
            raise RuntimeError(f"unexpected reply: {sent}")
        per_worker = requests // concurrency
        started = time.process_time()
        await asyncio.gather(*(worker(per_worker) for _ in range(concurrency)))
        return (time.process_time() - started) / (per_worker * concurrency) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=16_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="keyplane-bench-")))
        db = f"sqlite:///{tmp / 'bench.db'}"
        key, env = app_bench_setup(db)
        redis_url = stack.enter_context(private_redis(tmp)).url
        os.environ.update(env)  # the KEK and the IP guard off, as the child apps get them
        headers = signed_headers(key)
        cpu: dict[str, list[float]] = {mode: [] for mode in MODES}
        print(
            f"{args.rounds} rounds of {args.requests} requests, {args.concurrency} at a time, "
            f"GET {PATH}?{QUERY}, hot path: {hot_path_build()}",
            flush=True,
        )
        for rnd in range(args.rounds):
            for mode in MODES if rnd % 2 == 0 else MODES[::-1]:
                app = build(
                    "noauth" if mode == "noauth" else "auth",
                    db,
                    key.api_key,
                    redis_url if mode == "redis" else None,
                )
                cpu[mode].append(
                    asyncio.run(cpu_per_request(app, headers, args.requests, args.concurrency))
                )
            print(
                f"round {rnd + 1}: "
                + "   ".join(f"{mode} {cpu[mode][-1]:6.1f} µs" for mode in MODES),
                flush=True,
            )
    med = {mode: statistics.median(values) for mode, values in cpu.items()}
    for mode in MODES:
        print(f"{mode:7s} median {med[mode]:6.1f} µs CPU per request")
    print(
        f"in-process ratio noauth/memory {med['noauth'] / med['memory']:.3f}, "
        f"noauth/redis {med['noauth'] / med['redis']:.3f}"
    )


if __name__ == "__main__":
    run_main(main)
