"""The alert record: one event worth telling an operator about."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Alert", "AlertKind"]


class AlertKind(enum.StrEnum):
    """Why an alert fires; one alert per key per kind per window (the caller deduplicates)."""

    QUOTA_75 = "quota.75"  # a key used 75% of its daily quota
    RATE_75 = "rate.75"  # a key ran at >= 75% of a rate limit for a sustained period
    EXPIRY_SOON = "expiry.soon"  # an unbound key expires in 14, 7 or 1 days
    ANOMALY = "anomaly"  # an anomaly rule flagged a key
    LEAK_SUSPECTED = "leak.suspected"  # failed signatures / stale timestamps for one key id
    SUSPENDED = "key.suspended"  # a rule suspended a key
    USAGE_LOST = "usage.lost"  # usage rows could be neither written nor spilled


@dataclass(frozen=True)
class Alert:
    """One alert.

    id: str, unique (idempotency key for receivers). kind: AlertKind. at_ms: int, ms since
    epoch. api_key / key_id / uid: the key concerned (never its secret), or None for
    deployment-wide alerts. summary: one human line. details: JSON-safe facts (rule name,
    thresholds, counts, networks).
    """

    id: str
    kind: AlertKind
    at_ms: int
    summary: str
    api_key: str | None = None
    key_id: int | None = None
    uid: int | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The wire form (webhook body, email attachment): stable field names."""
        return {
            "id": self.id,
            "kind": self.kind.value,
            "atMs": self.at_ms,
            "summary": self.summary,
            "apiKey": self.api_key,
            "keyId": self.key_id,
            "uid": self.uid,
            "details": self.details,
        }

    def body(self) -> bytes:
        """to_json() as compact UTF-8 JSON bytes (what the webhook signs and sends)."""
        return json.dumps(self.to_json(), separators=(",", ":"), sort_keys=True).encode()
