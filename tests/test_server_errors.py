"""An internal fault answers retCode 10016 with the envelope, logs one JSON line with a plain
traceback (no local variables, so no request body or secret), and the app keeps serving."""

from __future__ import annotations

import asyncio
import json

import pytest

from keyplane.clock import FrozenClock
from keyplane.http.app import create_app
from keyplane.keys import KeyEncryptionKey
from keyplane.settings import Settings
from keyplane.signing import sign_hmac, string_to_sign
from keyplane.store import MemoryStore
from tests.test_http_fuzz import call

CLOCK = FrozenClock()


class FlakyStore(MemoryStore):
    """A store whose key lookup fails once, as a database outage would."""

    fail_next = False

    def find_key(self, api_key: str):  # type: ignore[no-untyped-def]
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("database is down")
        return super().find_key(api_key)


def test_internal_fault_is_10016_without_locals(capfd: pytest.CaptureFixture[str]) -> None:
    """The reply is 10016 with no traceback; the log line has the frames but no locals."""
    store = FlakyStore()
    app = create_app(Settings(), store=store, clock=CLOCK, kek=KeyEncryptionKey.generate())
    init = app.state.service.initialize()
    assert init is not None
    assert init.issued.secret is not None
    secret = init.issued.secret.reveal()
    body = json.dumps({"note": "CANARY-BODY-VALUE"}).encode()
    ts = str(CLOCK.now_ms())
    sig = sign_hmac(secret, string_to_sign(ts, init.issued.key.api_key, "5000", body))
    headers = [
        (b"x-bapi-api-key", init.issued.key.api_key.encode()),
        (b"x-bapi-timestamp", ts.encode()),
        (b"x-bapi-sign", sig.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    store.fail_next = True
    status, reply = asyncio.run(call(app, "POST", "/v5/order/create", b"", headers, body))
    assert (status, reply["retCode"], reply["result"]) == (200, 10016, {})
    assert "database is down" not in reply["retMsg"]
    logged = capfd.readouterr().err
    line = next(json.loads(x) for x in logged.splitlines() if "unhandled error" in x)
    assert "RuntimeError: database is down" in line["exception"]
    assert "CANARY-BODY-VALUE" not in logged
    assert secret not in logged
    status, reply = asyncio.run(call(app, "POST", "/v5/order/create", b"", headers, body))
    assert reply["retCode"] != 10016
