"""Several nodes as a user deploys them: `keyplane serve --db postgresql+psycopg://... --redis ...`
twice, one shared PostgreSQL schema, one Redis, one KEK.

- a key revoked or changed through one node fails on the other within 1 s (LISTEN/NOTIFY);
- pybit and ccxt hammering one key across both nodes stay within the key's one budget;
- Redis stopped mid-load: writes 10016, reads served, /readyz 503, recovery without restart;
- SIGTERM finishes a request that is still uploading its body (graceful shutdown);
- replay guard: a request served by one node and replayed to the other gets 10014 (one Redis);
  with Redis stopped guarded writes get 10016 and guarded reads pass.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import ccxt
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pybit.exceptions import FailedRequestError, InvalidRequestError
from pybit.unified_trading import HTTP

from keyplane.clock import SystemClock
from keyplane.keys import KeyEncryptionKey, Permissions, RateOverrides
from keyplane.service import KeyService
from keyplane.signing import sign_hmac, string_to_sign
from keyplane.store import open_store
from keyplane.testing import NodeProcess, node_process
from tests._services import (
    RedisServer,
    fresh_postgres_schema,
    postgres_url_or_skip,
    started_private_redis,
)

from .test_cli import keyplane

pytestmark = pytest.mark.postgres

TRADE = "Spot:SpotTrade,ContractTrade:Order,Wallet:AccountTransfer"
ORDER = {"category": "spot", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Market"}


@dataclass
class Cluster:
    """Two running nodes over one PostgreSQL schema and one Redis, and a service on the store."""

    a: NodeProcess
    b: NodeProcess
    service: KeyService
    uid: int
    redis: RedisServer
    serve_args: list[str]
    env: dict[str, str]

    def new_key(
        self, *, limits: str | None = None, read_only: bool = False, replay_guard: bool = False
    ) -> tuple[str, str]:
        issued = self.service.create_key(
            self.uid,
            permissions=Permissions.parse(TRADE),
            read_only=read_only,
            rate_limits=RateOverrides.parse(limits) if limits else RateOverrides(),
            replay_guard=replay_guard,
        )
        assert issued.secret is not None
        return issued.key.api_key, issued.secret.reveal()


@pytest.fixture
def cluster_env() -> dict[str, str]:
    """Extra environment of both nodes (a test module overrides this fixture to configure
    them, e.g. KEYPLANE_WEBHOOK_URL)."""
    return {}


@pytest.fixture
def cluster(tmp_path: Path, cluster_env: dict[str, str]) -> Iterator[Cluster]:
    with (
        fresh_postgres_schema(postgres_url_or_skip()) as pg_url,
        started_private_redis(tmp_path) as redis,
    ):
        kek = KeyEncryptionKey.generate()
        store = open_store(pg_url)
        service = KeyService(store, kek, SystemClock())
        init = service.initialize()
        assert init is not None
        args = ["--db", pg_url, "--redis", redis.url, "--ip-limit", "off"]
        env = {"KEYPLANE_KEK": kek.to_base64().reveal(), **cluster_env}
        try:
            with node_process(args, env=env) as a, node_process(args, env=env) as b:
                yield Cluster(a, b, service, init.account.uid, redis, args, env)
        finally:
            store.close()


def pybit(url: str, key: str, secret: str, **options: object) -> HTTP:
    session = HTTP(api_key=key, api_secret=secret, **options)
    session.endpoint = url
    return session


def metric(node: NodeProcess, name: str, **labels: str) -> float:
    """The value of one sample of node's /metrics (0 when absent)."""
    text = httpx.get(f"{node.url}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def fails_within(call: object, seconds: float = 1.0) -> tuple[int, float]:
    """(retCode, seconds until the call started failing), polling every 5 ms."""
    assert callable(call)
    started = time.monotonic()
    while True:
        try:
            call()
        except InvalidRequestError as exc:
            return int(exc.status_code), time.monotonic() - started
        elapsed = time.monotonic() - started
        assert elapsed < seconds, f"call still succeeds after {seconds} s"
        time.sleep(0.005)


def test_revocation_through_one_node_reaches_the_other(cluster: Cluster) -> None:
    """pybit deletes its key on node A (/v5/user/delete-api); on node B it fails within 1 s,
    on a connection that was already open, and B's propagation-lag histogram records it."""
    key, secret = cluster.new_key()
    on_a = pybit(cluster.a.url, key, secret, max_retries=1)
    on_b = pybit(cluster.b.url, key, secret, max_retries=1)
    assert on_b.get_wallet_balance(accountType="UNIFIED")["retCode"] == 0  # connection open

    assert on_a.delete_master_api_key()["retCode"] == 0
    code, lag = fails_within(lambda: on_b.get_wallet_balance(accountType="UNIFIED"))
    assert code == 10003
    assert lag < 1.0
    assert metric(cluster.b, "keyplane_revocation_propagation_seconds_count") >= 1


def test_permission_change_on_one_node_applies_on_the_other(cluster: Cluster) -> None:
    """update-api on node A makes the key read-only; node B refuses its orders within 1 s."""
    key, secret = cluster.new_key()
    on_a = pybit(cluster.a.url, key, secret, max_retries=1)
    on_b = pybit(cluster.b.url, key, secret, max_retries=1)
    order = {"category": "spot", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Market"}
    assert on_b.place_order(**order, qty="10")["retCode"] == 0
    assert on_a.modify_master_api_key(readOnly=1)["retCode"] == 0
    code, _ = fails_within(lambda: on_b.place_order(**order, qty="10"))
    assert code == 10005


def test_cli_suspension_reaches_every_node_and_resume_lifts_it(cluster: Cluster) -> None:
    """`keyplane keys suspend` from another process: both nodes answer 10007 within 1 s;
    `keyplane keys resume` makes the key work again on both."""
    key, secret = cluster.new_key()
    sessions = [pybit(node.url, key, secret, max_retries=1) for node in (cluster.a, cluster.b)]
    for session in sessions:
        assert session.get_wallet_balance(accountType="UNIFIED")["retCode"] == 0
    db = cluster.serve_args[cluster.serve_args.index("--db") + 1]

    def cli(*args: str) -> None:
        result = keyplane(*args, db=db, env=cluster.env)
        assert result.returncode == 0, result.stderr

    cli("keys", "suspend", key)
    for session in sessions:
        code, _ = fails_within(lambda s=session: s.get_wallet_balance(accountType="UNIFIED"))
        assert code == 10007
    cli("keys", "resume", key)
    deadline = time.monotonic() + 1.0
    for session in sessions:
        while True:
            try:
                assert session.get_wallet_balance(accountType="UNIFIED")["retCode"] == 0
                break
            except InvalidRequestError:
                assert time.monotonic() < deadline, "resume did not apply within 1 s"
                time.sleep(0.01)


def test_two_nodes_share_one_key_budget(cluster: Cluster) -> None:
    """pybit on node A and ccxt on node B hammer one key whose wallet-balance budget is 10/s:
    together the nodes accept no more than one budget (10 at once + 10 a second)."""
    key, secret = cluster.new_key(limits="account/wallet-balance=10")
    allowed_before = sum(
        metric(node, "keyplane_ratelimit_decisions_total", outcome="allowed")
        for node in (cluster.a, cluster.b)
    )
    stop_at = time.monotonic() + 2.0
    refused: list[int] = []

    def with_pybit() -> None:
        session = pybit(cluster.a.url, key, secret, max_retries=2)
        while time.monotonic() < stop_at:
            try:
                session.get_wallet_balance(accountType="UNIFIED")
            except FailedRequestError:  # pybit backed off on 10006 until its retries ran out
                refused.append(10006)

    def with_ccxt() -> None:
        exchange = ccxt.bybit(
            {
                "apiKey": key,
                "secret": secret,
                "urls": {
                    "api": dict.fromkeys(
                        ("spot", "futures", "v2", "public", "private"), cluster.b.url
                    )
                },
                "options": {"enableUnifiedAccount": True, "enableUnifiedMargin": False},
            }
        )
        while time.monotonic() < stop_at:
            try:
                exchange.private_get_v5_account_wallet_balance({"accountType": "UNIFIED"})
            except ccxt.RateLimitExceeded:
                refused.append(10006)

    started = time.monotonic()
    threads = [threading.Thread(target=t) for t in (with_pybit, with_pybit, with_ccxt, with_ccxt)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    elapsed = time.monotonic() - started
    allowed = {
        node.url: metric(node, "keyplane_ratelimit_decisions_total", outcome="allowed")
        for node in (cluster.a, cluster.b)
    }
    accepted = sum(allowed.values()) - allowed_before
    assert refused
    assert set(refused) == {10006}
    assert accepted <= 10 + 10 * elapsed + 1, (accepted, elapsed)
    assert accepted >= 10  # the budget was used, not refused wholesale
    assert all(value > 0 for value in allowed.values())  # both nodes served the key


def test_redis_down_mid_load_refuses_writes_serves_reads_and_recovers(cluster: Cluster) -> None:
    """Kill the nodes' Redis while pybit reads in a loop: reads keep passing (fail open),
    orders get 10016 (fail closed), /readyz says 503; restart Redis: orders pass again."""
    key, secret = cluster.new_key()
    session = pybit(cluster.a.url, key, secret, max_retries=1)
    order = {"category": "spot", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Market"}
    assert session.place_order(**order, qty="10")["retCode"] == 0

    read_codes: list[int] = []
    stop = threading.Event()

    def reader() -> None:
        reads = pybit(cluster.b.url, key, secret, max_retries=1)
        while not stop.is_set():
            read_codes.append(reads.get_wallet_balance(accountType="UNIFIED")["retCode"])
            time.sleep(0.01)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        time.sleep(0.2)
        cluster.redis.kill()
        with pytest.raises(InvalidRequestError) as refused:
            session.place_order(**order, qty="10")
        assert refused.value.status_code == 10016
        ready = httpx.get(f"{cluster.a.url}/readyz", timeout=5)
        assert ready.status_code == 503
        assert ready.json()["checks"]["ratelimit"] != "ok"
        time.sleep(0.3)
        reads_while_down = len(read_codes)

        cluster.redis.start()
        deadline = time.monotonic() + 10
        codes: list[int] = []
        while not codes or codes[-1] != 0:
            assert time.monotonic() < deadline, f"writes did not recover: {codes[-3:]}"
            try:
                codes.append(session.place_order(**order, qty="10")["retCode"])
            except InvalidRequestError as exc:
                codes.append(int(exc.status_code))
                time.sleep(0.1)
        assert set(codes) <= {0, 10016}
        assert httpx.get(f"{cluster.a.url}/readyz", timeout=5).status_code == 200
    finally:
        stop.set()
        thread.join(timeout=30)
    assert reads_while_down > 5
    assert set(read_codes) == {0}  # every read passed, before, during and after the outage
    assert metric(cluster.a, "keyplane_ratelimit_decisions_total", outcome="failed_closed") >= 1
    assert metric(cluster.b, "keyplane_ratelimit_decisions_total", outcome="failed_open") >= 1


def test_sigterm_finishes_the_request_in_flight(cluster: Cluster) -> None:
    """A signed order whose body is still uploading when node A gets SIGTERM completes with
    retCode 0; the node then exits 0, and node B keeps serving."""
    key, secret = cluster.new_key()
    body = json.dumps(
        {"category": "spot", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Market", "qty": "5"}
    ).encode()
    ts = str(int(time.time() * 1000))
    sign = sign_hmac(secret, string_to_sign(ts, key, "5000", body))
    head = (
        "POST /v5/order/create HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\n"
        f"X-BAPI-API-KEY: {key}\r\nX-BAPI-TIMESTAMP: {ts}\r\nX-BAPI-RECV-WINDOW: 5000\r\n"
        f"X-BAPI-SIGN: {sign}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    port = int(cluster.a.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(head + body[:10])
        time.sleep(0.3)  # the request is now in flight
        cluster.a.process.send_signal(15)  # SIGTERM
        time.sleep(0.5)
        conn.sendall(body[10:])
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    status_line, _, rest = reply.partition(b"\r\n")
    assert b" 200 " in status_line, reply[:200]
    assert json.loads(rest.split(b"\r\n\r\n", 1)[1])["retCode"] == 0
    code, stderr = cluster.a.stop()
    assert code == 0, stderr
    assert "Traceback" not in stderr
    assert (
        pybit(cluster.b.url, key, secret).get_wallet_balance(accountType="UNIFIED")["retCode"] == 0
    )


def _signed(
    key: str, secret: str, method: str, path: str, payload: str
) -> Callable[[NodeProcess], int]:
    """A request signed like pybit (timestamp + key + recv_window + payload, HMAC hex), as the
    (method, path, headers, payload) a captured copy resends byte for byte to any node."""
    ts = str(int(time.time() * 1000))
    sign = sign_hmac(secret, string_to_sign(ts, key, "5000", payload.encode()))
    headers = {
        "X-BAPI-API-KEY": key,
        "X-BAPI-TIMESTAMP": ts,
        "X-BAPI-RECV-WINDOW": "5000",
        "X-BAPI-SIGN": sign,
        "Content-Type": "application/json",
    }

    def send(node: NodeProcess) -> int:
        url = f"{node.url}{path}" + (f"?{payload}" if method == "GET" else "")
        content = payload.encode() if method == "POST" else None
        reply = httpx.request(method, url, headers=headers, content=content, timeout=10)
        assert reply.status_code == 200
        return int(reply.json()["retCode"])

    return send


def test_replay_to_another_node_is_refused(cluster: Cluster) -> None:
    """Guard on: an order served by node A, replayed to node B, gets 10014 (both nodes share
    the Redis store); replayed to A again too. pybit on both nodes keeps working."""
    key, secret = cluster.new_key(replay_guard=True)
    body = json.dumps({**ORDER, "qty": "10"})
    order = _signed(key, secret, "POST", "/v5/order/create", body)
    assert order(cluster.a) == 0
    assert order(cluster.b) == 10014
    assert order(cluster.a) == 10014
    read = _signed(key, secret, "GET", "/v5/account/wallet-balance", "accountType=UNIFIED")
    assert read(cluster.b) == 0
    assert read(cluster.a) == 10014
    for node in (cluster.a, cluster.b):
        session = pybit(node.url, key, secret)
        for _ in range(5):
            assert session.place_order(**ORDER, qty="10")["retCode"] == 0
            assert session.get_wallet_balance(accountType="UNIFIED")["retCode"] == 0
    assert metric(cluster.b, "keyplane_replay_checks_total", outcome="refused") == 1
    assert metric(cluster.a, "keyplane_replay_checks_total", outcome="refused") == 2


def test_replay_guard_with_redis_down_fails_closed_for_writes_and_recovers(
    cluster: Cluster,
) -> None:
    """Redis stopped: a guarded key's order gets 10016 (the guard fails closed for writes,
    before the limiter is asked), its reads pass (fail open); both counted. Redis back: the
    guard works again without a restart (a replay is refused again)."""
    key, secret = cluster.new_key(replay_guard=True)
    session = pybit(cluster.a.url, key, secret, max_retries=1)
    assert session.place_order(**ORDER, qty="10")["retCode"] == 0

    cluster.redis.kill()
    with pytest.raises(InvalidRequestError) as refused:
        session.place_order(**ORDER, qty="10")
    assert refused.value.status_code == 10016
    assert session.get_wallet_balance(accountType="UNIFIED")["retCode"] == 0
    assert metric(cluster.a, "keyplane_replay_checks_total", outcome="failed_closed") == 1
    assert metric(cluster.a, "keyplane_replay_checks_total", outcome="failed_open") == 1

    cluster.redis.start()
    deadline = time.monotonic() + 10
    codes: list[int] = []
    while not codes or codes[-1] != 0:
        assert time.monotonic() < deadline, f"writes did not recover: {codes[-3:]}"
        try:
            codes.append(session.place_order(**ORDER, qty="10")["retCode"])
        except InvalidRequestError as exc:
            codes.append(int(exc.status_code))
            time.sleep(0.1)
    assert set(codes) <= {0, 10016}
    order = _signed(key, secret, "POST", "/v5/order/create", json.dumps(ORDER | {"qty": "1"}))
    assert order(cluster.a) == 0
    assert order(cluster.b) == 10014
