"""Hypothesis feeds random headers, queries and bodies straight into the ASGI app (raw scope, no
HTTP client in between): every reply is the V5 envelope, no exception escapes the error mapping,
and the app keeps serving."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette

from keyplane.clock import FrozenClock
from keyplane.http.app import create_app
from keyplane.keys import KeyEncryptionKey
from keyplane.settings import Settings
from keyplane.signing import sign_hmac, string_to_sign
from keyplane.store import MemoryStore

CLOCK = FrozenClock(1_700_000_000_000)
PATHS = [
    "/v5/account/wallet-balance",
    "/v5/order/create",
    "/v5/order/realtime",
    "/v5/user/query-api",
    "/v5/user/create-sub-api",
    "/v5/user/sub-apikeys",
    "/v5/market/instruments-info",
    "/v5/nope",
]
HEADER_NAMES = [
    b"x-bapi-api-key",
    b"x-bapi-timestamp",
    b"x-bapi-sign",
    b"x-bapi-recv-window",
    b"content-length",
    b"x-forwarded-for",
    b"content-type",
]
FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


async def call(
    app: Starlette,
    method: str,
    path: str,
    query: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
) -> tuple[int, dict[str, Any]]:
    """One raw ASGI request; returns (HTTP status, decoded JSON reply)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(payload)


@pytest.fixture(scope="module")
def app_and_key() -> tuple[Starlette, str, str]:
    app = create_app(
        Settings(ip_limit="off"), store=MemoryStore(), clock=CLOCK, kek=KeyEncryptionKey.generate()
    )
    init = app.state.service.initialize()
    assert init is not None
    assert init.issued.secret is not None
    return app, init.issued.key.api_key, init.issued.secret.reveal()


def check(status: int, body: dict[str, Any]) -> dict[str, Any]:
    assert status in (200, 400, 403, 404, 413)
    assert set(body) == {"retCode", "retMsg", "result", "retExtInfo", "time"}
    assert isinstance(body["retCode"], int)
    assert "Traceback" not in body["retMsg"]
    return body


@FUZZ
@given(
    method=st.sampled_from(["GET", "POST", "PUT"]),
    path=st.sampled_from(PATHS),
    query=st.binary(max_size=60),
    body=st.binary(max_size=200),
    headers=st.lists(st.tuples(st.sampled_from(HEADER_NAMES), st.binary(max_size=30)), max_size=6),
)
def test_random_requests_get_the_envelope(
    app_and_key: tuple[Starlette, str, str],
    method: str,
    path: str,
    query: bytes,
    body: bytes,
    headers: list[tuple[bytes, bytes]],
) -> None:
    """Whatever bytes arrive, the reply is an envelope with a retCode; nothing raises."""
    app, _, _ = app_and_key
    check(*asyncio.run(call(app, method, path, query, headers, body)))


@FUZZ
@given(
    path=st.sampled_from(
        [
            "/v5/order/create",
            "/v5/user/create-sub-api",
            "/v5/user/update-api",
            "/v5/asset/transfer/inter-transfer",
            "/v5/asset/withdraw/create",
            "/v5/order/cancel",
            "/v5/user/create-sub-member",
        ]
    ),
    body=st.dictionaries(
        st.sampled_from(
            [
                "category",
                "symbol",
                "side",
                "orderType",
                "qty",
                "price",
                "subuid",
                "readOnly",
                "permissions",
                "ips",
                "note",
                "coin",
                "amount",
                "orderId",
                "marketUnit",
                "username",
                "fromAccountType",
                "toAccountType",
            ]
        ),
        st.one_of(
            st.text(max_size=10),
            st.integers(),
            st.floats(allow_nan=False),
            st.none(),
            st.booleans(),
            st.lists(st.integers(), max_size=3),
            st.dictionaries(
                st.text(max_size=6), st.lists(st.text(max_size=6), max_size=2), max_size=2
            ),
        ),
        max_size=8,
    ),
)
def test_signed_random_bodies_get_a_clean_ret_code(
    app_and_key: tuple[Starlette, str, str], path: str, body: dict[str, object]
) -> None:
    """Correctly signed but arbitrary bodies: success or a typed retCode, never 10016."""
    app, api_key, secret = app_and_key
    raw = json.dumps(body).encode()
    CLOCK.advance(60_000)  # a fresh rate-limit window, so every example reaches the handler
    ts = str(CLOCK.now_ms())
    sig = sign_hmac(secret, string_to_sign(ts, api_key, "5000", raw))
    headers = [
        (b"x-bapi-api-key", api_key.encode()),
        (b"x-bapi-timestamp", ts.encode()),
        (b"x-bapi-sign", sig.encode()),
        (b"x-bapi-recv-window", b"5000"),
    ]
    result = check(*asyncio.run(call(app, "POST", path, b"", headers, raw)))
    assert result["retCode"] != 10016, result


@FUZZ
@given(
    query=st.dictionaries(
        st.sampled_from(
            [
                "category",
                "symbol",
                "orderId",
                "limit",
                "cursor",
                "subMemberId",
                "coin",
                "accountType",
                "openOnly",
                "baseCoin",
            ]
        ),
        st.text(
            alphabet=st.characters(blacklist_characters="&=%#", blacklist_categories=("Cs",)),
            max_size=10,
        ),
        max_size=5,
    )
)
def test_signed_random_queries_get_a_clean_ret_code(
    app_and_key: tuple[Starlette, str, str], query: dict[str, str]
) -> None:
    """Correctly signed but arbitrary GET parameters: success or a typed retCode, never 10016."""
    app, api_key, secret = app_and_key
    raw = "&".join(f"{k}={v}" for k, v in query.items()).encode()
    CLOCK.advance(60_000)  # a fresh rate-limit window, so every example reaches the handler
    ts = str(CLOCK.now_ms())
    sig = sign_hmac(secret, string_to_sign(ts, api_key, "5000", raw))
    headers = [
        (b"x-bapi-api-key", api_key.encode()),
        (b"x-bapi-timestamp", ts.encode()),
        (b"x-bapi-sign", sig.encode()),
    ]
    for path in (
        "/v5/order/realtime",
        "/v5/account/wallet-balance",
        "/v5/user/sub-apikeys",
        "/v5/position/list",
        "/v5/asset/coin/query-info",
    ):
        result = check(*asyncio.run(call(app, "GET", path, raw, headers, b"")))
        assert result["retCode"] != 10016, result
