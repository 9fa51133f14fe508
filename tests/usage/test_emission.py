"""What the auth middleware hands the usage log: one row per request that named an api key,
passed or refused, with status, retCode, sizes, latency, and whether the signature verified."""

from __future__ import annotations

import time

import anyio
import httpx
import pytest

from keyplane.clock import SystemClock
from keyplane.http.app import create_app
from keyplane.keys import IpAllowlist, KeyEncryptionKey
from keyplane.service import KeyService
from keyplane.settings import Settings
from keyplane.signing import sign_hmac, string_to_sign
from keyplane.store import MemoryStore
from keyplane.usage import UsageEvent, UsageFields

WALLET = "/v5/account/wallet-balance"
QUERY = "accountType=UNIFIED"


class Node:
    """An app on a MemoryStore whose usage rows are captured instead of queued."""

    def __init__(self, *, usage_log: bool = True) -> None:
        self.store = MemoryStore()
        kek = KeyEncryptionKey.generate()
        self.service = KeyService(self.store, kek, SystemClock())
        init = self.service.initialize()
        assert init is not None
        assert init.issued.secret is not None
        self.uid = init.account.uid
        self.key = init.issued.key
        self.secret = init.issued.secret.reveal()
        settings = Settings(ip_limit="off", usage_log=usage_log)
        self.app = create_app(settings, store=self.store, kek=kek)
        self.rows: list[UsageEvent] = []
        if usage_log:
            self.app.state.usage.emit = self._capture

    def _capture(self, row: UsageEvent | UsageFields) -> None:
        self.rows.append(UsageEvent(*row) if isinstance(row, tuple) else row)

    def get(self, path: str, *, api_key: str | None, secret: str = "") -> httpx.Response:
        headers: dict[str, str] = {}
        if api_key is not None:
            ts = str(int(time.time() * 1000))
            sig = sign_hmac(secret, string_to_sign(ts, api_key, "5000", QUERY.encode()))
            headers = {
                "X-BAPI-API-KEY": api_key,
                "X-BAPI-TIMESTAMP": ts,
                "X-BAPI-RECV-WINDOW": "5000",
                "X-BAPI-SIGN": sig,
            }

        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                return await client.get(f"{path}?{QUERY}", headers=headers)

        return anyio.run(call)


@pytest.fixture
def node() -> Node:
    return Node()


class TestUsageEmission:
    def test_passed_request(self, node: Node) -> None:
        """A served request: retCode 0, HTTP 200, the key and account, the body size sent."""
        before = int(time.time() * 1000)
        reply = node.get(WALLET, api_key=node.key.api_key, secret=node.secret)
        assert reply.json()["retCode"] == 0
        [row] = node.rows
        assert (row.api_key, row.key_id, row.uid) == (node.key.api_key, node.key.id, node.uid)
        assert (row.method, row.path, row.http_status, row.ret_code) == ("GET", WALLET, 200, 0)
        assert row.authenticated
        assert row.response_bytes == len(reply.content)
        assert row.request_bytes == 0
        assert row.latency_us > 0
        assert before <= row.at_ms <= int(time.time() * 1000)
        assert row.client_ip == "127.0.0.1"

    def test_wrong_signature_and_unknown_key(self, node: Node) -> None:
        """Refusals at the signature or key step are rows with authenticated False."""
        node.get(WALLET, api_key=node.key.api_key, secret="x" * 36)
        node.get(WALLET, api_key="NOSUCHKEY123456789", secret="x" * 36)
        wrong, unknown = node.rows
        assert (wrong.ret_code, wrong.key_id, wrong.authenticated) == (10004, node.key.id, False)
        assert (unknown.ret_code, unknown.key_id, unknown.uid) == (10003, None, None)
        assert not unknown.authenticated
        assert node.secret not in repr(node.rows)

    def test_refusal_after_the_signature_is_authenticated(self, node: Node) -> None:
        """An IP-bound key used from elsewhere (10010): the caller holds the secret."""
        issued = node.service.create_key(node.uid, ips=IpAllowlist.parse("10.1.2.3"))
        assert issued.secret is not None
        node.get(WALLET, api_key=issued.key.api_key, secret=issued.secret.reveal())
        [row] = node.rows
        assert (row.ret_code, row.authenticated) == (10010, True)

    def test_requests_without_a_key_make_no_row(self, node: Node) -> None:
        """Public routes and requests that name no api key are not usage rows."""
        assert node.get("/v5/market/time", api_key=None).status_code == 200
        assert node.get(WALLET, api_key=None).json()["retCode"] == 10003
        assert node.rows == []

    def test_usage_log_off(self) -> None:
        """KEYPLANE_USAGE_LOG=false: no writer; lastUsedAt still recorded the old way."""
        off = Node(usage_log=False)
        assert off.app.state.usage is None
        assert off.get(WALLET, api_key=off.key.api_key, secret=off.secret).json()["retCode"] == 0
