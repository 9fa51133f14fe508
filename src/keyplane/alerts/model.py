"""The alert record: one event worth telling an operator about."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Alert", "AlertKind", "AlertRecord"]


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


@dataclass(frozen=True)
class AlertRecord:
    """One row of the alert log: an alert condition met by a key in a window, stored once.

    key_id / api_key / uid: the key (never its secret). kind: AlertKind. condition: str, what
    was met, at most 128 characters: "quota.75", "rate.75:<path>:<category>", "expiry.7d".
    window_ms: int, ms since epoch naming the window the condition is deduplicated in (the
    UTC day's 00:00 for quota and rate, the key's expires_at_ms for expiry). at_ms: int, ms
    since epoch, when it was recorded. summary: one human line. details: JSON-safe facts.
    (key_id, condition, window_ms) is unique in the store: Store.record_alert tells the one
    caller that stored it, and only that caller sends it.
    """

    key_id: int
    api_key: str
    uid: int
    kind: AlertKind
    condition: str
    window_ms: int
    at_ms: int
    summary: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def alert_id(self) -> str:
        """Stable id "<key id>:<condition>:<window ms>": the same on every node and retry."""
        return f"{self.key_id}:{self.condition}:{self.window_ms}"

    def to_alert(self) -> Alert:
        """The Alert the notifiers send for this record."""
        return Alert(
            id=self.alert_id,
            kind=self.kind,
            at_ms=self.at_ms,
            summary=self.summary,
            api_key=self.api_key,
            key_id=self.key_id,
            uid=self.uid,
            details={"condition": self.condition, "windowMs": self.window_ms, **self.details},
        )

    def to_json(self) -> dict[str, Any]:
        """The CLI's JSON form (`keyplane alerts list --json`)."""
        return {
            "id": self.alert_id,
            "kind": self.kind.value,
            "condition": self.condition,
            "windowMs": self.window_ms,
            "atMs": self.at_ms,
            "apiKey": self.api_key,
            "keyId": self.key_id,
            "uid": self.uid,
            "summary": self.summary,
            "details": self.details,
        }
