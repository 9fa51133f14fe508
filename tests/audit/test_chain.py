"""The hash chain and checkpoints as pure functions: what verify_chain reports for each tamper."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from keyplane.audit import (
    GENESIS_HASH,
    AuditEvent,
    AuditRecord,
    CheckpointSigner,
    canonical_json,
    seal,
    verify_chain,
)
from keyplane.audit.events import seal_all
from keyplane.keys import KeyEncryptionKey

T0 = 1_700_000_000_000


def chain(n: int) -> list[AuditRecord]:
    events = [
        AuditEvent(
            T0 + i, "admin:bob", "key.update", "key:K", {"ips": ["*"]}, {"ips": [f"10.0.0.{i}"]}
        )
        for i in range(n)
    ]
    return seal_all(events, first_id=1, prev_hash=GENESIS_HASH)


class TestHash:
    def test_row_hash_is_sha256_of_prev_hash_and_canonical_json(self) -> None:
        """row_hash = sha256(prev_hash hex + sorted compact JSON of the content)."""
        event = AuditEvent(
            T0, "key:ABC", "key.revoke", "key:ABC", {"status": "active"}, {"status": "revoked"}
        )
        record = seal(event, row_id=1, prev_hash=GENESIS_HASH)
        text = canonical_json(event.content(1))
        assert text.startswith(
            '{"action":"key.revoke","actor":"key:ABC","after":{"status":"revoked"}'
        )
        assert record.row_hash == hashlib.sha256((GENESIS_HASH + text).encode()).hexdigest()

    def test_events_refuse_secret_fields(self) -> None:
        """An event can never carry a secret, ciphertext or KEK field."""
        for name in ("secret", "secret_ciphertext", "kek"):
            with pytest.raises(ValueError, match="never carry secrets"):
                AuditEvent(T0, "admin:x", "key.create", "key:K", after={name: "x"})


class TestVerify:
    def test_an_intact_chain_verifies(self) -> None:
        """Every row checks out; the head hash is the last row's."""
        rows = chain(4)
        report = verify_chain(rows, None)
        assert report.intact
        assert report.rows == 4
        assert report.head_hash == rows[-1].row_hash

    def test_an_edited_row_is_named(self) -> None:
        """Changing content without its hash breaks that row."""
        rows = chain(4)
        edited = dataclasses.replace(rows[2].event, after={"ips": ["0.0.0.0/0"]})
        rows[2] = dataclasses.replace(rows[2], event=edited)
        broken = verify_chain(rows, None).broken
        assert broken is not None
        assert broken.row_id == 3
        assert "edited" in broken.reason

    def test_a_rehashed_row_breaks_the_next_link(self) -> None:
        """Re-hashing an edited row leaves the next row's prev_hash pointing at the old one."""
        rows = chain(4)
        edited = dataclasses.replace(rows[1].event, actor="admin:mallory")
        rows[1] = seal(edited, row_id=2, prev_hash=rows[0].row_hash)
        broken = verify_chain(rows, None).broken
        assert broken is not None
        assert broken.row_id == 3
        assert "prev_hash" in broken.reason

    def test_a_deleted_row_is_named(self) -> None:
        """A gap in ids names the missing row."""
        rows = chain(5)
        del rows[2]
        broken = verify_chain(rows, None).broken
        assert broken is not None
        assert broken.row_id == 3
        assert "missing" in broken.reason

    def test_checkpoint_lets_a_purged_chain_verify(self) -> None:
        """After purging rows 1..2 the rest verifies from a signed checkpoint."""
        signer = CheckpointSigner(KeyEncryptionKey.generate())
        rows = chain(5)
        checkpoint = signer.sign(through_id=2, last_row_hash=rows[1].row_hash, at_ms=T0)
        assert verify_chain(rows[2:], checkpoint, signer).intact
        assert verify_chain(rows[3:], checkpoint, signer).broken is not None

    def test_a_forged_checkpoint_is_refused(self) -> None:
        """A checkpoint signed under another KEK (or edited) fails verification."""
        rows = chain(3)
        mine = CheckpointSigner(KeyEncryptionKey.generate())
        forged = CheckpointSigner(KeyEncryptionKey.generate()).sign(
            through_id=1, last_row_hash=rows[0].row_hash, at_ms=T0
        )
        broken = verify_chain(rows[1:], forged, mine).broken
        assert broken is not None
        assert "signature" in broken.reason
        assert "*" in repr(mine)
