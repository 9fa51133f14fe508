"""Benchmark: authenticated GET (HMAC + per-key limiter) vs the same app with auth and limits off,
interleaved on loopback.

    python bench/auth_overhead.py [--limiter memory|redis] [--rounds 40] [--seconds 2]
                                  [--connections 16]

Starts two uvicorn processes from bench/apps.py on one SQLite store: "auth" (keyplane's app:
auth middleware + per-key limiter) and "noauth" (a fixed caller instead of the middleware, so
neither auth nor limits run). The per-IP guard is off (KEYPLANE_IP_LIMIT=off) and the key's
wallet-balance budget is lifted far above what wrk sends, so every request runs the full
limiter path and is served. wrk alternates between the two servers round after round (order
flipped every round) so machine noise hits both alike. 40 rounds by default: on this shared host
single 2 s rounds range from 0.6 to 1.2, and the median of 16 moved by +-0.03 between runs of
one build.

--limiter memory (default): in-process limiter; target ratio auth/noauth >= 0.8.
--limiter redis: the auth app uses RedisRateLimiter on a private redis-server started for the
run; target ratio >= 0.6, and 1 Redis round trip per request, measured two ways each round:
server side (INFO commandstats evalsha+eval calls and total_commands_processed deltas, divided
by the requests wrk completed) and keyplane's own /metrics
(keyplane_ratelimit_backend_round_trips_total / keyplane_ratelimit_decisions_total{allowed}).

Prints per-round requests/s and ratio, then medians, p50/p99 latency, CPU per request (each
node's process, and the redis-server) and the ratio summary.
Prints the hot-path build it measured (keyplane.build: "python", or "compiled" when run with
.venv-compiled/bin/python; `make bench-compiled`).
Needs wrk (Debian package `wrk`; `make bench` installs it) and, for redis, redis-server.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

import redis
from common import (
    PATH,
    QUERY,
    Samples,
    WrkResult,
    app_bench_setup,
    free_port,
    metric,
    private_redis,
    redis_command_counts,
    require_wrk,
    run_main,
    run_wrk_cpu,
    scrape,
    signed_headers,
    spread,
    start_bench_app,
    stop_process,
)

from keyplane.build import hot_path_build

#: commands the bench itself sends between two redis_command_counts() readings (its INFOs)
_BENCH_REDIS_COMMANDS = 2


@dataclass
class RoundTrips:
    """One auth round, per request wrk completed: Redis round trips seen by the server
    (EVALSHA/EVAL, and other top-level commands), all commands Redis counted (including the
    GET and SET the script runs), and keyplane's own count per allowed decision."""

    eval_per_request: float
    other_per_request: float
    all_commands_per_request: float
    keyplane_per_decision: float
    decisions_per_request: float


