"""The key-network history part of the Store contract: memory, SQLite and PostgreSQL agree."""

from __future__ import annotations

import pytest

from keyplane.keys.model import KeyStatus
from keyplane.store import Store
from keyplane.usage import KeyNetwork

from .test_store_contract import T0, master, new_key

HOME, OFFICE = "10.0.0.0/24", "2001:db8:1::/48"


class TestKeyNetworks:
    def test_upsert_adds_requests_and_widens_the_seen_range(self, store: Store) -> None:
        """A second write of one (key, network) adds its requests, keeps the earliest first
        and the latest last sighting; pairs repeated in one batch are merged."""
        store.record_key_networks([KeyNetwork(1, HOME, T0 + 10, T0 + 20, 5)])
        store.record_key_networks(
            [
                KeyNetwork(1, HOME, T0, T0 + 15, 2),
                KeyNetwork(1, HOME, T0 + 12, T0 + 30, 1),
                KeyNetwork(1, OFFICE, T0 + 40, T0 + 40, 1),
            ]
        )
        found = store.load_key_networks([1])
        assert found[1] == [
            KeyNetwork(1, HOME, T0, T0 + 30, 8),
            KeyNetwork(1, OFFICE, T0 + 40, T0 + 40, 1),
        ]

    def test_load_many_keys_at_once_and_unknown_ids_are_empty(self, store: Store) -> None:
        """Every asked id is in the answer; keys never seen map to []."""
        store.record_key_networks(
            [KeyNetwork(key_id, HOME, T0, T0, 1) for key_id in range(1, 1201)]
        )
        found = store.load_key_networks(range(1, 1203))
        assert len(found) == 1202
        assert found[1200] == [KeyNetwork(1200, HOME, T0, T0, 1)]
        assert found[1202] == []
        assert store.load_key_networks([]) == {}

    def test_too_long_network_is_refused(self, store: Store) -> None:
        with pytest.raises(ValueError, match="network longer"):
            store.record_key_networks([KeyNetwork(1, "x" * 65, T0, T0, 1)])
        assert store.load_key_networks([1]) == {1: []}

    def test_purged_keys_lose_their_networks(self, store: Store) -> None:
        """maintenance purge of a revoked key drops its network history with it."""
        uid = master(store).uid
        gone = store.add_key(new_key(uid, "OLDREVOKED00000001"))
        kept = store.add_key(new_key(uid, "LIVEKEY00000000001"))
        store.record_key_networks(
            [KeyNetwork(gone.id, HOME, T0, T0, 1), KeyNetwork(kept.id, HOME, T0, T0, 1)]
        )
        store.save_key(gone.with_changes(status=KeyStatus.REVOKED, revoked_at_ms=T0))
        store.purge(checkpoint=None, keys_revoked_before_ms=T0 + 1)
        found = store.load_key_networks([gone.id, kept.id])
        assert found == {gone.id: [], kept.id: [KeyNetwork(kept.id, HOME, T0, T0, 1)]}
