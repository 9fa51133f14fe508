"""The replay guard as a user meets it: real pybit signs a request, the exact bytes it sent
are captured and sent again with httpx.

- guard on (`keyplane keys update KEY --replay-guard`): the copy gets HTTP 200, retCode 10014
  "Invalid duplicate request.", and the venue does not act twice; pybit and ccxt keep working;
- guard off (the default, as on Bybit): the copy is served like the original (retCode 0).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import requests
from prometheus_client.parser import text_string_to_metric_families
from pybit.unified_trading import HTTP

from keyplane.signing import sign_hmac, string_to_sign

from .conftest import Server
from .test_ccxt import exchange
from .test_cli import keyplane

ORDER = {"category": "spot", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Market"}


@dataclass(frozen=True)
class Captured:
    """One request exactly as pybit put it on the wire."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None

    def send_again(self) -> httpx.Response:
        """Send the very same method, URL, headers and body bytes (httpx, a new connection)."""
        return httpx.request(
            self.method, self.url, headers=self.headers, content=self.body, timeout=10
        )


class CapturingPybit:
    """A pybit HTTP session pointed at url that records every request it sends."""

    def __init__(self, url: str, api_key: str, secret: str, **options: Any) -> None:
        # pybit retries (after 10006 or 10002) re-sign with a new timestamp: never duplicates
        self.session = HTTP(
            api_key=api_key, api_secret=secret, max_retries=5, retry_delay=0, **options
        )
        self.session.endpoint = url
        self.sent: list[Captured] = []
        send = self.session.client.send

        def recording_send(request: requests.PreparedRequest, **kwargs: Any) -> Any:
            body = request.body.encode() if isinstance(request.body, str) else request.body
            assert request.method is not None
            assert request.url is not None
            self.sent.append(Captured(request.method, request.url, dict(request.headers), body))
            return send(request, **kwargs)

        self.session.client.send = recording_send  # type: ignore[method-assign]

    def last(self) -> Captured:
        return self.sent[-1]


