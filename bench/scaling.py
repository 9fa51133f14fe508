"""Benchmark: two keyplane nodes vs one node, same load, alternating rounds.

    python bench/scaling.py [--rounds 12] [--seconds 2] [--connections 16]

Starts two real `keyplane serve` processes (keyplane.testing.node_process) behind one fresh
PostgreSQL schema (kp_bench_<random>, dropped afterwards), one private redis-server (the shared
rate limiter) and one KEK, with --ip-limit off. Two keys (one per load stream) get a
wallet-balance budget far above what wrk sends, so every request runs auth + the Redis limiter
and is served. Each round runs two wrk processes at once (-t1 -c<connections> each, signed
GET /v5/account/wallet-balance):
  one node:  both wrk processes -> node A (node B idles)
  two nodes: wrk 1 -> node A, wrk 2 -> node B
Rounds alternate (order flipped every round). Prints per-round total req/s, the scaling ratio
two/one, and the CPU used by each node, Redis and the wrk processes and how busy the whole
machine was (/proc, getrusage), which is what bounds the ratio on a small machine: the load
generators, Redis and PostgreSQL share the same CPUs as the nodes.

PostgreSQL: KEYPLANE_BENCH_POSTGRES_URL, default postgresql+psycopg://postgres@127.0.0.1:5432/test.
Needs wrk and redis-server on PATH.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import subprocess
from dataclasses import dataclass

from common import (
    DEFAULT_POSTGRES_URL,
    PATH,
    QUERY,
    BenchKey,
    bench_key,
    cpu_snapshot,
    cpu_used,
    finish_wrk,
    require_wrk,
    run_main,
    signed_headers,
    spread,
    start_wrk,
    stop_process,
    two_nodes,
)

from keyplane.testing import NodeProcess


@dataclass
class Round:
    """One configuration's round: total req/s, per-stream req/s and CPU use."""

    total_rps: float
    stream_rps: tuple[float, float]
    p99_ms: float
    machine_busy: float
    node_cpus: tuple[float, float]
    redis_cpu: float
    wrk_cpu: float


def run_round(
    targets: tuple[NodeProcess, NodeProcess],
    keys: tuple[BenchKey, BenchKey],
    seconds: int,
    connections: int,
    watch: tuple[int, int, int],
) -> Round:
    """Two wrk processes at once: stream i signs with keys[i] and loads targets[i]."""
    before = cpu_snapshot(watch)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk CPU, once they are reaped
    procs: list[subprocess.Popen[str]] = []
    try:
        for node, key in zip(targets, keys, strict=True):
            url = f"{node.url}{PATH}?{QUERY}"
            procs.append(start_wrk(url, signed_headers(key), seconds, connections))
        results = [finish_wrk(p) for p in procs]
    finally:
        for p in procs:  # only left running on error or Ctrl-C
            stop_process(p)
    busy, per_pid = cpu_used(before, cpu_snapshot(watch), seconds)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_cpu = (reaped.ru_utime + reaped.ru_stime - children.ru_utime - children.ru_stime) / seconds
    a, b, r = watch
    return Round(
        total_rps=sum(x.rps for x in results),
        stream_rps=(results[0].rps, results[1].rps),
        p99_ms=max(x.p99_ms for x in results),
        machine_busy=busy,
        node_cpus=(per_pid.get(a, 0.0), per_pid.get(b, 0.0)),
        redis_cpu=per_pid.get(r, 0.0),
        wrk_cpu=wrk_cpu,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--seconds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16, help="per wrk process")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES_URL, help=argparse.SUPPRESS)
    args = parser.parse_args()
    require_wrk()

    with contextlib.ExitStack() as stack:
        cluster = two_nodes(stack, args.postgres)
        service, a, b, redis = cluster.service, cluster.a, cluster.b, cluster.redis
        keys = (bench_key(service, cluster.uid), bench_key(service, cluster.uid))
        watch = (a.process.pid, b.process.pid, redis.pid)
        layouts = {"one": (a, a), "two": (a, b)}
        print(
            f"nodes {a.url} and {b.url} (PostgreSQL schema + private Redis); {args.rounds} "
            f"rounds of {args.seconds} s, 2 x wrk -t1 -c{args.connections}; "
            f"{os.cpu_count()} CPUs",
            flush=True,
        )
        for layout in ("one", "two"):  # warm-up: key caches, Redis script, connection pools
            run_round(layouts[layout], keys, 1, args.connections, watch)

        results: dict[str, list[Round]] = {"one": [], "two": []}
        for rnd in range(args.rounds):
            order = ["one", "two"] if rnd % 2 == 0 else ["two", "one"]
            for layout in order:
                results[layout].append(
                    run_round(layouts[layout], keys, args.seconds, args.connections, watch)
                )
            one, two = results["one"][-1], results["two"][-1]
            print(
                f"round {rnd + 1:2d}: one node {one.total_rps:7.0f} req/s "
                f"(A {one.node_cpus[0]:.2f} CPU, wrk {one.wrk_cpu:.2f}, "
                f"machine {one.machine_busy:4.0%})   "
                f"two nodes {two.total_rps:7.0f} req/s ({two.stream_rps[0]:.0f} + "
                f"{two.stream_rps[1]:.0f}; A {two.node_cpus[0]:.2f} + B {two.node_cpus[1]:.2f} "
                f"CPU, wrk {two.wrk_cpu:.2f}, machine {two.machine_busy:4.0%})   "
                f"ratio {two.total_rps / one.total_rps:.3f}",
                flush=True,
            )

    pairs = zip(results["one"], results["two"], strict=True)
    ratios = [two.total_rps / one.total_rps for one, two in pairs]
    for layout in ("one", "two"):
        rows = results[layout]
        nodes = sum(statistics.median(r.node_cpus[i] for r in rows) for i in (0, 1))
        print(
            f"{layout} node{'s' if layout == 'two' else ' '}: median "
            f"{statistics.median(r.total_rps for r in rows):7.0f} req/s total   "
            f"p99 {statistics.median(r.p99_ms for r in rows):6.2f} ms   "
            f"keyplane CPUs {nodes:.2f}   redis CPU "
            f"{statistics.median(r.redis_cpu for r in rows):.2f}   wrk CPUs "
            f"{statistics.median(r.wrk_cpu for r in rows):.2f}   machine busy "
            f"{statistics.median(r.machine_busy for r in rows):.0%}"
        )
    print(f"scaling ratio two nodes / one node: median {spread(ratios)} ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    run_main(main)
