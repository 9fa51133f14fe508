"""The tamper-evident audit trail: events, their hash chain, and purge checkpoints.

Pure (no I/O): the store writes records in the same transaction as the change they describe
(keyplane.store), the service builds the events (keyplane.service), the CLI verifies and lists
(`keyplane audit ...`).
"""

from keyplane.audit.chain import (
    AuditCheckpoint,
    ChainBreak,
    ChainReport,
    CheckpointSigner,
    verify_chain,
)
from keyplane.audit.events import (
    GENESIS_HASH,
    AuditAction,
    AuditEvent,
    AuditRecord,
    canonical_json,
    row_hash,
    seal,
)

__all__ = [
    "GENESIS_HASH",
    "AuditAction",
    "AuditCheckpoint",
    "AuditEvent",
    "AuditRecord",
    "ChainBreak",
    "ChainReport",
    "CheckpointSigner",
    "canonical_json",
    "row_hash",
    "seal",
    "verify_chain",
]