def guarded_key(
    server: Server, *, guard: bool = True, rsa_public_key: str | None = None
) -> tuple[str, str]:
    """A fresh trading key; with guard, switched on the way the README says."""
    api_key, secret = server.new_key(rsa_public_key=rsa_public_key)
    if guard:
        result = keyplane(
            "keys", "update", api_key, "--replay-guard", db=server.db_url,
            env={"KEYPLANE_KEK": server.kek_b64},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
    return api_key, secret


def usdt(client: CapturingPybit) -> Decimal:
    wallet = client.session.get_wallet_balance(accountType="UNIFIED")["result"]["list"][0]
    return Decimal(next(c["walletBalance"] for c in wallet["coin"] if c["coin"] == "USDT"))


def envelope(response: httpx.Response) -> tuple[int, int, str, Any]:
    body = response.json()
    return response.status_code, body["retCode"], body["retMsg"], body["result"]


def replay_metric(url: str, outcome: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "keyplane_replay_checks_total" and sample.labels == {
                "outcome": outcome
            }:
                return float(sample.value)
    return 0.0


class TestGuardOn:
    def test_replayed_order_is_refused_and_not_executed(self, server: Server) -> None:
        """pybit buys once; the captured order sent again gets HTTP 200 + 10014 with the V5
        envelope, and the USDT balance shows one purchase, not two."""
        api_key, secret = guarded_key(server)
        client = CapturingPybit(server.url, api_key, secret)
        before = usdt(client)
        assert client.session.place_order(**ORDER, qty="100")["retCode"] == 0
        order = client.last()
        assert order.method == "POST"
        after_one = usdt(client)
        assert 0 < before - after_one <= 100  # one market buy for 100 USDT (lot-size rounded)

        replay = order.send_again()
        assert envelope(replay) == (200, 10014, "Invalid duplicate request.", {})
        assert isinstance(replay.json()["time"], int)
        assert usdt(client) == after_one
        assert replay_metric(server.url, "refused") == 1

    def test_replayed_read_is_refused(self, server: Server) -> None:
        """A captured GET (wallet balance) sent again: 10014 too."""
        api_key, secret = guarded_key(server)
        client = CapturingPybit(server.url, api_key, secret)
        assert client.session.get_wallet_balance(accountType="UNIFIED")["retCode"] == 0
        read = client.last()
        assert read.method == "GET"
        assert "accountType=UNIFIED" in read.url
        assert envelope(read.send_again())[:2] == (200, 10014)

    def test_every_replay_is_refused_and_new_requests_pass(self, server: Server) -> None:
        """Three copies of one order: all 10014. pybit's next calls (new timestamps, new
        signatures) pass, reads and writes alike: normal use is never refused."""
        api_key, secret = guarded_key(server)
        client = CapturingPybit(server.url, api_key, secret)
        assert client.session.place_order(**ORDER, qty="10")["retCode"] == 0
        order = client.last()
        assert [envelope(order.send_again())[1] for _ in range(3)] == [10014] * 3
        codes = []
        for _ in range(15):
            codes.append(client.session.place_order(**ORDER, qty="10")["retCode"])
            codes.append(client.session.get_wallet_balance(accountType="UNIFIED")["retCode"])
            codes.append(client.session.get_api_key_information()["retCode"])
        assert set(codes) == {0}
        assert replay_metric(server.url, "refused") == 3

    def test_ccxt_is_unaffected(self, server: Server) -> None:
        """ccxt on a guarded key: fetch_balance (its discovery calls included) and a market
        order pass; ccxt signs every call afresh."""
        api_key, secret = guarded_key(server)
        ex = exchange(server.url, api_key, secret)
        assert ex.fetch_balance()["USDT"]["total"] == 100000
        order = ex.create_order("BTC/USDT", "market", "buy", 0.01, None, {"marketUnit": "baseCoin"})
        assert order["id"]
        assert ex.fetch_balance()["BTC"]["total"] > 1
        assert replay_metric(server.url, "refused") == 0

    def test_one_signature_for_two_endpoints_is_not_a_replay(self, server: Server) -> None:
        """Bybit V5 does not sign the path: two GETs with no parameters signed in the same
        millisecond carry the same signature (ccxt's is_unified_enabled sends
        /v5/user/query-api and /v5/account/info so). Both are served; a copy sent to the same
        endpoint again is the replay (10014)."""
        api_key, secret = guarded_key(server)
        ts = str(int(time.time() * 1000))
        headers = {
            "X-BAPI-API-KEY": api_key,
            "X-BAPI-TIMESTAMP": ts,
            "X-BAPI-RECV-WINDOW": "5000",
            "X-BAPI-SIGN": sign_hmac(secret, string_to_sign(ts, api_key, "5000", b"")),
        }
        first = httpx.get(f"{server.url}/v5/user/query-api", headers=headers, timeout=10)
        second = httpx.get(f"{server.url}/v5/account/info", headers=headers, timeout=10)
        again = httpx.get(f"{server.url}/v5/account/info", headers=headers, timeout=10)
        assert envelope(first)[1] == 0
        assert envelope(second)[1] == 0
        assert envelope(again)[1] == 10014

    def test_refusal_comes_after_the_signature_check(self, server: Server) -> None:
        """A copy with a tampered body is a signature error (10004), not a duplicate: the guard
        only ever remembers verified signatures."""
        api_key, secret = guarded_key(server)
        client = CapturingPybit(server.url, api_key, secret)
        client.session.place_order(**ORDER, qty="10")
        order = client.last()
        assert order.body is not None
        tampered = Captured(
            order.method, order.url, order.headers, order.body.replace(b'"10"', b'"99"')
        )
        assert envelope(tampered.send_again())[1] == 10004
        assert envelope(order.send_again())[1] == 10014

    def test_upper_case_signature_is_the_same_signature(self, server: Server) -> None:
        """keyplane accepts HMAC hex in any case; the upper-cased copy is still a duplicate."""
        api_key, secret = guarded_key(server)
        client = CapturingPybit(server.url, api_key, secret)
        client.session.place_order(**ORDER, qty="10")
        order = client.last()
        headers = {**order.headers, "X-BAPI-SIGN": order.headers["X-BAPI-SIGN"].upper()}
        copy = Captured(order.method, order.url, headers, order.body)
        assert envelope(copy.send_again())[1] == 10014

    def test_rsa_key_replay_in_any_base64_spelling(
        self, server: Server, rsa_private_pem: tuple[str, str]
    ) -> None:
        """An RSA key signing with pybit: the copy is refused, and so is a copy whose base64
        differs only in unused trailing bits (the same signature bytes)."""
        private_pem, public_pem = rsa_private_pem
        api_key, _ = guarded_key(server, rsa_public_key=public_pem)
        client = CapturingPybit(server.url, api_key, private_pem, rsa_authentication=True)
        assert client.session.place_order(**ORDER, qty="10")["retCode"] == 0
        order = client.last()
        sign = order.headers["X-BAPI-SIGN"]
        assert sign.endswith("==")  # 256 bytes: the last character before "==" has 4 spare bits
        sloppy = sign[:-3] + chr(ord(sign[-3]) + 1) + "=="
        assert base64.b64decode(sloppy, validate=True) == base64.b64decode(sign)
        copy = Captured(
            order.method, order.url, {**order.headers, "X-BAPI-SIGN": sloppy}, order.body
        )
        assert envelope(copy.send_again())[1] == 10014
        assert envelope(order.send_again())[1] == 10014


class TestGuardOff:
    def test_replay_is_served_by_default(self, server: Server) -> None:
        """Without --replay-guard (the default, like Bybit) the copy is served: two buys."""
        api_key, secret = guarded_key(server, guard=False)
        client = CapturingPybit(server.url, api_key, secret)
        before = usdt(client)
        assert client.session.place_order(**ORDER, qty="100")["retCode"] == 0
        order = client.last()
        spent_once = before - usdt(client)
        assert envelope(order.send_again())[:2] == (200, 0)
        assert before - usdt(client) == 2 * spent_once
        assert replay_metric(server.url, "passed") == 0  # unguarded keys never ask the store

    def test_switching_the_guard_on_applies_to_a_running_server(self, server: Server) -> None:
        """The key is in use (cached) when `keys update --replay-guard` runs; within about a
        second (the key cache's revision poll) a captured copy gets 10014."""
        api_key, secret = guarded_key(server, guard=False)
        client = CapturingPybit(server.url, api_key, secret)
        assert client.session.get_wallet_balance(accountType="UNIFIED")["retCode"] == 0
        result = keyplane(
            "keys", "update", api_key, "--replay-guard", db=server.db_url,
            env={"KEYPLANE_KEK": server.kek_b64},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert _eventually(lambda: _replayed_code(client), 10014, within_s=2.0)


def _replayed_code(client: CapturingPybit) -> int:
    client.session.get_wallet_balance(accountType="UNIFIED")
    capture = client.last()
    return int(envelope(capture.send_again())[1])


def _eventually(probe: Callable[[], int], wanted: int, *, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if probe() == wanted:
            return True
        time.sleep(0.05)
    return False
