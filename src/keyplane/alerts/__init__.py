"""Alerts: what keyplane tells operators (quota, expiry, anomalies, suspensions) and the
notifiers that deliver it (webhook, email, in-memory), all behind one protocol."""

from keyplane.alerts.dispatch import AlertDispatcher, DispatchStats
from keyplane.alerts.model import Alert, AlertKind, AlertRecord
from keyplane.alerts.monitor import DEFAULT_EXPIRY_DAYS, AlertMonitor
from keyplane.alerts.notifiers import (
    DeliveryError,
    MemoryNotifier,
    Notifier,
    SmtpNotifier,
    WebhookNotifier,
)
from keyplane.alerts.signals import AlertSignals
from keyplane.alerts.signature import WEBHOOK_SIGNATURE_HEADER, sign_webhook, verify_webhook

__all__ = [
    "DEFAULT_EXPIRY_DAYS",
    "WEBHOOK_SIGNATURE_HEADER",
    "Alert",
    "AlertDispatcher",
    "AlertKind",
    "AlertMonitor",
    "AlertRecord",
    "AlertSignals",
    "DeliveryError",
    "DispatchStats",
    "MemoryNotifier",
    "Notifier",
    "SmtpNotifier",
    "WebhookNotifier",
    "sign_webhook",
    "verify_webhook",
]
