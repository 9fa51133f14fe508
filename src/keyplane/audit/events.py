"""Audit events and the hash chain's row form.

An AuditEvent is what happened (who, what, to what, which fields changed, from where); an
AuditRecord is the event as stored: its position in the chain (id), the previous row's hash and
its own hash. Content hash rule (keyplane's own): row_hash = SHA-256 hex of
prev_hash (64 ASCII hex chars) + canonical_json(content), where content is the record's id and
event fields and canonical_json is sorted-key compact UTF-8 JSON. The first row's prev_hash is
GENESIS_HASH (64 zeros).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = [
    "FORBIDDEN_FIELDS",
    "GENESIS_HASH",
    "AuditAction",
    "AuditEvent",
    "AuditRecord",
    "canonical_json",
    "row_hash",
    "seal",
    "seal_all",
]

#: prev_hash of the first row of a chain that has never been purged.
GENESIS_HASH = "0" * 64

#: field names an event's before/after may never carry (secrets, ciphertext, KEK material).
FORBIDDEN_FIELDS = frozenset(
    {
        "secret",
        "secret_ciphertext",
        "secretCiphertext",
        "kek",
        "privateKey",
        "private_key",
        "apiSecret",
        "api_secret",
    }
)


class AuditAction(StrEnum):
    """What an audit row records: "<subject>.<verb>"."""

    KEY_CREATE = "key.create"
    KEY_UPDATE = "key.update"
    KEY_ROTATE = "key.rotate"
    KEY_REVOKE = "key.revoke"
    KEY_DELETE = "key.delete"
    KEY_SUSPEND = "key.suspend"
    KEY_RESUME = "key.resume"
    ACCOUNT_CREATE = "account.create"
    ACCOUNT_UPDATE = "account.update"
    ACCOUNT_FREEZE = "account.freeze"
    ACCOUNT_UNFREEZE = "account.unfreeze"
    UPSTREAM_SET = "upstream.set"
    UPSTREAM_CLEAR = "upstream.clear"
    KEK_ROTATE = "kek.rotate"
    ADMIN_LOGIN = "admin.login"
    ANOMALY_FLAG = "anomaly.flag"
    SIGNATURE_BURST = "auth.signature.burst"
    MAINTENANCE_PURGE = "maintenance.purge"


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One change or security event, before it is stored.

    at_ms: int, ms since epoch. actor: "key:<api_key>", "admin:<name>" or "system:<rule>".
    action: an AuditAction value (free text is accepted for forward compatibility).
    target: "key:<api_key>", "account:<uid>", "upstream:<name>" or "" (none).
    before / after: the changed fields only, JSON values, Bybit field names (permissions as
    Bybit's permission object); never secrets. source_ip: client IP, or None (CLI, rules).
    Raises ValueError when before/after name a field in FORBIDDEN_FIELDS.
    """

    at_ms: int
    actor: str
    action: str
    target: str
    before: Mapping[str, Any] = field(default_factory=dict)
    after: Mapping[str, Any] = field(default_factory=dict)
    source_ip: str | None = None

    def __post_init__(self) -> None:
        for side in (self.before, self.after):
            leaked = FORBIDDEN_FIELDS.intersection(side)
            if leaked:
                raise ValueError(f"audit events never carry secrets: {sorted(leaked)}")

    def content(self, row_id: int) -> dict[str, Any]:
        """The hashed content of this event stored as row row_id (JSON-ready dict)."""
        return {
            "id": row_id,
            "atMs": self.at_ms,
            "actor": self.actor,
            "action": str(self.action),
            "target": self.target,
            "before": dict(self.before),
            "after": dict(self.after),
            "sourceIp": self.source_ip,
        }


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """A stored audit row: id (1, 2, ... contiguous), the event, prev_hash and row_hash (hex)."""

    id: int
    event: AuditEvent
    prev_hash: str
    row_hash: str

    def computed_hash(self) -> str:
        """The hash this row's content and prev_hash should have (compare with row_hash)."""
        return row_hash(self.prev_hash, self.event.content(self.id))

    def to_json(self) -> dict[str, Any]:
        """The export form: content fields plus prevHash and rowHash."""
        return {
            **self.event.content(self.id),
            "prevHash": self.prev_hash,
            "rowHash": self.row_hash,
        }


def canonical_json(content: Mapping[str, Any]) -> str:
    """Sorted-key, compact (",", ":") JSON with raw UTF-8: the hashed form of a row."""
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def row_hash(prev_hash: str, content: Mapping[str, Any]) -> str:
    """SHA-256 lowercase hex of prev_hash + canonical_json(content) (UTF-8)."""
    digest = hashlib.sha256(prev_hash.encode("ascii"))
    digest.update(canonical_json(content).encode("utf-8"))
    return digest.hexdigest()


def seal(event: AuditEvent, *, row_id: int, prev_hash: str) -> AuditRecord:
    """The record of event stored as row row_id after a row whose hash is prev_hash."""
    return AuditRecord(
        id=row_id,
        event=event,
        prev_hash=prev_hash,
        row_hash=row_hash(prev_hash, event.content(row_id)),
    )


def seal_all(events: Sequence[AuditEvent], *, first_id: int, prev_hash: str) -> list[AuditRecord]:
    """Records of events stored as rows first_id, first_id + 1, ... after prev_hash."""
    records: list[AuditRecord] = []
    for event in events:
        record = seal(event, row_id=first_id + len(records), prev_hash=prev_hash)
        records.append(record)
        prev_hash = record.row_hash
    return records
