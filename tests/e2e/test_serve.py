"""`keyplane serve` as a new user runs it: prints the key once, serves pybit, stops on Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from pybit.unified_trading import HTTP
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from keyplane.keys import KeyEncryptionKey
from keyplane.testing import free_port, node_process


def start_serve(cwd: Path, port: int) -> subprocess.Popen[str]:
    """`keyplane serve --port PORT` in cwd, with no KEYPLANE_* settings inherited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYPLANE_")}
    return subprocess.Popen(
        [sys.executable, "-m", "keyplane", "serve", "--port", str(port)],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_serve_prints_credentials_serves_and_stops_cleanly(tmp_path: Path) -> None:
    """First run initialises, prints a working pybit snippet; SIGINT exits 0 without a traceback."""
    port = free_port()
    proc = start_serve(tmp_path, port)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "server did not start in 30 s"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    match = re.search(r'HTTP\(api_key="(\w{18})", api_secret="(\w{36})"\)', stdout)
    assert match, stdout
    assert (tmp_path / "keyplane.db").exists()
    kek_file = tmp_path / "keyplane.db.kek"
    assert oct(kek_file.stat().st_mode & 0o777) == "0o600"
    assert match.group(2).encode() not in (tmp_path / "keyplane.db").read_bytes()

    # second start: no new credentials, the printed key still works
    port = free_port()
    proc = start_serve(tmp_path, port)
    try:
        session = HTTP(api_key=match.group(1), api_secret=match.group(2), max_retries=1)
        session.endpoint = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                result = session.get_wallet_balance(accountType="UNIFIED")
                break
            except Exception:
                assert time.monotonic() < deadline, "server did not answer in 30 s"
                time.sleep(0.2)
        assert result["retCode"] == 0
    finally:
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    assert "secret" not in stdout.lower()
    assert proc.returncode == 0, stderr


def test_serve_flags_set_the_ws_auth_deadline(tmp_path: Path) -> None:
    """`keyplane serve --ws-auth-timeout 0.5`: a private WebSocket that never authenticates is
    told so and closed (1008) about half a second after it connects."""
    kek = KeyEncryptionKey.generate().to_base64().reveal()
    args = ["--db", f"sqlite:///{tmp_path / 'k.db'}", "--ws-auth-timeout", "0.5"]
    with node_process(args, env={"KEYPLANE_KEK": kek}) as node:
        ws_url = node.url.replace("http://", "ws://") + "/v5/private"
        started = time.monotonic()
        with ws_connect(ws_url, open_timeout=10) as ws:
            reply = json.loads(ws.recv(timeout=5))
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=5)
        waited = time.monotonic() - started
    assert reply["success"] is False
    assert reply["op"] == "auth"
    assert reply["ret_msg"].startswith("error:auth timeout")
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1008
    assert 0.4 <= waited < 3