def measure_round_trips(
    counter: redis.Redis, app_url: str, run: WrkResult, before: tuple[dict[str, int], Samples]
) -> RoundTrips:
    """Deltas since `before` (redis counts, /metrics samples) divided by wrk's requests."""
    counts0, samples0 = before
    counts1, samples1 = redis_command_counts(counter), scrape(app_url)

    def delta(*names: str) -> int:
        return sum(counts1.get(n, 0) - counts0.get(n, 0) for n in names)

    evals = delta("evalsha", "eval")
    in_script = delta("get", "set")  # only the limiter script calls GET/SET here
    others = delta("_total") - evals - in_script - _BENCH_REDIS_COMMANDS
    trips_name, allowed_name = (
        "keyplane_ratelimit_backend_round_trips_total",
        "keyplane_ratelimit_decisions_total",
    )
    trips = metric(samples1, trips_name) - metric(samples0, trips_name)
    allowed = metric(samples1, allowed_name, outcome="allowed") - metric(
        samples0, allowed_name, outcome="allowed"
    )
    return RoundTrips(
        eval_per_request=evals / run.requests,
        other_per_request=others / run.requests,
        all_commands_per_request=(delta("_total") - _BENCH_REDIS_COMMANDS) / run.requests,
        keyplane_per_decision=trips / allowed if allowed else float("nan"),
        decisions_per_request=allowed / run.requests,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--limiter", choices=["memory", "redis"], default="memory")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--seconds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    require_wrk()

    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="keyplane-bench-")))
        db = f"sqlite:///{tmp / 'bench.db'}"
        key, env = app_bench_setup(db)

        private = stack.enter_context(private_redis(tmp)) if args.limiter == "redis" else None
        redis_url = private.url if private is not None else None
        counter = redis.Redis.from_url(redis_url) if redis_url is not None else None
        if counter is not None:
            stack.callback(counter.close)
        ports = {"auth": free_port(), "noauth": free_port()}
        pids: dict[str, int] = {}
        for mode, port in ports.items():
            proc = start_bench_app(mode, port, db, key, env, redis_url if mode == "auth" else None)
            pids[mode] = proc.pid
            stack.callback(stop_process, proc)
        urls = {mode: f"http://127.0.0.1:{port}" for mode, port in ports.items()}
        print(
            f"limiter {args.limiter}: {args.rounds} rounds of {args.seconds} s, "
            f"wrk -t1 -c{args.connections}, GET {PATH}?{QUERY}, hot path: {hot_path_build()}",
            flush=True,
        )

        results: dict[str, list[WrkResult]] = {"auth": [], "noauth": []}
        trips: list[RoundTrips] = []
        # CPU per request (µs): each node's process, and the private redis-server
        node_us: dict[str, list[float]] = {"auth": [], "noauth": []}
        redis_us: dict[str, list[float]] = {"auth": [], "noauth": []}
        for rnd in range(args.rounds):
            order = ["auth", "noauth"] if rnd % 2 == 0 else ["noauth", "auth"]
            for mode in order:
                url = f"{urls[mode]}{PATH}?{QUERY}"
                before = None
                if counter is not None and mode == "auth":
                    before = (redis_command_counts(counter), scrape(urls["auth"]))
                others = [private.pid] if private is not None else []
                run, node_cpu, redis_cpu = run_wrk_cpu(
                    url, signed_headers(key), args.seconds, args.connections, pids[mode], others
                )
                node_us[mode].append(node_cpu)
                if private is not None:
                    redis_us[mode].append(redis_cpu)
                results[mode].append(run)
                if counter is not None and before is not None:
                    trips.append(measure_round_trips(counter, urls["auth"], run, before))
            a, n = results["auth"][-1], results["noauth"][-1]
            line = (
                f"round {rnd + 1:2d}: auth {a.rps:8.0f} req/s   noauth {n.rps:8.0f} req/s   "
                f"ratio {a.rps / n.rps:.3f}"
            )
            if trips:
                t = trips[-1]
                line += (
                    f"   redis: evalsha+eval/req {t.eval_per_request:.4f}"
                    f"  other cmds/req {t.other_per_request:.4f}"
                    f"  keyplane trips/decision {t.keyplane_per_decision:.4f}"
                )
            print(line, flush=True)

    ratios = [a.rps / n.rps for a, n in zip(results["auth"], results["noauth"], strict=True)]
    for mode in ("auth", "noauth"):
        rows = results[mode]
        print(
            f"{mode:7s} median {statistics.median(r.rps for r in rows):8.0f} req/s   "
            f"p50 {statistics.median(r.p50_ms for r in rows):6.2f} ms   "
            f"p99 {statistics.median(r.p99_ms for r in rows):6.2f} ms   "
            f"CPU/request: node {statistics.median(node_us[mode]):5.1f} µs"
            + (f", redis {statistics.median(redis_us[mode]):5.1f} µs" if redis_us[mode] else "")
        )
    target = 0.8 if args.limiter == "memory" else 0.6
    print(f"ratio auth({args.limiter} limiter)/noauth: median {spread(ratios)}; target >= {target}")
    if trips:
        trip_rows = [
            ("server side, EVALSHA+EVAL calls / wrk requests", "eval_per_request"),
            ("server side, other top-level commands / wrk requests", "other_per_request"),
            ("server side, all commands incl. the script's GET+SET", "all_commands_per_request"),
            ("keyplane round_trips_total / decisions{allowed}", "keyplane_per_decision"),
            ("keyplane decisions{allowed} / wrk requests", "decisions_per_request"),
        ]
        print("redis round trips per request, median (min-max) over rounds; target 1:")
        for label, field in trip_rows:
            print(f"  {label:55s} {spread([getattr(t, field) for t in trips])}")
        print(
            "  (wrk does not count the requests still in flight when a round ends, so the "
            "per-wrk-request figures sit slightly above the per-decision one)"
        )


if __name__ == "__main__":
    run_main(main)
