"""Shared pieces of the benchmarks in bench/: wrk runs, signed requests, private servers, cleanup.

Imported by auth_overhead.py, scaling.py and revocation.py (run them as `python bench/<x>.py`,
which puts bench/ on sys.path). Nothing here prints a secret: api secrets and the KEK only go
into signatures and child-process environments.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import redis
from prometheus_client.parser import text_string_to_metric_families

from keyplane.clock import SystemClock
from keyplane.keys import KeyEncryptionKey, Permissions, RateOverrides
from keyplane.service import KeyService
from keyplane.signing import sign_hmac, string_to_sign
from keyplane.testing import NodeProcess, free_port, node_process
from keyplane.testing import postgres_schema as testing_postgres_schema

__all__ = [
    "DEFAULT_POSTGRES_URL",
    "LIFTED_BUDGET",
    "PATH",
    "QUERY",
    "RECV_WINDOW",
    "BenchKey",
    "CpuSnapshot",
    "PrivateRedis",
    "Samples",
    "TwoNodes",
    "WrkResult",
    "app_bench_setup",
    "bench_key",
    "cpu_snapshot",
    "cpu_used",
    "finish_wrk",
    "free_port",
    "lift_budget",
    "metric",
    "new_service",
    "postgres_schema",
    "private_redis",
    "redis_command_counts",
    "require_wrk",
    "run_main",
    "run_wrk",
    "run_wrk_cpu",
    "scrape",
    "signed_get_scope",
    "signed_headers",
    "signed_http_headers",
    "spread",
    "start_bench_app",
    "start_wrk",
    "stop_process",
    "two_nodes",
    "wait_until_up",
]

#: the request every throughput benchmark sends: a read served by the demo venue
PATH = "/v5/account/wallet-balance"
QUERY = "accountType=UNIFIED"
#: 60 s, so one set of signed headers stays valid for a whole wrk round
RECV_WINDOW = "60000"
#: per-key budget far above what wrk can send: every request runs the full limiter path and
#: is served (never 10006)
LIFTED_BUDGET = "account/wallet-balance=1000000"
DEFAULT_POSTGRES_URL = os.environ.get(
    "KEYPLANE_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


# --- keys and signing --------------------------------------------------------------------------
@dataclass(frozen=True)
class BenchKey:
    """An HMAC api key and its secret (str; never printed)."""

    api_key: str
    secret: str

    def __repr__(self) -> str:
        return f"BenchKey(api_key={self.api_key!r}, secret='***')"


def lift_budget(service: KeyService, api_key: str) -> None:
    """Give the key's wallet-balance route a budget wrk cannot exhaust (LIFTED_BUDGET)."""
    service.update_key(api_key, rate_limits=RateOverrides.parse(LIFTED_BUDGET))


def bench_key(service: KeyService, uid: int, permissions: str = "") -> BenchKey:
    """A new HMAC key of account uid with the lifted wallet-balance budget."""
    issued = service.create_key(
        uid,
        note="bench",
        permissions=Permissions.parse(permissions) if permissions else Permissions(),
        rate_limits=RateOverrides.parse(LIFTED_BUDGET),
    )
    assert issued.secret is not None
    return BenchKey(issued.key.api_key, issued.secret.reveal())


def new_service(store_url: str, kek: KeyEncryptionKey) -> KeyService:
    """A KeyService on store_url (opened and migrated) with the system clock."""
    from keyplane.store import open_store

    return KeyService(open_store(store_url), kek, SystemClock())


