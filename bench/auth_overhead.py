"""Benchmark: authenticated GET (HMAC, in-memory per-key limiter) vs the same app with auth and
limits off, interleaved on loopback.

    python bench/auth_overhead.py [--rounds 16] [--seconds 2] [--connections 16]

Starts two uvicorn processes (one with the auth middleware, one with a fixed caller), then runs
wrk against them in alternation, round after round, so that machine noise hits both alike.
Prints per-round requests/s, the median ratio auth/noauth (target >= 0.8), and p50/p99 latency.
Needs wrk (Debian package `wrk`; `make bench` installs it).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from keyplane.clock import SystemClock
from keyplane.keys import KeyEncryptionKey, RateOverrides
from keyplane.service import KeyService
from keyplane.signing import sign_hmac, string_to_sign
from keyplane.store import open_store
from keyplane.testing import free_port

PATH = "/v5/account/wallet-balance"
QUERY = "accountType=UNIFIED"
RECV_WINDOW = "60000"


def start(
    mode: str, port: int, db: str, api_key: str, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    script = Path(__file__).with_name("apps.py")
    proc = subprocess.Popen(
        [
            sys.executable,
            str(script),
            "--mode",
            mode,
            "--port",
            str(port),
            "--db",
            db,
            "--api-key",
            api_key,
        ],
        env=env,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{mode} server did not start")


def signed_headers(api_key: str, secret: str) -> list[str]:
    """Headers valid for the next ~55 s (recv_window 60 s, timestamp slightly in the past)."""
    ts = str(int(time.time() * 1000) - 100)
    sig = sign_hmac(secret, string_to_sign(ts, api_key, RECV_WINDOW, QUERY.encode()))
    return [
        f"X-BAPI-API-KEY: {api_key}",
        f"X-BAPI-TIMESTAMP: {ts}",
        f"X-BAPI-RECV-WINDOW: {RECV_WINDOW}",
        f"X-BAPI-SIGN: {sig}",
    ]


def wrk(url: str, headers: list[str], seconds: int, connections: int) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) from one wrk run; raises if any reply was not 2xx."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for h in headers:
        cmd += ["-H", h]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"non-2xx replies:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return rps, _latency(out, "50%"), _latency(out, "99%")


def _latency(out: str, pct: str) -> float:
    m = re.search(rf"{re.escape(pct)}\s+([\d.]+)(us|ms|s)", out)
    assert m, out
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk (or `make bench`)")

    tmp = Path(tempfile.mkdtemp(prefix="keyplane-bench-"))
    db = f"sqlite:///{tmp / 'bench.db'}"
    kek = KeyEncryptionKey.generate()
    # the load comes from one IP and one key: lift the per-IP guard and give the key a budget
    # far above what wrk can send, so every request runs the full limiter path and is served
    env = {**os.environ, "KEYPLANE_KEK": kek.to_base64().reveal(), "KEYPLANE_IP_LIMIT": "off"}
    store = open_store(db)
    service = KeyService(store, kek, SystemClock())
    init = service.initialize()
    assert init is not None
    service.update_key(
        init.issued.key.api_key,
        rate_limits=RateOverrides.parse("account/wallet-balance=1000000"),
    )
    store.close()
    assert init is not None
    assert init.issued.secret is not None
    api_key, secret = init.issued.key.api_key, init.issued.secret.reveal()

    ports = {"auth": free_port(), "noauth": free_port()}
    procs = [start(mode, port, db, api_key, env) for mode, port in ports.items()]
    results: dict[str, list[tuple[float, float, float]]] = {"auth": [], "noauth": []}
    try:
        for rnd in range(args.rounds):
            order = ["auth", "noauth"] if rnd % 2 == 0 else ["noauth", "auth"]
            for mode in order:
                url = f"http://127.0.0.1:{ports[mode]}{PATH}?{QUERY}"
                results[mode].append(
                    wrk(url, signed_headers(api_key, secret), args.seconds, args.connections)
                )
            a, n = results["auth"][-1], results["noauth"][-1]
            print(
                f"round {rnd + 1}: auth {a[0]:8.0f} req/s   noauth {n[0]:8.0f} req/s   "
                f"ratio {a[0] / n[0]:.3f}"
            )
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)

    ratios = [a[0] / n[0] for a, n in zip(results["auth"], results["noauth"], strict=True)]
    for mode in ("auth", "noauth"):
        rows = results[mode]
        print(
            f"{mode:7s} median {statistics.median(r[0] for r in rows):8.0f} req/s   "
            f"p50 {statistics.median(r[1] for r in rows):6.2f} ms   "
            f"p99 {statistics.median(r[2] for r in rows):6.2f} ms"
        )
    print(
        f"ratio auth/noauth: median {statistics.median(ratios):.3f} "
        f"(min {min(ratios):.3f}, max {max(ratios):.3f}); target >= 0.8"
    )


if __name__ == "__main__":
    main()
