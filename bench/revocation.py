"""Benchmark: how fast a revocation through node A stops the key on node B.

    python bench/revocation.py [--count 200] [--timeout 5]

Starts two real `keyplane serve` processes (keyplane.testing.node_process) behind one fresh
PostgreSQL schema (kp_bench_<random>, dropped afterwards), one private redis-server and one KEK,
with --ip-limit off. Creates --count master keys (KeyService on the same store) up front, then for
each key:
  1. one signed GET /v5/account/wallet-balance on node B answers retCode 0 (B caches the key);
  2. POST /v5/user/delete-api (body {}) signed by that key itself goes to node A (Bybit's
     delete-api deletes the calling key) and answers retCode 0;
  3. from the moment A's reply arrives, node B is polled back to back with signed GETs on a
     kept-alive connection (httpx.Client) until it answers retCode 10003: that time is the
     client-observed propagation (resolution: one loopback request, ~1-2 ms).
Node B's own measurement is read from its /metrics before and after: the histogram
keyplane_revocation_propagation_seconds (commit of the write on A -> B dropping its key cache on
the PostgreSQL NOTIFY; sum/count delta and buckets). B observes only notices that reached it
before its 200 ms revision poll did, so its count can be below --count.

Prints progress every 20 revocations and a summary: p50/p99/max of the client-observed
propagation (target p99 < 100 ms, never above 1 s) and the server-side mean.
PostgreSQL: KEYPLANE_BENCH_POSTGRES_URL, default postgresql+psycopg://postgres@127.0.0.1:5432/test.
Needs redis-server on PATH.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time

import httpx
from common import (
    DEFAULT_POSTGRES_URL,
    PATH,
    QUERY,
    BenchKey,
    Samples,
    bench_key,
    metric,
    run_main,
    scrape,
    signed_http_headers,
    two_nodes,
)

#: Spot:SpotTrade as the brief asks, plus Wallet:AccountTransfer: delete-api (like update-api)
#: needs Wallet AccountTransfer or SubMemberTransfer (keyplane.policy), else retCode 10005
PERMISSIONS = "Spot:SpotTrade,Wallet:AccountTransfer"
HISTOGRAM = "keyplane_revocation_propagation_seconds"
PROGRESS_EVERY = 20


def ret_code(reply: httpx.Response) -> int:
    """The envelope's retCode (raises on a non-200 or non-JSON reply)."""
    reply.raise_for_status()
    return int(reply.json()["retCode"])


def read_balance(client: httpx.Client, url: str, key: BenchKey) -> int:
    """One signed GET wallet-balance on url; its retCode."""
    headers = signed_http_headers(key, QUERY.encode())
    return ret_code(client.get(f"{url}{PATH}?{QUERY}", headers=headers))


def delete_self(client: httpx.Client, url: str, key: BenchKey) -> int:
    """POST /v5/user/delete-api {} signed by key (revokes key itself); its retCode."""
    body = b"{}"
    headers = {**signed_http_headers(key, body), "Content-Type": "application/json"}
    return ret_code(client.post(f"{url}/v5/user/delete-api", content=body, headers=headers))


def propagation(
    client_a: httpx.Client,
    client_b: httpx.Client,
    urls: tuple[str, str],
    key: BenchKey,
    timeout_s: float,
) -> tuple[float, int]:
    """(seconds from A's delete-api reply to B's first 10003, polls it took) for one key."""
    url_a, url_b = urls
    code = read_balance(client_b, url_b, key)
    if code != 0:
        raise RuntimeError(f"node B refused the fresh key: retCode {code}")
    code = delete_self(client_a, url_a, key)
    if code != 0:
        raise RuntimeError(f"delete-api on node A answered retCode {code}")
    replied = time.perf_counter()
    polls = 0
    while True:
        polls += 1
        code = read_balance(client_b, url_b, key)
        elapsed = time.perf_counter() - replied
        if code == 10003:
            return elapsed, polls
        if code != 0:
            raise RuntimeError(f"node B answered retCode {code} while polling")
        if elapsed > timeout_s:
            return float("inf"), polls