def app_bench_setup(store_url: str) -> tuple[BenchKey, dict[str, str]]:
    """Initialise store_url with a new KEK for the bench/apps.py pairs: returns the master key
    (its wallet-balance budget lifted, see lift_budget) and the child environment (the KEK,
    KEYPLANE_IP_LIMIT=off, no KEYPLANE_REDIS_URL: only --redis decides the limiter)."""
    kek = KeyEncryptionKey.generate()
    env = {**os.environ, "KEYPLANE_KEK": kek.to_base64().reveal(), "KEYPLANE_IP_LIMIT": "off"}
    env.pop("KEYPLANE_REDIS_URL", None)
    service = new_service(store_url, kek)
    try:
        init = service.initialize()
        assert init is not None
        assert init.issued.secret is not None
        key = BenchKey(init.issued.key.api_key, init.issued.secret.reveal())
        lift_budget(service, key.api_key)
    finally:
        service.store.close()
    return key, env


def signed_http_headers(
    key: BenchKey, payload: bytes, *, recv_window: str = "5000", ts_ms: int | None = None
) -> dict[str, str]:
    """The four X-BAPI-* headers for one request (payload: query string or body bytes)."""
    ts = str(ts_ms if ts_ms is not None else int(time.time() * 1000))
    sig = sign_hmac(key.secret, string_to_sign(ts, key.api_key, recv_window, payload))
    return {
        "X-BAPI-API-KEY": key.api_key,
        "X-BAPI-TIMESTAMP": ts,
        "X-BAPI-RECV-WINDOW": recv_window,
        "X-BAPI-SIGN": sig,
    }


def signed_headers(key: BenchKey, query: str = QUERY, now_ms: int | None = None) -> list[str]:
    """wrk -H lines valid for the next ~55 s (recv_window 60 s, timestamp 100 ms before now_ms,
    default the wall clock)."""
    ts = (now_ms if now_ms is not None else int(time.time() * 1000)) - 100
    headers = signed_http_headers(key, query.encode(), recv_window=RECV_WINDOW, ts_ms=ts)
    return [f"{name}: {value}" for name, value in headers.items()]


def signed_get_scope(headers: Sequence[str]) -> dict[str, Any]:
    """The ASGI HTTP scope of GET PATH?QUERY from 127.0.0.1 with `headers` ("Name: value"
    lines, as signed_headers gives them), for driving an app in process without a server."""
    raw = [line.split(": ", 1) for line in headers]
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": PATH,
        "raw_path": PATH.encode(),
        "query_string": QUERY.encode(),
        "root_path": "",
        "headers": [(n.lower().encode(), v.encode()) for n, v in raw] + [(b"host", b"127.0.0.1")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
        "state": {},
    }


