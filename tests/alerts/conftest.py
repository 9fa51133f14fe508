"""Receivers for the notifier contract suite: a webhook endpoint and an SMTP server, both real
servers on 127.0.0.1 started by the test, and the in-memory notifier."""

from __future__ import annotations

import email
import email.policy
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from keyplane.alerts import (
    WEBHOOK_SIGNATURE_HEADER,
    Alert,
    MemoryNotifier,
    Notifier,
    SmtpNotifier,
    WebhookNotifier,
    verify_webhook,
)
from keyplane.secret import Secret
from keyplane.testing import free_port, running_server

WEBHOOK_SECRET = Secret("whsec_test_0123456789")


@dataclass
class WebhookReceiver:
    """Records every POST; answers `fail_with` statuses first (one per request), then 200."""

    url: str = ""
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    fail_with: list[int] = field(default_factory=list)

    def app(self) -> Starlette:
        async def receive(request: Request) -> Response:
            self.requests.append((dict(request.headers), await request.body()))
            if self.fail_with:
                return Response(status_code=self.fail_with.pop(0))
            return JSONResponse({"received": True})

        return Starlette(routes=[Route("/hook", receive, methods=["POST"])])

    def verified_alerts(self) -> list[dict[str, Any]]:
        """Bodies whose signature verifies with WEBHOOK_SECRET, parsed."""
        now = int(time.time() * 1000)
        return [
            json.loads(body)
            for headers, body in self.requests
            if verify_webhook(WEBHOOK_SECRET, headers[WEBHOOK_SIGNATURE_HEADER.lower()], body, now)
        ]


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    with running_server(receiver.app()) as url:
        receiver.url = f"{url}/hook"
        yield receiver


class Mailbox:
    """aiosmtpd handler keeping the messages; `refuse_with` answers DATA with that reply."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.refuse_with: str | None = None

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.refuse_with:
            return self.refuse_with
        content = envelope.content
        raw = content if isinstance(content, bytes) else str(content).encode()
        self.messages.append(email.message_from_bytes(raw, policy=email.policy.default))
        return "250 OK"


@dataclass
class SmtpServer:
    host: str
    port: int
    mailbox: Mailbox


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield SmtpServer("127.0.0.1", port, mailbox)
    finally:
        controller.stop()


def fast_webhook(url: str, **options: Any) -> WebhookNotifier:
    """A WebhookNotifier with millisecond backoff so retry tests stay fast."""
    return WebhookNotifier(
        url, WEBHOOK_SECRET, backoff_initial_s=0.01, backoff_max_s=0.05, **options
    )


def fast_smtp(server: SmtpServer | tuple[str, int], **options: Any) -> SmtpNotifier:
    host, port = (server.host, server.port) if isinstance(server, SmtpServer) else server
    return SmtpNotifier(
        host,
        port,
        sender="keyplane@example.test",
        recipients=["ops@example.test"],
        backoff_initial_s=0.01,
        backoff_max_s=0.05,
        **options,
    )


@dataclass
class Delivery:
    """A notifier and a way to read back what its receiver got, as (id, kind, apiKey, summary)."""

    notifier: Notifier
    received: Any


@pytest.fixture(params=["memory", "webhook", "email"])
def delivery(
    request: pytest.FixtureRequest,
) -> Iterator[Delivery]:
    if request.param == "memory":
        memory = MemoryNotifier()
        yield Delivery(
            memory,
            lambda: [(a.id, a.kind.value, a.api_key, a.summary) for a in memory.sent],
        )
    elif request.param == "webhook":
        receiver: WebhookReceiver = request.getfixturevalue("webhook_receiver")
        yield Delivery(
            fast_webhook(receiver.url),
            lambda: [
                (a["id"], a["kind"], a["apiKey"], a["summary"]) for a in receiver.verified_alerts()
            ],
        )
    else:
        smtp: SmtpServer = request.getfixturevalue("smtp_server")

        def from_mail() -> list[tuple[str, str, str | None, str]]:
            out = []
            for msg in smtp.mailbox.messages:
                body = msg.get_payload(decode=True)
                assert isinstance(body, bytes)
                fields = dict(
                    line.split(": ", 1) for line in body.decode().splitlines() if ": " in line
                )
                out.append(
                    (
                        msg["X-Keyplane-Event-Id"],
                        fields["kind"],
                        fields.get("apiKey"),
                        body.decode().splitlines()[0],
                    )
                )
            return out

        yield Delivery(fast_smtp(smtp), from_mail)


def sample_alert(**changes: Any) -> Alert:
    from keyplane.alerts import AlertKind

    base: dict[str, Any] = {
        "id": "alrt_0001",
        "kind": AlertKind.QUOTA_75,
        "at_ms": 1_700_000_000_000,
        "summary": "key ABCDEFGHIJKLMNOPQR used 75% of its daily quota (750 of 1000)",
        "api_key": "ABCDEFGHIJKLMNOPQR",
        "key_id": 7,
        "uid": 100001,
        "details": {"used": 750, "quota": 1000},
    }
    base.update(changes)
    return Alert(**base)
