"""Benchmark: usage-log ingest into PostgreSQL through the batching writer.

    python bench/usage_ingest.py [--rows 300000] [--offered 60000] [--seconds 10]
                                 [--batch-rows 5000]

On a fresh PostgreSQL schema (kp_bench_<random>, dropped afterwards) with keyplane's migrations:

1. drain: --rows usage rows (realistic: 200 keys, 8 endpoints, mixed statuses) are queued in a
   UsageWriter at once, then flushed to completion: rows/s = rows / wall time, counted from the
   writer's own `written` counter and checked against COUNT(*) in the table.
2. sustained: a producer on the event loop emits --offered rows/s for --seconds (the way the auth
   middleware does: one emit() per request) while the writer's run() loop flushes on its own
   schedule (every 1 s or --batch-rows rows). Reports rows/s written over the run (up to the
   last row written, which includes waiting for the last flush timer) and while emitting, the
   largest queue depth seen (bounded = the writer keeps up), how long after the last emit the
   queue was empty, and the row count in the table (must equal the rows emitted: nothing
   lost, nothing doubled).

Target (issue 5): >= 50,000 rows/s sustained on this machine.
PostgreSQL: KEYPLANE_BENCH_POSTGRES_URL, default postgresql+psycopg://postgres@127.0.0.1:5432/test.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import anyio
from common import DEFAULT_POSTGRES_URL, postgres_schema, run_main
from sqlalchemy import func, select

from keyplane.store import SqlStore, open_store
from keyplane.store.schema import usage_log
from keyplane.usage.model import UsageFields
from keyplane.usage.writer import UsageWriter

_PATHS = (
    ("GET", "/v5/account/wallet-balance"),
    ("GET", "/v5/order/realtime"),
    ("POST", "/v5/order/create"),
    ("POST", "/v5/order/cancel"),
    ("GET", "/v5/position/list"),
    ("GET", "/v5/execution/list"),
    ("POST", "/v5/order/amend"),
    ("GET", "/v5/user/query-api"),
)
_OUTCOMES = ((200, 0), (200, 0), (200, 0), (200, 10006), (401, 10003), (200, 10001))


def usage_fields(i: int, now_ms: int) -> UsageFields:
    """Row i of a realistic mix: 200 keys, 8 endpoints, mostly successes."""
    method, path = _PATHS[i % len(_PATHS)]
    status, ret_code = _OUTCOMES[i % len(_OUTCOMES)]
    key = i % 200
    return (
        now_ms,
        f"BENCHKEY{key:010d}",
        key + 1,
        100_000 + key,
        method,
        path,
        status,
        ret_code,
        64 if method == "POST" else 0,
        180 + i % 400,
        90 + i % 900,
        f"10.0.{key % 250}.{i % 250}",
        ret_code != 10003,
    )


def table_rows(store: SqlStore) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(usage_log)).scalar_one())


def drain(store: SqlStore, spill: Path, rows: int, batch_rows: int) -> float:
    writer = UsageWriter(store, spill_path=spill, queue_max=rows + 1, batch_rows=batch_rows)
    now = int(time.time() * 1000)
    for i in range(rows):
        writer.emit(usage_fields(i, now))
    started = time.perf_counter()
    writer.flush()
    elapsed = time.perf_counter() - started
    if writer.written != rows or writer.spilled:
        raise SystemExit(f"drain wrote {writer.written} of {rows} rows, spilled {writer.spilled}")
    return rows / elapsed


async def sustained(
    store: SqlStore, spill: Path, offered: int, seconds: float, batch_rows: int
) -> dict[str, float]:
    writer = UsageWriter(store, spill_path=spill, batch_rows=batch_rows, queue_max=10_000_000)
    emitted = max_depth = 0
    tick_s = 0.01
    per_tick = max(1, round(offered * tick_s))
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(writer.run)
        started = time.perf_counter()
        deadline = started + seconds
        next_tick = started
        while (now := time.perf_counter()) < deadline:
            at_ms = int(time.time() * 1000)
            for _ in range(per_tick):
                writer.emit(usage_fields(emitted, at_ms))
                emitted += 1
            max_depth = max(max_depth, writer.depth)
            next_tick += tick_s
            await anyio.sleep(max(0.0, next_tick - now))
        emit_end = time.perf_counter()
        written_by_emit_end = writer.written
        while writer.depth or writer.written < emitted:
            await anyio.sleep(0.005)
        done = time.perf_counter()
        tasks.cancel_scope.cancel()
    if writer.spilled or writer.lost:
        raise SystemExit(f"rows spilled {writer.spilled}, lost {writer.lost}: not sustained")
    return {
        "emitted": emitted,
        "offered_rate": emitted / (emit_end - started),
        "written_rate": writer.written / (done - started),
        "written_while_emitting": written_by_emit_end / (emit_end - started),
        "max_depth": max_depth,
        "lag_s": done - emit_end,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--offered", type=int, default=60_000, help="rows/s the producer emits")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch-rows", type=int, default=5000)
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES_URL, help=argparse.SUPPRESS)
    args = parser.parse_args()
    with postgres_schema(args.postgres) as url, tempfile.TemporaryDirectory() as tmp:
        store = open_store(url)
        assert isinstance(store, SqlStore)
        try:
            print(f"drain: {args.rows} queued rows, batches of {args.batch_rows} ...")
            rate = drain(store, Path(tmp) / "spill-a.jsonl", args.rows, args.batch_rows)
            counted = table_rows(store)
            print(f"  {rate:,.0f} rows/s written; {counted} rows in usage_log")
            assert counted == args.rows
            print(f"sustained: {args.offered:,} rows/s offered for {args.seconds:g} s ...")
            result = anyio.run(
                sustained,
                store,
                Path(tmp) / "spill-b.jsonl",
                args.offered,
                args.seconds,
                args.batch_rows,
            )
            counted = table_rows(store) - args.rows
            print(
                f"  offered {result['offered_rate']:,.0f} rows/s, written "
                f"{result['written_rate']:,.0f} rows/s (emit start -> last row written; "
                f"{result['written_while_emitting']:,.0f} rows/s while emitting), "
                f"max queue depth {result['max_depth']:,.0f}, queue empty "
                f"{result['lag_s'] * 1000:.0f} ms after the last emit"
            )
            print(f"  rows emitted {result['emitted']:,.0f}, rows in usage_log {counted:,}")
            assert counted == result["emitted"], "rows lost or doubled"
            print("target: >= 50,000 rows/s sustained")
        finally:
            store.close()


if __name__ == "__main__":
    run_main(main)
