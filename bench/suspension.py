"""Benchmark: automatic suspension latency on two nodes, from the tripping request to the first
refusal.

    python bench/suspension.py [--count 50] [--timeout 5]

Starts two real `keyplane serve` processes (keyplane.testing.node_process) on one fresh
PostgreSQL schema (kp_bench_<random>, dropped afterwards) and one private redis-server, behind
a "proxy" (--trusted-proxies 127.0.0.1, so X-Forwarded-For is the client IP), with the anomaly
guard on as shipped. For each of --count master keys with Wallet:Withdraw:
  1. two wallet-balance reads from the key's usual network 10.0.0.5, one on each node (the
     network history every node shares through the store);
  2. a withdrawal through node A from 203.0.113.9, a network the key never used: the
     sensitive_call_new_network rule suspends the key (the withdrawal itself is served);
  3. from the moment A's reply arrives, both nodes are polled back to back (one thread each,
     signed reads from the usual network) until each answers retCode 10007.
Reports p50/p99/max of the time from the tripping request's reply to the first refusal on each
node (target p99 < 1 s), and how many of the polls got through in between (the requests the key
still got after the one that tripped the rule).
PostgreSQL: KEYPLANE_BENCH_POSTGRES_URL, default postgresql+psycopg://postgres@127.0.0.1:5432/test.
Needs redis-server on PATH.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import threading
import time

import httpx
from common import (
    DEFAULT_POSTGRES_URL,
    PATH,
    QUERY,
    BenchKey,
    bench_key,
    run_main,
    signed_http_headers,
    two_nodes,
)
from revocation import ms, percentile, ret_code

from keyplane.testing import NodeProcess

HOME_IP, ATTACKER_IP = "10.0.0.5", "203.0.113.9"
PROGRESS_EVERY = 10


def read_balance(client: httpx.Client, node: NodeProcess, key: BenchKey) -> int:
    """One signed wallet-balance read from the key's usual network; its retCode."""
    headers = {**signed_http_headers(key, QUERY.encode()), "X-Forwarded-For": HOME_IP}
    return ret_code(client.get(f"{node.url}{PATH}?{QUERY}", headers=headers))


def withdraw(client: httpx.Client, node: NodeProcess, key: BenchKey) -> int:
    """A withdrawal from ATTACKER_IP (a network new to the key); its retCode."""
    params = {
        "coin": "USDT",
        "chain": "TRX",
        "address": "TXbench0000000",
        "amount": "10",
        "timestamp": int(time.time() * 1000),
    }
    body = json.dumps(params, separators=(",", ":")).encode()
    headers = {
        **signed_http_headers(key, body),
        "Content-Type": "application/json",
        "X-Forwarded-For": ATTACKER_IP,
    }
    return ret_code(
        client.post(f"{node.url}/v5/asset/withdraw/create", content=body, headers=headers)
    )


def first_refusal(
    client: httpx.Client, node: NodeProcess, key: BenchKey, since: float, timeout_s: float
) -> tuple[float, int]:
    """(seconds from `since` (perf_counter) to node's first 10007, reads served before it)."""
    served = 0
    while True:
        code = read_balance(client, node, key)
        elapsed = time.perf_counter() - since
        if code == 10007:
            return elapsed, served
        if code != 0:
            raise RuntimeError(f"{node.url} answered retCode {code} while polling")
        served += 1
        if elapsed > timeout_s:
            return float("inf"), served


def one_suspension(
    clients: tuple[httpx.Client, httpx.Client],
    nodes: tuple[NodeProcess, NodeProcess],
    key: BenchKey,
    timeout_s: float,
) -> list[tuple[float, int]]:
    """[(latency s, reads served in between) on A, on B] for one key."""
    for client, node in zip(clients, nodes, strict=True):
        code = read_balance(client, node, key)
        if code != 0:
            raise RuntimeError(f"{node.url} refused the fresh key: retCode {code}")
    time.sleep(0.1)  # the guard writes the new network within a tick (50 ms)
    code = withdraw(clients[0], nodes[0], key)
    if code != 0:
        raise RuntimeError(f"the withdrawal through node A answered retCode {code}")
    replied = time.perf_counter()
    results: list[tuple[float, int]] = [(float("inf"), 0), (float("inf"), 0)]

    def poll(i: int) -> None:
        results[i] = first_refusal(clients[i], nodes[i], key, replied, timeout_s)

    threads = [threading.Thread(target=poll, args=(i,)) for i in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=50, help="suspensions to measure")
    parser.add_argument(
        "--timeout", type=float, default=5.0, help="give up on one key after this many seconds"
    )
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES_URL, help=argparse.SUPPRESS)
    args = parser.parse_args()

    lags: dict[str, list[float]] = {"A": [], "B": []}
    through: dict[str, list[int]] = {"A": [], "B": []}
    with contextlib.ExitStack() as stack:
        cluster = two_nodes(stack, args.postgres, ["--trusted-proxies", "127.0.0.1"])
        service, nodes = cluster.service, (cluster.a, cluster.b)
        keys = [bench_key(service, cluster.uid, "Wallet:Withdraw") for _ in range(args.count)]
        clients = (
            stack.enter_context(httpx.Client(timeout=10)),
            stack.enter_context(httpx.Client(timeout=10)),
        )
        print(
            f"nodes A {nodes[0].url} and B {nodes[1].url} (PostgreSQL schema + private Redis, "
            f"anomaly guard on); {args.count} keys; each withdraws through A from a new network",
            flush=True,
        )
        time.sleep(1)  # let the key creations' notices settle on both nodes
        for i, key in enumerate(keys, start=1):
            per_node = one_suspension(clients, nodes, key, args.timeout)
            for name, (lag, served) in zip("AB", per_node, strict=True):
                lags[name].append(lag)
                through[name].append(served)
            if i % PROGRESS_EVERY == 0 or i == len(keys):
                print(
                    f"suspensions {i - PROGRESS_EVERY + 1:3d}-{i:3d}: "
                    + "   ".join(
                        f"{n}: p50 {ms(statistics.median(lags[n][-PROGRESS_EVERY:]))}" for n in "AB"
                    ),
                    flush=True,
                )

    print(f"from the tripping request's reply to the first 10007, over {args.count} keys:")
    for name in "AB":
        values = lags[name]
        failed = sum(1 for v in values if v == float("inf"))
        print(
            f"  node {name}: p50 {ms(percentile(values, 50))}   p99 {ms(percentile(values, 99))}"
            f"   max {ms(max(values))}   reads served in between: median "
            f"{statistics.median(through[name]):.0f}, max {max(through[name])}"
            + (f"   (over {args.timeout} s: {failed})" if failed else "")
        )
    print("target: p99 < 1 s on every node")


if __name__ == "__main__":
    run_main(main)
