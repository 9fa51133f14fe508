"""Alerts: what keyplane tells operators (quota, expiry, anomalies, suspensions) and the
notifiers that deliver it (webhook, email, in-memory), all behind one protocol."""

from keyplane.alerts.model import Alert, AlertKind, AlertRecord
from keyplane.alerts.notifiers import (
    DeliveryError,
    MemoryNotifier,
    Notifier,
    SmtpNotifier,
    WebhookNotifier,
)
from keyplane.alerts.signature import WEBHOOK_SIGNATURE_HEADER, sign_webhook, verify_webhook

__all__ = [
    "WEBHOOK_SIGNATURE_HEADER",
    "Alert",
    "AlertKind",
    "AlertRecord",
    "DeliveryError",
    "MemoryNotifier",
    "Notifier",
    "SmtpNotifier",
    "WebhookNotifier",
    "sign_webhook",
    "verify_webhook",
]