# --- wrk ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WrkResult:
    """One wrk run: requests/s, latency p50/p99 (ms), and requests completed."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int


def require_wrk() -> None:
    """Exit with a hint when wrk is not on PATH."""
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk (or `make bench`)")


def start_wrk(
    url: str, headers: Sequence[str], seconds: float, connections: int
) -> subprocess.Popen[str]:
    """Start `wrk -t1 -c<connections> -d<seconds>s --latency` against url (non-blocking)."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for h in headers:
        cmd += ["-H", h]
    return subprocess.Popen([*cmd, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_wrk(proc: subprocess.Popen[str]) -> WrkResult:
    """Wait for a wrk started by start_wrk and parse it; raises on errors or non-2xx replies."""
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {err}")
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw non-2xx replies or socket errors:\n{out}")
    rps = float(_search(r"Requests/sec:\s+([\d.]+)", out))
    requests = int(_search(r"(\d+) requests in", out))
    return WrkResult(rps, _latency(out, "50%"), _latency(out, "99%"), requests)


def run_wrk(url: str, headers: Sequence[str], seconds: float, connections: int) -> WrkResult:
    """One blocking wrk run (see start_wrk / finish_wrk)."""
    return finish_wrk(start_wrk(url, headers, seconds, connections))


def run_wrk_cpu(
    url: str,
    headers: Sequence[str],
    seconds: float,
    connections: int,
    node_pid: int,
    other_pids: Sequence[int] = (),
) -> tuple[WrkResult, float, float]:
    """One blocking wrk run, with the CPU it cost per completed request: (result, µs of
    node_pid's CPU, µs of other_pids' CPU together, e.g. redis-server or PostgreSQL)."""
    watched = [node_pid, *other_pids]
    before = cpu_snapshot(watched)
    result = run_wrk(url, headers, seconds, connections)
    _, per_pid = cpu_used(before, cpu_snapshot(watched), 1.0)
    node = per_pid.get(node_pid, 0.0) / result.requests * 1e6
    others = sum(v for pid, v in per_pid.items() if pid != node_pid) / result.requests * 1e6
    return result, node, others


def _search(pattern: str, out: str) -> str:
    m = re.search(pattern, out)
    if m is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    return m.group(1)


def _latency(out: str, pct: str) -> float:
    m = re.search(rf"{re.escape(pct)}\s+([\d.]+)(us|ms|s)", out)
    if m is None:
        raise RuntimeError(f"no {pct} latency in wrk output:\n{out}")
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def spread(values: Sequence[float]) -> str:
    """'median (min-max)' with three decimals."""
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


# --- processes ---------------------------------------------------------------------------------
def wait_until_up(
    url: str, proc: subprocess.Popen[bytes] | None = None, timeout_s: float = 30
) -> None:
    """Poll url until it answers 200; raises RuntimeError when proc exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server for {url} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout_s} s")


def stop_process(
    proc: subprocess.Popen[bytes] | subprocess.Popen[str], timeout_s: float = 10
) -> None:
    """SIGTERM proc (by its pid), wait, SIGKILL when it does not exit in time."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout_s)


def start_bench_app(
    mode: str,
    port: int,
    db: str,
    key: BenchKey,
    env: dict[str, str],
    redis_url: str | None = None,
    flags: Sequence[str] = (),
) -> subprocess.Popen[bytes]:
    """bench/apps.py --mode <mode> [flags] on port, ready (GET /healthz answers).

    flags: extra apps.py options, e.g. ("--usage-log",).
    """
    argv = [sys.executable, str(Path(__file__).with_name("apps.py")), "--mode", mode]
    argv += ["--port", str(port), "--db", db, "--api-key", key.api_key, *flags]
    if redis_url is not None:
        argv += ["--redis", redis_url]
    proc = subprocess.Popen(argv, env=env)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/healthz", proc)
    except BaseException:
        stop_process(proc)
        raise
    return proc


def _raise_interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_main(main: Callable[[], None]) -> None:
    """Run a benchmark's main() so that Ctrl-C and SIGTERM unwind through its `finally` blocks
    and context managers (stopping servers, dropping the schema), then exit 130 quietly.

    SIGINT gets Python's handler back even when the shell started us with it ignored
    (background jobs of a non-interactive shell).
    """
    signal.signal(signal.SIGINT, _raise_interrupt)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted; servers stopped and temporary state removed", file=sys.stderr)
        sys.exit(130)


# --- Redis -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PrivateRedis:
    """A redis-server started by private_redis(): url "redis://127.0.0.1:P/0" and pid."""

    url: str
    pid: int


@contextlib.contextmanager
def private_redis(workdir: Path) -> Iterator[PrivateRedis]:
    """A throwaway `redis-server --port <free> --save "" --appendonly no` (url and pid).

    Killed (by pid) afterwards, also on error or Ctrl-C.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not on PATH (Debian package redis-server)")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
    argv += ["no", "--dir", str(workdir)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("private redis-server did not start") from None
                time.sleep(0.02)
        client.close()
        yield PrivateRedis(f"redis://127.0.0.1:{port}/0", proc.pid)
    finally:
        proc.kill()
        proc.wait(timeout=10)


def redis_command_counts(client: redis.Redis) -> dict[str, int]:
    """Server-side counters: calls per command name (INFO commandstats, lower-case names) and
    "_total" (INFO stats total_commands_processed).

    Redis counts the commands a Lua script runs (redis.call GET/SET) in both, so round trips
    are the top-level commands: EVALSHA/EVAL plus connection chatter (HELLO, PING, ...). The
    two INFO calls that read these are commands too (counted by the next reading); pass one
    long-lived client so no connection set-up (HELLO, CLIENT SETINFO) is counted either.
    """
    stats = client.info("commandstats")
    total = int(client.info("stats")["total_commands_processed"])
    counts = {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in stats.items()
        if isinstance(value, dict)
    }
    counts["_total"] = total
    return counts


# --- two nodes -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class TwoNodes:
    """Two `keyplane serve` nodes on one fresh PostgreSQL schema and one private Redis:
    service (a KeyService on the same schema), uid (the initial account), redis, a and b."""

    service: KeyService
    uid: int
    redis: PrivateRedis
    a: NodeProcess
    b: NodeProcess


def two_nodes(
    stack: contextlib.ExitStack, postgres_url: str, serve_args: Sequence[str] = ()
) -> TwoNodes:
    """Start TwoNodes (per-IP guard off, plus serve_args) inside stack, which stops the nodes,
    Redis and drops the schema on exit; the KEK is new and only in the nodes' environment."""
    workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="keyplane-bench-")))
    pg_url = stack.enter_context(postgres_schema(postgres_url))
    redis = stack.enter_context(private_redis(workdir))
    kek = KeyEncryptionKey.generate()
    service = new_service(pg_url, kek)
    stack.callback(service.store.close)
    init = service.initialize()
    assert init is not None
    argv = ["--db", pg_url, "--redis", redis.url, "--ip-limit", "off", *serve_args]
    env = {"KEYPLANE_KEK": kek.to_base64().reveal()}
    a = stack.enter_context(node_process(argv, env=env))
    b = stack.enter_context(node_process(argv, env=env))
    return TwoNodes(service, init.account.uid, redis, a, b)


