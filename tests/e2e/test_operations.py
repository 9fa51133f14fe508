"""Operations endpoints as a load balancer and Prometheus see them: /healthz, /readyz, /metrics."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pybit.exceptions import InvalidRequestError
from pybit.unified_trading import HTTP

from keyplane import __version__
from keyplane.build import hot_path_build
from keyplane.clock import SystemClock
from keyplane.http.app import create_app
from keyplane.keys import KeyEncryptionKey
from keyplane.ratelimit import RedisRateLimiter
from keyplane.service import KeyService
from keyplane.settings import Settings
from keyplane.store import open_store
from keyplane.testing import free_port, running_server

from .conftest import Server


def samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """/metrics parsed: (sample name, sorted labels) -> value."""
    reply = httpx.get(f"{url}/metrics", timeout=5)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(reply.text)
        for s in family.samples
    }


def test_healthz_and_readyz_when_everything_answers(server: Server) -> None:
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{server.url}/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"store": "ok", "ratelimit": "ok"}}


def test_readyz_is_503_while_the_limiter_backend_is_unreachable(tmp_path: Path) -> None:
    """A node whose Redis does not answer is alive (/healthz 200) but not ready (/readyz 503)."""
    db = f"sqlite:///{tmp_path / 'k.db'}"
    kek = KeyEncryptionKey.generate()
    KeyService(open_store(db), kek, SystemClock()).initialize()
    dead_redis = RedisRateLimiter.from_url(f"redis://127.0.0.1:{free_port()}/0")
    app = create_app(Settings(database_url=db, kek=kek.to_base64().reveal()), limiter=dead_redis)
    with running_server(app) as url:
        assert httpx.get(f"{url}/healthz").status_code == 200
        ready = httpx.get(f"{url}/readyz", timeout=10)
        assert ready.status_code == 503
        assert ready.json()["status"] == "unready"
        assert ready.json()["checks"]["store"] == "ok"
        assert ready.json()["checks"]["ratelimit"] == "ConnectionError"


def test_metrics_count_auth_outcomes_limiter_decisions_and_cache(server: Server) -> None:
    """After one good call, one unknown key and one bad signature, /metrics says so."""
    good = HTTP(api_key=server.api_key, api_secret=server.secret, max_retries=1)
    good.endpoint = server.url
    unknown = HTTP(api_key="NOSUCHKEY123456789", api_secret=server.secret, max_retries=1)
    unknown.endpoint = server.url
    forged = HTTP(api_key=server.api_key, api_secret="x" * 36, max_retries=1)
    forged.endpoint = server.url
    before = samples(server.url)
    good.get_wallet_balance(accountType="UNIFIED")
    good.get_wallet_balance(accountType="UNIFIED")
    for session, code in ((unknown, 10003), (forged, 10004)):
        with pytest.raises(InvalidRequestError) as refused:
            session.get_wallet_balance(accountType="UNIFIED")
        assert refused.value.status_code == code
    after = samples(server.url)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("keyplane_auth_requests_total", ret_code="0") == 2
    assert delta("keyplane_auth_requests_total", ret_code="10003") == 1
    assert delta("keyplane_auth_requests_total", ret_code="10004") == 1
    assert delta("keyplane_ratelimit_decisions_total", outcome="allowed") == 2
    assert delta("keyplane_key_cache_lookups_total", result="hit") >= 1
    assert ("keyplane_revocation_propagation_seconds_count", ()) in after
    assert after[("keyplane_websocket_connections", ())] == 0
    build = (("hot_path", hot_path_build()), ("version", __version__))
    assert after[("keyplane_build_info", build)] == 1
    assert server.secret not in httpx.get(f"{server.url}/metrics").text
