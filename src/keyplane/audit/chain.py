"""Verifying the audit hash chain, and the signed checkpoint that survives a purge.

A purge deletes a prefix of the chain (rows 1..N). The checkpoint keeps N, row N's row_hash and
the time, signed with HMAC-SHA256 under a key derived from the key-encryption key (HKDF-SHA256,
info b"keyplane audit checkpoint"), so the remaining rows still verify: row N+1's prev_hash must
equal the checkpoint's hash, and nobody without the KEK can forge a checkpoint for a shortened
chain. A hash chain cannot show that rows were cut off its *end*; anchor the head hash printed by
`keyplane audit verify` elsewhere if that matters.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from keyplane.audit.events import GENESIS_HASH, AuditRecord, canonical_json
from keyplane.keys.encryption import KeyEncryptionKey

__all__ = [
    "CHECKPOINT_INFO",
    "AuditCheckpoint",
    "ChainBreak",
    "ChainReport",
    "CheckpointSigner",
    "verify_chain",
]

#: HKDF info string of the checkpoint signing key.
CHECKPOINT_INFO = b"keyplane audit checkpoint"


@dataclass(frozen=True, slots=True)
class AuditCheckpoint:
    """The purged prefix of the chain: rows 1..through_id are gone, the last had last_row_hash.

    at_ms: int, ms since epoch of the purge. signature: HMAC-SHA256 hex (CheckpointSigner).
    """

    through_id: int
    last_row_hash: str
    at_ms: int
    signature: str

    def message(self) -> bytes:
        """The signed bytes: canonical JSON of through_id, last_row_hash and at_ms."""
        content = {
            "atMs": self.at_ms,
            "lastRowHash": self.last_row_hash,
            "throughId": self.through_id,
        }
        return canonical_json(content).encode("utf-8")


class CheckpointSigner:
    """Signs and checks checkpoints with a key derived from the KEK; its repr is masked."""

    __slots__ = ("_key",)

    def __init__(self, kek: KeyEncryptionKey) -> None:
        raw = base64.b64decode(kek.to_base64().reveal())
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=CHECKPOINT_INFO)
        self._key = hkdf.derive(raw)

    def __repr__(self) -> str:
        return "CheckpointSigner('**********')"

    def sign(self, *, through_id: int, last_row_hash: str, at_ms: int) -> AuditCheckpoint:
        """A signed checkpoint for a purge of rows 1..through_id (at_ms: ms since epoch)."""
        unsigned = AuditCheckpoint(through_id, last_row_hash, at_ms, "")
        return AuditCheckpoint(through_id, last_row_hash, at_ms, self._mac(unsigned))

    def is_valid(self, checkpoint: AuditCheckpoint) -> bool:
        """True when checkpoint's signature is ours (constant-time compare)."""
        return hmac.compare_digest(self._mac(checkpoint), checkpoint.signature)

    def _mac(self, checkpoint: AuditCheckpoint) -> str:
        return hmac.new(self._key, checkpoint.message(), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """Where the chain first fails: row_id (the missing or bad row) and what is wrong."""

    row_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class ChainReport:
    """Outcome of verify_chain: rows checked, checkpoint row (0 = none), head hash, first break."""

    rows: int
    checkpoint_id: int
    head_hash: str
    broken: ChainBreak | None

    @property
    def intact(self) -> bool:
        """True when no break was found."""
        return self.broken is None


def verify_chain(
    rows: Iterable[AuditRecord],
    checkpoint: AuditCheckpoint | None,
    signer: CheckpointSigner | None = None,
) -> ChainReport:
    """Walk rows (ascending id) from the checkpoint (or genesis) and report the first break.

    Checks, per row: ids are contiguous (a gap means deleted rows), prev_hash equals the previous
    row's row_hash (or the checkpoint's), and row_hash matches the content. With a signer the
    checkpoint's signature is checked first. Stops at the first break; pure, no I/O.
    """
    expected_id, expected_prev, count = 1, GENESIS_HASH, 0
    if checkpoint is not None:
        if signer is not None and not signer.is_valid(checkpoint):
            reason = "the purge checkpoint's signature does not verify under this KEK"
            return ChainReport(
                0, checkpoint.through_id, "", ChainBreak(checkpoint.through_id, reason)
            )
        expected_id, expected_prev = checkpoint.through_id + 1, checkpoint.last_row_hash
    cp_id = 0 if checkpoint is None else checkpoint.through_id
    for row in rows:
        broken = _check_row(row, expected_id, expected_prev)
        if broken is not None:
            return ChainReport(count, cp_id, expected_prev, broken)
        count += 1
        expected_id, expected_prev = row.id + 1, row.row_hash
    return ChainReport(count, cp_id, expected_prev, None)


def _check_row(row: AuditRecord, expected_id: int, expected_prev: str) -> ChainBreak | None:
    if row.id > expected_id:
        gap = (
            f"row {expected_id}"
            if row.id == expected_id + 1
            else f"rows {expected_id}..{row.id - 1}"
        )
        return ChainBreak(
            expected_id, f"{gap} missing (deleted): row {row.id} follows row {expected_id - 1}"
        )
    if row.id < expected_id:
        return ChainBreak(row.id, f"row {row.id} is out of order (expected row {expected_id})")
    if row.prev_hash != expected_prev:
        return ChainBreak(
            row.id, f"prev_hash does not match the hash of row {row.id - 1} (edited or replaced)"
        )
    if row.computed_hash() != row.row_hash:
        return ChainBreak(row.id, "content does not match its row_hash (the row was edited)")
    return None
