"""Benchmark: authenticated GET throughput with the usage log on vs off, interleaved on loopback.

    python bench/usage_overhead.py [--store postgres|sqlite] [--rounds 16] [--seconds 2]
                                   [--connections 16]

Starts two uvicorn processes from bench/apps.py, both keyplane's real app (auth middleware and
in-memory per-key limiter) on one store: "off" with the usage log off, "on" with it on (one row
per request, queued off the request path and written by the batching writer: COPY on
PostgreSQL, batched inserts on SQLite). The anomaly guard is off in both, so the figure is the
cost of the usage log alone. The per-IP guard is off and the key's wallet-balance budget lifted,
so every request is served. wrk alternates between the two servers round after round (order
flipped every round) so machine noise hits both alike. Target (issue 5): on/off >= 0.9.

After the last round the "on" node is stopped (SIGTERM drains its queue), and the bench checks
that nothing was lost: rows in usage_log >= requests wrk completed against "on" (wrk does not
count the requests in flight when a round ends), every row has retCode 0, and none was spilled
or lost (keyplane_usage_rows_spilled / _lost scraped just before the stop).

--store postgres (default): a fresh schema in KEYPLANE_BENCH_POSTGRES_URL (default
postgresql+psycopg://postgres@127.0.0.1:5432/test), dropped afterwards. --store sqlite: a file
in a temporary directory. Needs wrk (Debian package `wrk`; `make bench` installs it).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import tempfile
from pathlib import Path

from common import (
    DEFAULT_POSTGRES_URL,
    PATH,
    QUERY,
    WrkResult,
    app_bench_setup,
    free_port,
    metric,
    postgres_schema,
    require_wrk,
    run_main,
    run_wrk_cpu,
    scrape,
    signed_headers,
    spread,
    start_bench_app,
    stop_process,
)
from sqlalchemy import create_engine, text

MODES = ("off", "on")


def postgres_pids() -> list[int]:
    """pids of the local PostgreSQL processes (server and backends), for CPU accounting."""
    found = subprocess.run(["pgrep", "-x", "postgres"], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


def usage_rows_by_ret_code(db: str) -> dict[int, int]:
    """{retCode: rows} in the store's usage_log table."""
    engine = create_engine(db)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT ret_code, count(*) FROM usage_log GROUP BY ret_code"))
            return {int(code): int(n) for code, n in rows}
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES_URL, help=argparse.SUPPRESS)
    args = parser.parse_args()
    require_wrk()

    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="keyplane-bench-")))
        if args.store == "postgres":
            db = stack.enter_context(postgres_schema(args.postgres))
        else:
            db = f"sqlite:///{tmp / 'bench.db'}"
        key, env = app_bench_setup(db)

        ports = {mode: free_port() for mode in MODES}
        procs = {}
        for mode, port in ports.items():
            flags = ("--usage-log",) if mode == "on" else ()
            procs[mode] = start_bench_app("auth", port, db, key, env, flags=flags)
            stack.callback(stop_process, procs[mode])
        urls = {mode: f"http://127.0.0.1:{port}" for mode, port in ports.items()}
        print(
            f"store {args.store}: {args.rounds} rounds of {args.seconds} s, "
            f"wrk -t1 -c{args.connections}, GET {PATH}?{QUERY}, usage log off vs on",
            flush=True,
        )

        results: dict[str, list[WrkResult]] = {mode: [] for mode in MODES}
        # CPU per request (µs): the node's process, and the local PostgreSQL's processes
        node_us: dict[str, list[float]] = {mode: [] for mode in MODES}
        pg_us: dict[str, list[float]] = {mode: [] for mode in MODES}
        for rnd in range(args.rounds):
            order = MODES if rnd % 2 == 0 else MODES[::-1]
            for mode in order:
                pg = postgres_pids() if args.store == "postgres" else []
                run, node_cpu, pg_cpu = run_wrk_cpu(
                    f"{urls[mode]}{PATH}?{QUERY}",
                    signed_headers(key),
                    args.seconds,
                    args.connections,
                    procs[mode].pid,
                    pg,
                )
                node_us[mode].append(node_cpu)
                pg_us[mode].append(pg_cpu)
                results[mode].append(run)
            on, off = results["on"][-1], results["off"][-1]
            print(
                f"round {rnd + 1:2d}: off {off.rps:8.0f} req/s   on {on.rps:8.0f} req/s   "
                f"ratio {on.rps / off.rps:.3f}",
                flush=True,
            )

        samples = scrape(urls["on"])
        spilled = metric(samples, "keyplane_usage_rows_spilled_total")
        lost = metric(samples, "keyplane_usage_rows_lost_total")
        stop_process(procs["on"])  # SIGTERM: the writer drains its queue before exit
        by_code = usage_rows_by_ret_code(db)

    ratios = [on.rps / off.rps for on, off in zip(results["on"], results["off"], strict=True)]
    for mode in MODES:
        rows = results[mode]
        print(
            f"usage log {mode:3s} median {statistics.median(r.rps for r in rows):8.0f} req/s   "
            f"p50 {statistics.median(r.p50_ms for r in rows):6.2f} ms   "
            f"p99 {statistics.median(r.p99_ms for r in rows):6.2f} ms   "
            f"CPU/request: node {statistics.median(node_us[mode]):5.1f} µs"
            + (f", PostgreSQL {statistics.median(pg_us[mode]):5.1f} µs" if pg_us[mode][0] else "")
        )
    print(f"ratio on/off: median {spread(ratios)}; target >= 0.9")
    sent = sum(r.requests for r in results["on"])
    stored = sum(by_code.values())
    print(
        f"lossless: wrk completed {sent} requests on 'on'; usage_log holds {stored} rows "
        f"(by retCode {by_code}); spilled {spilled:.0f}, lost {lost:.0f}"
    )
    if stored < sent or set(by_code) != {0} or lost:
        raise SystemExit("usage rows missing, lost or not retCode 0")


if __name__ == "__main__":
    run_main(main)