Buckets = list[tuple[str, float]]


def histogram_delta(before: Samples, after: Samples) -> tuple[float, float, Buckets]:
    """(sum delta s, count delta, [(le, cumulative count delta)]) of the propagation histogram."""

    def delta(suffix: str, **labels: str) -> float:
        name = HISTOGRAM + suffix
        return metric(after, name, **labels) - metric(before, name, **labels)

    buckets = sorted(
        {dict(labels)["le"] for name, labels in after if name == f"{HISTOGRAM}_bucket"},
        key=float,
    )
    rows = [(le, delta("_bucket", le=le)) for le in buckets]
    return delta("_sum"), delta("_count"), rows


def percentile(values: list[float], pct: float) -> float:
    """The pct-th percentile (0..100), nearest rank."""
    ordered = sorted(values)
    rank = max(1, round(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=200, help="revocations to measure")
    parser.add_argument(
        "--timeout", type=float, default=5.0, help="give up on one key after this many seconds"
    )
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES_URL, help=argparse.SUPPRESS)
    args = parser.parse_args()

    lags: list[float] = []
    polls: list[int] = []
    with contextlib.ExitStack() as stack:
        cluster = two_nodes(stack, args.postgres)
        service, node_a, node_b = cluster.service, cluster.a, cluster.b
        keys = [bench_key(service, cluster.uid, PERMISSIONS) for _ in range(args.count)]
        client_a = stack.enter_context(httpx.Client(timeout=10))
        client_b = stack.enter_context(httpx.Client(timeout=10))
        print(
            f"nodes A {node_a.url} and B {node_b.url} (PostgreSQL schema + private Redis); "
            f"{args.count} keys created; revoking each through A, polling B",
            flush=True,
        )
        time.sleep(1)  # let the key creations' notices settle on both nodes
        before = scrape(node_b.url, client_b)
        for i, key in enumerate(keys, start=1):
            lag, n = propagation(client_a, client_b, (node_a.url, node_b.url), key, args.timeout)
            lags.append(lag)
            polls.append(n)
            if i % PROGRESS_EVERY == 0 or i == len(keys):
                window = lags[-PROGRESS_EVERY:]
                print(
                    f"revocations {i - len(window) + 1:4d}-{i:4d}: "
                    f"p50 {ms(statistics.median(window))}   max {ms(max(window))}   "
                    f"polls median {statistics.median(polls[-PROGRESS_EVERY:]):.0f}",
                    flush=True,
                )
        after = scrape(node_b.url, client_b)

    total, count, buckets = histogram_delta(before, after)
    failed = sum(1 for lag in lags if lag == float("inf"))
    print(f"client-observed propagation over {len(lags)} revocations (A's reply -> B's 10003):")
    print(
        f"  p50 {ms(percentile(lags, 50))}   p99 {ms(percentile(lags, 99))}   "
        f"max {ms(max(lags))}   mean {ms(statistics.fmean(lags))}   "
        f"(target p99 < 100 ms, never above 1 s; over {args.timeout} s: {failed})"
    )
    first = sum(1 for n in polls if n == 1)
    print(
        f"  B already answered 10003 on the first poll in {first}/{len(polls)} revocations; "
        f"polls per revocation median {statistics.median(polls):.0f}, max {max(polls)}"
    )
    mean = f"{total / count * 1000:.2f} ms" if count else "n/a"
    print(
        f"node B {HISTOGRAM}: count +{count:.0f}, sum +{total * 1000:.1f} ms, mean {mean} "
        "(commit on A -> B drops its cache)"
    )
    cumulative = ", ".join(f"{le}: {c:.0f}" for le, c in buckets)
    print(f"  buckets (le: cumulative count delta): {cumulative}")
    if failed or max(lags) > 1.0:
        sys.exit(1)


if __name__ == "__main__":
    run_main(main)
