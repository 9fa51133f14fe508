"""The gateway reads an upstream body as a stream and stops at gateway_max_response_bytes: a
longer body answers the V5 envelope with retCode 10016 (recorded in the usage log), a body up
to the cap passes byte for byte, and keyplane keeps serving."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from keyplane.settings import Settings
from keyplane.store import open_store
from keyplane.testing import running_server

from .conftest import EchoUpstream, envelope, gateway_on, signed_get

CAP = 4096
TOO_LARGE = f"Server error: upstream answer larger than {CAP} bytes (gateway_max_response_bytes)."


def _envelope_of_size(size: int) -> bytes:
    """A V5 success envelope of exactly size bytes (the padding sits in result.pad)."""
    empty = json.dumps({"retCode": 0, "retMsg": "OK", "result": {"pad": ""}, "time": 1})
    body = json.dumps(
        {"retCode": 0, "retMsg": "OK", "result": {"pad": "x" * (size - len(empty))}, "time": 1}
    ).encode()
    assert len(body) == size
    return body


def _wallet(gw_url: str, api_key: str, secret: str) -> httpx.Response:
    return signed_get(gw_url, "/v5/account/wallet-balance", "accountType=UNIFIED", api_key, secret)


def _status_counts(db_url: str, api_key: str) -> dict[str, int]:
    """Usage rows of api_key by "<http status>/<retCode>", read from the gateway's database."""
    store = open_store(db_url)
    try:
        rows = store.usage_summary(api_key=api_key, by="status")
    finally:
        store.close()
    return {row.group: row.requests for row in rows}


class TestCap:
    def test_body_at_the_cap_passes_unchanged(
        self, tmp_path: Path, echo: tuple[EchoUpstream, str]
    ) -> None:
        """An upstream body of exactly CAP bytes reaches the client byte for byte."""
        upstream, upstream_url = echo
        upstream.raw_body = _envelope_of_size(CAP)
        with gateway_on(tmp_path, upstream_url, max_response_bytes=CAP) as gw:
            reply = _wallet(gw.url, gw.api_key, gw.secret)
        assert reply.status_code == 200
        assert reply.content == upstream.raw_body

    def test_body_over_the_cap_is_10016_and_the_gateway_keeps_serving(
        self, tmp_path: Path, echo: tuple[EchoUpstream, str]
    ) -> None:
        """CAP + 1 bytes: HTTP 200, retCode 10016 with a clear retMsg and no traceback; the
        next request passes; the usage log holds one 200/10016 row and one 200/0 row; the
        failure is counted in the gateway metrics."""
        upstream, upstream_url = echo
        with gateway_on(tmp_path, upstream_url, max_response_bytes=CAP) as gw:
            upstream.raw_body = _envelope_of_size(CAP + 1)
            refused = _wallet(gw.url, gw.api_key, gw.secret)
            upstream.raw_body = _envelope_of_size(100)
            served = _wallet(gw.url, gw.api_key, gw.secret)
            metrics = httpx.get(f"{gw.url}/metrics").text
            db_url, api_key = gw.db_url, gw.api_key
        assert refused.status_code == 200
        document = envelope(refused)
        assert (document["retCode"], document["retMsg"]) == (10016, TOO_LARGE)
        assert document["result"] == {}
        assert "Traceback" not in refused.text
        assert served.content == _envelope_of_size(100)
        assert "keyplane_gateway_upstream_failures_total 1.0" in metrics
        assert _status_counts(db_url, api_key) == {"200/10016": 1, "200/0": 1}

    def test_a_4xx_body_over_the_cap_is_refused_too(
        self, tmp_path: Path, echo: tuple[EchoUpstream, str]
    ) -> None:
        """4xx answers pass through as they are, but not past the cap."""
        upstream, upstream_url = echo
        upstream.status, upstream.raw_body = 403, b"x" * (CAP + 1)
        with gateway_on(tmp_path, upstream_url, max_response_bytes=CAP) as gw:
            reply = _wallet(gw.url, gw.api_key, gw.secret)
        assert (reply.status_code, envelope(reply)["retCode"]) == (200, 10016)

    def test_compressed_body_is_capped_after_decoding(
        self, tmp_path: Path, echo: tuple[EchoUpstream, str]
    ) -> None:
        """A gzip body of a few hundred bytes that inflates past the cap is refused (what
        would reach the client and the gateway's memory is the decoded body)."""
        upstream, upstream_url = echo
        inflated = _envelope_of_size(CAP * 50)
        upstream.raw_body = gzip.compress(inflated)
        upstream.extra_headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
        assert len(upstream.raw_body) < CAP
        with gateway_on(tmp_path, upstream_url, max_response_bytes=CAP) as gw:
            refused = _wallet(gw.url, gw.api_key, gw.secret)
            upstream.raw_body = gzip.compress(_envelope_of_size(CAP))
            served = _wallet(gw.url, gw.api_key, gw.secret)
        assert envelope(refused)["retMsg"] == TOO_LARGE
        assert served.content == _envelope_of_size(CAP)

    def test_default_cap_is_16_mib(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """16 MiB unless KEYPLANE_GATEWAY_MAX_RESPONSE_BYTES says otherwise."""
        monkeypatch.delenv("KEYPLANE_GATEWAY_MAX_RESPONSE_BYTES", raising=False)
        assert Settings().gateway_max_response_bytes == 16 * 1024 * 1024
        monkeypatch.setenv("KEYPLANE_GATEWAY_MAX_RESPONSE_BYTES", "1000")
        assert Settings().gateway_max_response_bytes == 1000


class DripUpstream:
    """An upstream whose body never ends on time: 1 KiB every 10 ms for 30 s, no
    Content-Length. A gateway that read it whole would hang; one that stops at the cap
    answers within a fraction of a second."""

    def __init__(self) -> None:
        self.sent = 0

    def app(self) -> Starlette:
        async def drip(_request: Request) -> Response:
            async def chunks() -> AsyncIterator[bytes]:
                yield b'{"retCode":0,"retMsg":"OK","result":{"pad":"'
                for _ in range(3000):
                    self.sent += 1024
                    yield b"x" * 1024
                    await anyio.sleep(0.01)
                yield b'"},"time":1}'

            return StreamingResponse(chunks(), media_type="application/json")

        return Starlette(routes=[Route("/{path:path}", drip, methods=["GET", "POST"])])


@pytest.fixture
def drip() -> Iterator[tuple[DripUpstream, str]]:
    upstream = DripUpstream()
    with running_server(upstream.app()) as url:
        yield upstream, url


def test_streamed_body_stops_at_the_cap(tmp_path: Path, drip: tuple[DripUpstream, str]) -> None:
    """A chunked body with no end in sight: the gateway stops reading past the cap and answers
    10016 at once, long before the upstream would finish (30 s) or time out (5 s)."""
    upstream, upstream_url = drip
    with gateway_on(tmp_path, upstream_url, max_response_bytes=CAP) as gw:
        started = time.monotonic()
        reply = _wallet(gw.url, gw.api_key, gw.secret)
        took, sent_by_then = time.monotonic() - started, upstream.sent
        still_serving = signed_get(gw.url, "/v5/user/query-api", "", gw.api_key, gw.secret)
    assert envelope(reply)["retMsg"] == TOO_LARGE
    assert took < 3.0
    assert sent_by_then < 20 * CAP  # the upstream had sent a fraction of its 3 MiB
    assert envelope(still_serving)["retCode"] == 0
