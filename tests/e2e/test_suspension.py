"""Automatic suspension of an abused key, as a user deploys keyplane: two `keyplane serve` nodes
on one PostgreSQL schema behind a proxy (--trusted-proxies 127.0.0.1, so X-Forwarded-For is the
client IP), alerts to a webhook (KEYPLANE_WEBHOOK_URL / KEYPLANE_WEBHOOK_SECRET).

A key used from 10.0.0.5 makes a withdrawal from 203.0.113.9: the withdrawal itself succeeds
(the rule reads the usage stream), then both nodes refuse the key with 10007 within 1 s, the
audit trail shows the flag and the suspension by system:sensitive_call_new_network, the webhook
gets a signed key.suspended alert, and `keyplane keys resume` lifts it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from keyplane.alerts import WEBHOOK_SIGNATURE_HEADER, verify_webhook
from keyplane.clock import SystemClock
from keyplane.keys import KeyEncryptionKey, Permissions
from keyplane.secret import Secret
from keyplane.service import KeyService
from keyplane.signing import sign_hmac, string_to_sign
from keyplane.store import open_store
from keyplane.testing import NodeProcess, node_process, running_server
from tests._services import fresh_postgres_schema, postgres_url_or_skip, started_private_redis
from tests.e2e.test_cli import keyplane

pytestmark = pytest.mark.postgres

HOOK_SECRET = Secret("whsec_e2e_suspension_0123456789")
HOME_IP, ATTACKER_IP = "10.0.0.5", "203.0.113.9"


@dataclass
class Receiver:
    """A webhook endpoint recording every POST (headers, raw body)."""

    url: str = ""
    posts: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            self.posts.append((dict(request.headers), await request.body()))
            return JSONResponse({"ok": True})

        return Starlette(routes=[Route("/hook", hook, methods=["POST"])])

    def verified(self) -> list[dict[str, Any]]:
        """Bodies whose X-Keyplane-Signature verifies under HOOK_SECRET, parsed."""
        now = int(time.time() * 1000)
        return [
            json.loads(body)
            for headers, body in self.posts
            if verify_webhook(HOOK_SECRET, headers[WEBHOOK_SIGNATURE_HEADER.lower()], body, now)
        ]


@dataclass
class Deployment:
    a: NodeProcess
    b: NodeProcess
    service: KeyService
    uid: int
    receiver: Receiver
    db: str
    env: dict[str, str]

    def cli(self, *args: str) -> str:
        result = keyplane(*args, db=self.db, env=self.env)
        assert result.returncode == 0, result.stderr
        return result.stdout


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    receiver = Receiver()
    with (
        running_server(receiver.app()) as hook_base,
        fresh_postgres_schema(postgres_url_or_skip()) as pg_url,
        started_private_redis(tmp_path) as redis,
    ):
        receiver.url = f"{hook_base}/hook"
        kek = KeyEncryptionKey.generate()
        store = open_store(pg_url)
        service = KeyService(store, kek, SystemClock())
        init = service.initialize()
        assert init is not None
        args = ["--db", pg_url, "--redis", redis.url, "--ip-limit", "off"]
        args += ["--trusted-proxies", "127.0.0.1"]
        env = {
            "KEYPLANE_KEK": kek.to_base64().reveal(),
            "KEYPLANE_WEBHOOK_URL": receiver.url,
            "KEYPLANE_WEBHOOK_SECRET": HOOK_SECRET.reveal(),
        }
        try:
            with node_process(args, env=env) as a, node_process(args, env=env) as b:
                yield Deployment(a, b, service, init.account.uid, receiver, pg_url, env)
        finally:
            store.close()


def call(
    node: NodeProcess,
    key: str,
    secret: str,
    method: str,
    path: str,
    params: dict[str, Any],
    ip: str,
) -> dict[str, Any]:
    """One signed V5 request from client ip (X-Forwarded-For); the parsed envelope."""
    ts, window = str(int(time.time() * 1000)), "5000"
    if method == "GET":
        query = "&".join(f"{k}={v}" for k, v in params.items())
        payload, body = query.encode(), b""
        url = f"{node.url}{path}?{query}"
    else:
        body = json.dumps(params, separators=(",", ":")).encode()
        payload, url = body, f"{node.url}{path}"
    headers = {
        "X-BAPI-API-KEY": key,
        "X-BAPI-TIMESTAMP": ts,
        "X-BAPI-RECV-WINDOW": window,
        "X-BAPI-SIGN": sign_hmac(secret, string_to_sign(ts, key, window, payload)),
        "X-Forwarded-For": ip,
        "Content-Type": "application/json",
    }
    reply = httpx.request(method, url, content=body or None, headers=headers, timeout=10)
    envelope: dict[str, Any] = reply.json()
    return envelope


def balance(node: NodeProcess, key: str, secret: str) -> int:
    """retCode of a wallet-balance read from the key's usual network."""
    path, params = "/v5/account/wallet-balance", {"accountType": "UNIFIED"}
    return int(call(node, key, secret, "GET", path, params, HOME_IP)["retCode"])