# --- PostgreSQL --------------------------------------------------------------------------------
def postgres_schema(url: str = DEFAULT_POSTGRES_URL) -> contextlib.AbstractContextManager[str]:
    """A fresh schema kp_bench_<random>, dropped afterwards (keyplane.testing.postgres_schema)."""
    return testing_postgres_schema(url, prefix="kp_bench_")


# --- /metrics ----------------------------------------------------------------------------------
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(base_url: str, client: httpx.Client | None = None) -> Samples:
    """Every sample of base_url/metrics: {(name, labels): value}."""
    getter = client.get if client is not None else httpx.get
    body = getter(f"{base_url}/metrics", timeout=5).text
    samples: Samples = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = float(s.value)
    return samples


def metric(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (0 when absent)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


# --- CPU accounting ----------------------------------------------------------------------------
@dataclass(frozen=True)
class CpuSnapshot:
    """Machine-wide busy and total jiffies (/proc/stat) and per-pid jiffies (/proc/<pid>/stat)."""

    busy: int
    total: int
    per_pid: dict[int, int]


def cpu_snapshot(pids: Sequence[int] = ()) -> CpuSnapshot:
    """Read /proc now (Linux only)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # user..steal; guest time is already inside user
    per_pid: dict[int, int] = {}
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        rest = stat.rsplit(")", 1)[1].split()
        per_pid[pid] = int(rest[11]) + int(rest[12])  # utime + stime
    return CpuSnapshot(total - idle, total, per_pid)


def cpu_used(
    before: CpuSnapshot, after: CpuSnapshot, seconds: float
) -> tuple[float, dict[int, float]]:
    """(machine busy fraction 0..1, {pid: CPUs used on average}) between two snapshots."""
    span = after.total - before.total
    busy = (after.busy - before.busy) / span if span else 0.0
    hz = os.sysconf("SC_CLK_TCK")
    per_pid = {
        pid: (after.per_pid[pid] - before.per_pid.get(pid, 0)) / hz / seconds
        for pid in after.per_pid
    }
    return busy, per_pid
