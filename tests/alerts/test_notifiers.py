"""Notifier contract (memory, webhook, email) and each real notifier's failure handling."""

from __future__ import annotations

import time

import pytest

from keyplane.alerts import (
    WEBHOOK_SIGNATURE_HEADER,
    DeliveryError,
    sign_webhook,
    verify_webhook,
)
from keyplane.secret import Secret
from keyplane.testing import free_port

from .conftest import (
    WEBHOOK_SECRET,
    Delivery,
    SmtpServer,
    WebhookReceiver,
    fast_smtp,
    fast_webhook,
    sample_alert,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class TestContract:
    """What every notifier must do: the receiver gets the alert's id, kind, key and summary."""

    async def test_delivers_the_alert(self, delivery: Delivery) -> None:
        alert = sample_alert()
        await delivery.notifier.send(alert)
        assert delivery.received() == [
            ("alrt_0001", "quota.75", "ABCDEFGHIJKLMNOPQR", alert.summary)
        ]

    async def test_delivers_each_alert_once_in_order(self, delivery: Delivery) -> None:
        await delivery.notifier.send(sample_alert(id="a1"))
        await delivery.notifier.send(sample_alert(id="a2", api_key=None, key_id=None))
        assert [r[0] for r in delivery.received()] == ["a1", "a2"]
        assert delivery.received()[1][2] is None


class TestWebhook:
    async def test_body_is_signed_and_carries_the_event_id(
        self, webhook_receiver: WebhookReceiver
    ) -> None:
        await fast_webhook(webhook_receiver.url).send(sample_alert())
        ((headers, body),) = webhook_receiver.requests
        assert headers["content-type"] == "application/json"
        assert headers["x-keyplane-event-id"] == "alrt_0001"
        now = int(time.time() * 1000)
        signature = headers[WEBHOOK_SIGNATURE_HEADER.lower()]
        assert verify_webhook(WEBHOOK_SECRET, signature, body, now)
        assert not verify_webhook(Secret("another secret"), signature, body, now)
        assert not verify_webhook(WEBHOOK_SECRET, signature, body + b" ", now)

    async def test_server_errors_are_retried_with_the_same_event_id(
        self, webhook_receiver: WebhookReceiver
    ) -> None:
        webhook_receiver.fail_with = [500, 503, 429]
        await fast_webhook(webhook_receiver.url, attempts=5).send(sample_alert())
        assert len(webhook_receiver.requests) == 4
        assert {h["x-keyplane-event-id"] for h, _ in webhook_receiver.requests} == {"alrt_0001"}
        assert len(webhook_receiver.verified_alerts()) == 4

    async def test_gives_up_after_its_attempts(self, webhook_receiver: WebhookReceiver) -> None:
        webhook_receiver.fail_with = [500] * 10
        with pytest.raises(DeliveryError, match="HTTP 500"):
            await fast_webhook(webhook_receiver.url, attempts=3).send(sample_alert())
        assert len(webhook_receiver.requests) == 3

    async def test_a_client_error_is_not_retried(self, webhook_receiver: WebhookReceiver) -> None:
        webhook_receiver.fail_with = [400]
        with pytest.raises(DeliveryError, match="HTTP 400"):
            await fast_webhook(webhook_receiver.url, attempts=5).send(sample_alert())
        assert len(webhook_receiver.requests) == 1

    async def test_unreachable_receiver_raises_without_the_secret(self) -> None:
        url = f"http://127.0.0.1:{free_port()}/hook"
        with pytest.raises(DeliveryError) as failed:
            await fast_webhook(url, attempts=2, timeout_s=1).send(sample_alert())
        assert "ConnectError" in str(failed.value)
        assert WEBHOOK_SECRET.reveal() not in str(failed.value)
        assert WEBHOOK_SECRET.reveal() not in repr(fast_webhook(url))


class TestSignature:
    def test_stale_and_malformed_headers_fail(self) -> None:
        body = b'{"id":"x"}'
        header = sign_webhook(WEBHOOK_SECRET, 1_700_000_000_000, body)
        assert verify_webhook(WEBHOOK_SECRET, header, body, 1_700_000_100_000)
        assert not verify_webhook(WEBHOOK_SECRET, header, body, 1_700_000_400_001)
        for bad in ("", "t=abc,v1=00", "v1=" + "0" * 64, "t=1700000000000"):
            assert not verify_webhook(WEBHOOK_SECRET, bad, body, 1_700_000_000_000)


class TestEmail:
    async def test_subject_names_the_kind_and_summary(self, smtp_server: SmtpServer) -> None:
        await fast_smtp(smtp_server).send(sample_alert())
        (msg,) = smtp_server.mailbox.messages
        assert msg["Subject"] == f"[keyplane] quota.75: {sample_alert().summary}"
        assert msg["To"] == "ops@example.test"
        assert msg["From"] == "keyplane@example.test"

    async def test_permanent_refusal_fails_at_once(self, smtp_server: SmtpServer) -> None:
        smtp_server.mailbox.refuse_with = "554 Transaction failed"
        with pytest.raises(DeliveryError, match="SMTP 554"):
            await fast_smtp(smtp_server, attempts=3).send(sample_alert())

    async def test_unreachable_server_raises_after_retries(self) -> None:
        with pytest.raises(DeliveryError, match=r"smtp 127\.0\.0\.1"):
            await fast_smtp(("127.0.0.1", free_port()), attempts=2, timeout_s=1).send(
                sample_alert()
            )