def refused_within(
    seconds: float, since: float, nodes: dict[str, NodeProcess], key: str, secret: str
) -> dict[str, float]:
    """Poll every node at once (one thread each, every 5 ms) until it answers 10007; returns
    node name -> seconds from `since` (time.monotonic()) to its first 10007."""
    lag: dict[str, float] = {}

    def poll(name: str, node: NodeProcess) -> None:
        while time.monotonic() - since < seconds:
            if balance(node, key, secret) == 10007:
                lag[name] = time.monotonic() - since
                return
            time.sleep(0.005)

    threads = [threading.Thread(target=poll, args=item) for item in nodes.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(lag) == set(nodes), f"still served after {seconds} s on {set(nodes) - set(lag)}"
    return lag


def test_withdrawal_from_a_new_network_suspends_the_key_on_every_node(
    deployment: Deployment,
) -> None:
    d = deployment
    # Wallet:Withdraw: only a master account's key may hold it (keyplane.keys.permissions)
    permissions = Permissions.parse("Wallet:Withdraw,Spot:SpotTrade")
    issued = d.service.create_key(d.uid, permissions=permissions)
    assert issued.secret is not None
    key, secret = issued.key.api_key, issued.secret.reveal()

    for node in (d.a, d.b):  # ordinary use from the usual network
        for _ in range(3):
            assert balance(node, key, secret) == 0

    withdraw = {
        "coin": "USDT",
        "chain": "TRX",
        "address": "TXattacker000",
        "amount": "10",
        "timestamp": int(time.time() * 1000),
    }
    reply = call(d.a, key, secret, "POST", "/v5/asset/withdraw/create", withdraw, ATTACKER_IP)
    assert reply["retCode"] == 0, reply  # the tripping request itself was served
    served_at = time.monotonic()

    lag = refused_within(1.0, served_at, {"A": d.a, "B": d.b}, key, secret)
    print(f"\nsuspension latency: node A {lag['A'] * 1000:.0f} ms, node B {lag['B'] * 1000:.0f} ms")
    for node in (d.a, d.b):  # and it stays refused
        assert balance(node, key, secret) == 10007

    events = json.loads(d.cli("audit", "list", "--key", key, "--json"))
    actor = "system:sensitive_call_new_network"
    flagged = [e for e in events if e["action"] == "anomaly.flag" and e["actor"] == actor]
    suspended = [e for e in events if e["action"] == "key.suspend" and e["actor"] == actor]
    assert len(flagged) == 1
    assert len(suspended) == 1
    assert flagged[0]["after"]["details"]["network"] == "203.0.113.0/24"
    assert secret not in json.dumps(events)

    deadline = time.monotonic() + 10
    while not (alerts := d.receiver.verified()):
        assert time.monotonic() < deadline, "no signed alert reached the webhook"
        time.sleep(0.05)
    [alert] = alerts
    assert alert["kind"] == "key.suspended"
    assert alert["apiKey"] == key
    assert alert["details"]["rule"] == "sensitive_call_new_network"
    assert all(secret not in body.decode() for _, body in d.receiver.posts)

    d.cli("keys", "resume", key)
    deadline = time.monotonic() + 1.0
    for node in (d.a, d.b):
        while balance(node, key, secret) != 0:
            assert time.monotonic() < deadline, "resume did not apply within 1 s"
            time.sleep(0.01)


def withdraw_from(node: NodeProcess, key: str, secret: str, ip: str) -> int:
    """retCode of a withdrawal request from client ip."""
    params = {
        "coin": "USDT",
        "chain": "TRX",
        "address": "TXsomewhere000",
        "amount": "10",
        "timestamp": int(time.time() * 1000),
    }
    return int(call(node, key, secret, "POST", "/v5/asset/withdraw/create", params, ip)["retCode"])


def stored_networks(d: Deployment, key: str) -> set[str]:
    """The key's networks in the shared store (what every node's rules consult)."""
    key_id = d.service.get_key(key).id
    return {n.network for n in d.service.store.load_key_networks([key_id])[key_id]}


def test_network_history_is_shared_by_the_nodes(deployment: Deployment) -> None:
    """A key's usual network seen by node B counts on node A, both ways: a withdrawal through A
    from that network is not flagged (although A itself only saw the key elsewhere), and one
    from a network new to the key is suspended although A never saw the key at all."""
    d = deployment
    permissions = Permissions.parse("Wallet:Withdraw")
    keys = []
    for _ in range(2):
        issued = d.service.create_key(d.uid, permissions=permissions)
        assert issued.secret is not None
        keys.append((issued.key.api_key, issued.secret.reveal()))
    (travelling, travelling_secret), (homebody, homebody_secret) = keys

    assert balance(d.b, travelling, travelling_secret) == 0  # B: from home (10.0.0.0/24)
    path, params = "/v5/account/wallet-balance", {"accountType": "UNIFIED"}
    office = call(d.a, travelling, travelling_secret, "GET", path, params, "10.9.9.9")
    assert office["retCode"] == 0  # A: only from the office
    assert balance(d.b, homebody, homebody_secret) == 0  # the second key: only B, from home
    deadline = time.monotonic() + 5
    while stored_networks(d, travelling) != {"10.0.0.0/24", "10.9.9.0/24"} or (
        stored_networks(d, homebody) != {"10.0.0.0/24"}
    ):
        assert time.monotonic() < deadline, "the nodes did not record the networks"
        time.sleep(0.02)

    assert withdraw_from(d.a, travelling, travelling_secret, HOME_IP) == 0
    time.sleep(0.5)  # ten guard ticks: a false suspension would have happened by now
    for node in (d.a, d.b):
        assert balance(node, travelling, travelling_secret) == 0
    assert d.service.get_key(travelling).status.value == "active"

    assert withdraw_from(d.a, homebody, homebody_secret, ATTACKER_IP) == 0
    lag = refused_within(1.0, time.monotonic(), {"A": d.a, "B": d.b}, homebody, homebody_secret)
    assert max(lag.values()) < 1.0
    assert d.service.get_key(homebody).status.value == "suspended"


def test_failed_signature_burst_sends_one_leak_alert(deployment: Deployment) -> None:
    """Someone holding the api key but not the secret: 25 requests with wrong signatures
    (10004) through both nodes within a minute make one signed leak.suspected alert (the rule
    alerts, it does not suspend: the real owner keeps working)."""
    d = deployment
    issued = d.service.create_key(d.uid, permissions=Permissions.parse("Spot:SpotTrade"))
    assert issued.secret is not None
    key, secret = issued.key.api_key, issued.secret.reveal()
    wrong = "w" * len(secret)
    for i in range(25):
        assert balance(d.a if i % 2 else d.b, key, wrong) == 10004
    deadline = time.monotonic() + 10
    while not (alerts := [a for a in d.receiver.verified() if a["apiKey"] == key]):
        assert time.monotonic() < deadline, "no leak alert reached the webhook"
        time.sleep(0.05)
    time.sleep(0.5)  # a second alert, if any, would have arrived by now
    alerts = [a for a in d.receiver.verified() if a["apiKey"] == key]
    assert [a["kind"] for a in alerts] == ["leak.suspected"]
    assert alerts[0]["details"]["rule"] == "failed_signature_burst"
    assert balance(d.a, key, secret) == 0  # not suspended
    assert all(secret not in body.decode() for _, body in d.receiver.posts)
