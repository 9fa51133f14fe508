"""Notifiers: deliver an Alert somewhere. One protocol; webhook, SMTP email and in-memory.

Every notifier passes the one contract suite in tests/alerts/: the receiver sees the alert's
id, kind, key and summary. Delivery retries transient failures with exponential backoff and
jitter (tenacity) and raises DeliveryError when it gives up; the caller counts that in a metric
and never blocks a request on it.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Sequence
from email.message import EmailMessage
from typing import Protocol

import anyio
import httpx
import structlog
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from keyplane.alerts.model import Alert
from keyplane.alerts.signature import WEBHOOK_SIGNATURE_HEADER, sign_webhook
from keyplane.clock import Clock, SystemClock
from keyplane.secret import Secret

__all__ = ["DeliveryError", "MemoryNotifier", "Notifier", "SmtpNotifier", "WebhookNotifier"]

log = structlog.get_logger("keyplane.alerts")

EVENT_ID_HEADER = "X-Keyplane-Event-Id"


class DeliveryError(Exception):
    """A notifier gave up on an alert (after its retries, or on a permanent refusal)."""


class Notifier(Protocol):
    """Delivers alerts. name: short label for metrics ("webhook", "email", "memory")."""

    name: str

    async def send(self, alert: Alert) -> None:
        """Deliver alert; raises DeliveryError when it cannot (after retrying)."""
        ...


class _TransientError(Exception):
    """A failure worth retrying (timeouts, connection errors, 5xx/429, SMTP 4xx)."""


def _retrying(attempts: int, initial_s: float, max_s: float) -> AsyncRetrying:
    return AsyncRetrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential_jitter(initial=initial_s, max=max_s),
        retry=retry_if_exception(lambda exc: isinstance(exc, _TransientError)),
        reraise=True,
    )


class WebhookNotifier:
    """POST the alert as JSON to url, signed like Stripe's webhooks.

    Headers: Content-Type application/json, X-Keyplane-Event-Id (the alert id; the same on
    every retry, so receivers can deduplicate), X-Keyplane-Signature "t=<ms>,v1=<hex>"
    (keyplane.alerts.signature). Any 2xx is delivered. Timeouts, connection errors, 429 and 5xx
    are retried `attempts` times in all with exponential backoff (initial_s doubling up to
    max_s, with jitter); other statuses fail at once. timeout_s: float, seconds per attempt.
    """

    name = "webhook"

    def __init__(
        self,
        url: str,
        secret: Secret[str],
        *,
        timeout_s: float = 5.0,
        attempts: int = 5,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        clock: Clock | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = url
        self._secret = secret
        self._timeout = httpx.Timeout(timeout_s)
        self._attempts = attempts
        self._backoff = (backoff_initial_s, backoff_max_s)
        self._clock = clock or SystemClock()
        self._client = client

    def __repr__(self) -> str:
        return f"WebhookNotifier({self.url!r})"

    async def send(self, alert: Alert) -> None:
        """POST alert to the URL; raises DeliveryError when every attempt failed."""
        body = alert.body()
        try:
            async for attempt in _retrying(self._attempts, *self._backoff):
                with attempt:
                    await self._post(alert.id, body)
        except (_TransientError, DeliveryError) as exc:
            log.warning("webhook delivery failed", alert_id=alert.id, error=str(exc))
            raise DeliveryError(f"webhook {self.url}: {exc}") from None

    async def _post(self, event_id: str, body: bytes) -> None:
        headers = {
            "Content-Type": "application/json",
            EVENT_ID_HEADER: event_id,
            WEBHOOK_SIGNATURE_HEADER: sign_webhook(self._secret, self._clock.now_ms(), body),
        }
        try:
            if self._client is not None:
                reply = await self._client.post(
                    self.url, content=body, headers=headers, timeout=self._timeout
                )
            else:
                async with httpx.AsyncClient(timeout=self._timeout) as client:
                    reply = await client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise _TransientError(type(exc).__name__) from None
        if reply.is_success:
            return
        if reply.status_code == 429 or reply.status_code >= 500:
            raise _TransientError(f"HTTP {reply.status_code}")
        raise DeliveryError(f"HTTP {reply.status_code}")


class SmtpNotifier:
    """Email the alert over SMTP (stdlib smtplib, run in a worker thread).

    host/port: the SMTP server; sender: From address; recipients: To addresses.
    starttls: upgrade with STARTTLS before login; username/password: optional AUTH LOGIN.
    Connection errors, timeouts and 4xx replies are retried (`attempts` in all, exponential
    backoff); 5xx replies fail at once. Subject "[keyplane] <kind>: <summary>", plain-text body
    with the alert's fields.
    """

    name = "email"

    def __init__(
        self,
        host: str,
        port: int,
        *,
        sender: str,
        recipients: Sequence[str],
        username: str | None = None,
        password: Secret[str] | None = None,
        starttls: bool = False,
        timeout_s: float = 10.0,
        attempts: int = 3,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
    ) -> None:
        if not recipients:
            raise ValueError("SmtpNotifier needs at least one recipient")
        self.host, self.port = host, port
        self.sender = sender
        self.recipients = tuple(recipients)
        self._username = username
        self._password = password
        self._starttls = starttls
        self._timeout_s = timeout_s
        self._attempts = attempts
        self._backoff = (backoff_initial_s, backoff_max_s)

    def __repr__(self) -> str:
        return f"SmtpNotifier({self.host}:{self.port} -> {len(self.recipients)} recipients)"

    def message(self, alert: Alert) -> EmailMessage:
        """The email for alert (exposed for previews and tests)."""
        msg = EmailMessage()
        msg["Subject"] = f"[keyplane] {alert.kind.value}: {alert.summary}"
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.recipients)
        msg["X-Keyplane-Event-Id"] = alert.id
        lines = [alert.summary, ""]
        for name, value in alert.to_json().items():
            if name != "summary" and value not in (None, {}):
                lines.append(f"{name}: {value}")
        msg.set_content("\n".join(lines) + "\n")
        return msg

    async def send(self, alert: Alert) -> None:
        """Send the email; raises DeliveryError when every attempt failed."""
        msg = self.message(alert)
        try:
            async for attempt in _retrying(self._attempts, *self._backoff):
                with attempt:
                    await anyio.to_thread.run_sync(self._deliver, msg)
        except (_TransientError, DeliveryError) as exc:
            log.warning("email delivery failed", alert_id=alert.id, error=str(exc))
            raise DeliveryError(f"smtp {self.host}:{self.port}: {exc}") from None

    def _deliver(self, msg: EmailMessage) -> None:
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self._timeout_s) as smtp:
                if self._starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self._username and self._password is not None:
                    smtp.login(self._username, self._password.reveal())
                smtp.send_message(msg)
        except smtplib.SMTPResponseException as exc:
            if 400 <= exc.smtp_code < 500:
                raise _TransientError(f"SMTP {exc.smtp_code}") from None
            raise DeliveryError(f"SMTP {exc.smtp_code}") from None
        except smtplib.SMTPRecipientsRefused as exc:
            raise DeliveryError(f"recipients refused: {sorted(exc.recipients)}") from None
        except (OSError, smtplib.SMTPException) as exc:
            raise _TransientError(type(exc).__name__) from None


class MemoryNotifier:
    """Keeps alerts in `sent` (for tests and a dry-run mode); never fails."""

    name = "memory"

    def __init__(self) -> None:
        self.sent: list[Alert] = []

    async def send(self, alert: Alert) -> None:
        """Append alert to sent."""
        self.sent.append(alert)
