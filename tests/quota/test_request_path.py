"""The daily quota on the request path (in-process app, frozen clock): keys without a quota never
reach the counter; a failing counter follows the limiter's policy (reads open, writes closed),
counted; a spent quota is 10006 and refused requests are not counted."""

from __future__ import annotations

import asyncio
import json

import pytest

from keyplane.clock import FrozenClock
from keyplane.http.app import create_app
from keyplane.keys import KeyEncryptionKey, Permissions
from keyplane.quota import MemoryQuotaCounter, QuotaDecision
from keyplane.settings import Settings
from keyplane.signing import sign_hmac, string_to_sign
from keyplane.store import MemoryStore
from tests.test_http_fuzz import call

CLOCK = FrozenClock()


class FailingCounter:
    """A quota backend that is down; remembers being asked."""

    def __init__(self) -> None:
        self.calls = 0

    async def hit(self, api_key: str, quota: int, now_ms: int) -> QuotaDecision:
        self.calls += 1
        raise ConnectionError("quota backend down")

    async def used(self, api_key: str, now_ms: int) -> int:
        raise ConnectionError("quota backend down")

    async def ping(self) -> None:
        raise ConnectionError("quota backend down")

    async def close(self) -> None:
        pass


class App:
    def __init__(self, counter: object, quota: int | None) -> None:
        self.app = create_app(
            Settings(usage_log=False, anomaly_detection=False),
            store=MemoryStore(),
            clock=CLOCK,
            kek=KeyEncryptionKey.generate(),
            quota=counter,  # type: ignore[arg-type]
        )
        service = self.app.state.service
        init = service.initialize()
        issued = service.create_key(
            init.account.uid, permissions=Permissions.parse("Spot:SpotTrade"), daily_quota=quota
        )
        self.api_key, self.secret = issued.key.api_key, issued.secret.reveal()

    def request(self, method: str, path: str, payload: bytes) -> int:
        """retCode of one signed request (GET: payload is the query; POST: the body)."""
        ts = str(CLOCK.now_ms())
        sig = sign_hmac(self.secret, string_to_sign(ts, self.api_key, "5000", payload))
        headers = [
            (b"x-bapi-api-key", self.api_key.encode()),
            (b"x-bapi-timestamp", ts.encode()),
            (b"x-bapi-sign", sig.encode()),
            (b"x-bapi-recv-window", b"5000"),
        ]
        query, body = (payload, b"") if method == "GET" else (b"", payload)
        if body:
            headers.append((b"content-length", str(len(body)).encode()))
        _, reply = asyncio.run(call(self.app, method, path, query, headers, body))
        return int(reply["retCode"])

    def balance(self) -> int:
        return self.request("GET", "/v5/account/wallet-balance", b"accountType=UNIFIED")

    def order(self) -> int:
        body = {"category": "spot", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Market"}
        return self.request("POST", "/v5/order/create", json.dumps({**body, "qty": "10"}).encode())


def test_key_without_quota_never_reaches_the_counter() -> None:
    """A down quota backend changes nothing for keys without a quota: it is not even asked."""
    counter = FailingCounter()
    app = App(counter, quota=None)
    assert [app.balance(), app.order()] == [0, 0]
    assert counter.calls == 0
    assert app.app.state.limits.quota_decisions == {}


def test_backend_down_reads_pass_writes_refused_and_counted() -> None:
    """Quota backend down: reads fail open, writes fail closed with 10016, each counted."""
    app = App(FailingCounter(), quota=5)
    assert app.balance() == 0
    assert app.order() == 10016
    assert app.app.state.limits.quota_decisions == {"failed_open": 1, "failed_closed": 1}


@pytest.mark.parametrize("quota", [1, 3])
def test_spent_quota_is_10006_and_refusals_are_not_counted(quota: int) -> None:
    """quota requests pass, then 10006 however often the key retries; counted quota times."""
    counter = MemoryQuotaCounter()
    app = App(counter, quota=quota)
    codes = [app.balance() for _ in range(quota + 3)]
    assert codes == [0] * quota + [10006] * 3
    assert asyncio.run(counter.used(app.api_key, CLOCK.now_ms())) == quota
    assert app.app.state.limits.quota_decisions == {"allowed": quota, "refused": 3}
