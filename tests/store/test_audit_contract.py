"""The audit part of the Store contract: the same hash chain on memory, SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor

import pytest

from keyplane.audit import (
    GENESIS_HASH,
    AuditCheckpoint,
    AuditEvent,
    CheckpointSigner,
    verify_chain,
)
from keyplane.errors import NotFoundError
from keyplane.keys import KeyEncryptionKey
from keyplane.keys.model import KeyStatus
from keyplane.store import Store

from .test_store_contract import T0, master, new_key

SIGNER = CheckpointSigner(KeyEncryptionKey.generate())


def event(action: str = "key.update", target: str = "key:K", at_ms: int = T0) -> AuditEvent:
    """An admin event with a small before/after."""
    return AuditEvent(
        at_ms=at_ms,
        actor="admin:alice",
        action=action,
        target=target,
        before={"readOnly": 0},
        after={"readOnly": 1, "note": "désk"},
        source_ip="203.0.113.7",
    )


class TestAuditWrites:
    def test_mutations_append_their_events_in_order(self, store: Store) -> None:
        """Account, key and upstream writes each store their events; ids run 1, 2, 3, ..."""
        account = store.create_account(
            parent_uid=None,
            created_at_ms=T0,
            audit=lambda a: [event("account.create", f"account:{a.uid}")],
        )
        key = store.add_key(new_key(account.uid), audit=[event("key.create")])
        store.save_key(key.with_changes(read_only=True), audit=[event("key.update")])
        store.save_account(account, audit=[event("account.freeze")])
        rows = store.list_audit()
        assert [r.id for r in rows] == [1, 2, 3, 4]
        assert [r.event.action for r in rows] == [
            "account.create",
            "key.create",
            "key.update",
            "account.freeze",
        ]
        assert rows[0].event.target == f"account:{account.uid}"
        assert rows[0].prev_hash == GENESIS_HASH
        assert all(b.prev_hash == a.row_hash for a, b in itertools.pairwise(rows))
        assert rows[1].event == event("key.create")  # before/after, IP, unicode round-trip

    def test_a_failed_mutation_writes_no_audit_row(self, store: Store) -> None:
        """The event is written in the change's transaction: no change, no row."""
        with pytest.raises(NotFoundError):
            store.add_key(new_key(999_999), audit=[event("key.create")])
        with pytest.raises(NotFoundError):
            store.save_key(new_key(1).with_changes(id=42), audit=[event()])
        assert not store.delete_upstream_credentials("nothing", audit=[event("upstream.clear")])
        assert store.list_audit() == []

    def test_append_audit_does_not_bump_the_revision(self, store: Store) -> None:
        """Security events with no other change leave key caches alone."""
        before = store.revision()
        stored = store.append_audit([event("anomaly.flag"), event("auth.signature.burst")])
        assert [r.id for r in stored] == [1, 2]
        assert store.revision() == before
        assert list(store.iter_audit()) == list(stored)

    def test_concurrent_writers_keep_one_chain(self, store: Store) -> None:
        """Parallel appends never fork the chain: contiguous ids, every link intact."""
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: store.append_audit([event(at_ms=T0 + i)]), range(40)))
        report = verify_chain(store.iter_audit(), None)
        assert report.intact
        assert report.rows == 40


class TestAuditQueries:
    def test_filters_by_target_and_time_and_keeps_the_newest(self, store: Store) -> None:
        """target, since_ms (inclusive) and limit (newest N, still ascending)."""
        store.append_audit(
            [event(target="key:A", at_ms=T0 + i) for i in range(3)] + [event(target="key:B")]
        )
        assert [r.id for r in store.list_audit(target="key:A")] == [1, 2, 3]
        assert [r.id for r in store.list_audit(since_ms=T0 + 1)] == [2, 3]
        assert [r.id for r in store.list_audit(limit=2)] == [3, 4]
        assert [r.id for r in store.list_audit(target="key:A", limit=1)] == [3]

    def test_iter_audit_streams_every_row(self, store: Store) -> None:
        """More rows than one page still come back in id order."""
        store.append_audit([event(at_ms=T0 + i) for i in range(1205)])
        assert [r.id for r in store.iter_audit()] == list(range(1, 1206))


class TestPurge:
    def test_purge_keeps_the_chain_verifiable(self, store: Store) -> None:
        """Rows 1..N go, the checkpoint stays, new rows chain on from it."""
        stored = store.append_audit([event(at_ms=T0 + i) for i in range(5)])
        checkpoint = SIGNER.sign(through_id=3, last_row_hash=stored[2].row_hash, at_ms=T0 + 9)
        result = store.purge(
            checkpoint=checkpoint, keys_revoked_before_ms=0, audit=[event("maintenance.purge")]
        )
        assert result.audit_rows == 3
        assert store.find_audit_checkpoint() == checkpoint
        assert [r.id for r in store.iter_audit()] == [4, 5, 6]
        report = verify_chain(store.iter_audit(), checkpoint, SIGNER)
        assert report.intact
        assert report.rows == 3
        assert report.checkpoint_id == 3

    def test_purge_of_every_row_continues_the_ids(self, store: Store) -> None:
        """After purging all rows, the next row is through_id + 1 and links to the checkpoint."""
        stored = store.append_audit([event(), event()])
        checkpoint = SIGNER.sign(through_id=2, last_row_hash=stored[1].row_hash, at_ms=T0)
        store.purge(checkpoint=checkpoint, keys_revoked_before_ms=0)
        (row,) = store.append_audit([event()])
        assert (row.id, row.prev_hash) == (3, stored[1].row_hash)

    def test_purge_refuses_a_checkpoint_that_does_not_match(self, store: Store) -> None:
        """A wrong hash or a backwards checkpoint raises and deletes nothing."""
        stored = store.append_audit([event(), event(), event()])
        wrong = AuditCheckpoint(2, "f" * 64, T0, "sig")
        with pytest.raises(ValueError, match="does not match"):
            store.purge(checkpoint=wrong, keys_revoked_before_ms=0)
        good = SIGNER.sign(through_id=2, last_row_hash=stored[1].row_hash, at_ms=T0)
        store.purge(checkpoint=good, keys_revoked_before_ms=0)
        with pytest.raises(ValueError, match="beyond"):
            store.purge(checkpoint=good, keys_revoked_before_ms=0)
        assert [r.id for r in store.iter_audit()] == [3]

    def test_purge_deletes_only_keys_revoked_before_the_cutoff(self, store: Store) -> None:
        """Old revoked keys go; recently revoked, suspended and live keys stay."""
        uid = master(store).uid
        old = store.add_key(new_key(uid, "OLDREVOKED00000001"))
        recent = store.add_key(new_key(uid, "NEWREVOKED00000001"))
        live = store.add_key(new_key(uid, "LIVEKEY00000000001"))
        store.save_key(old.with_changes(status=KeyStatus.REVOKED, revoked_at_ms=T0))
        store.save_key(recent.with_changes(status=KeyStatus.REVOKED, revoked_at_ms=T0 + 100))
        revision = store.revision()
        result = store.purge(checkpoint=None, keys_revoked_before_ms=T0 + 50)
        assert result.keys == ("OLDREVOKED00000001",)
        assert result.audit_rows == 0
        assert store.find_key("OLDREVOKED00000001") is None
        assert store.find_key(recent.api_key) is not None
        assert store.find_key(live.api_key) is not None
        assert store.revision() > revision
