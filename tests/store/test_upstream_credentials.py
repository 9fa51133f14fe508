"""The Store contract for gateway upstream credentials: memory, SQLite and PostgreSQL agree."""

from __future__ import annotations

import pytest

from keyplane.store import Store, open_store
from keyplane.store.protocol import UpstreamCredentialsRecord

T0 = 1_700_000_000_000  # ms since epoch


def record(api_key: str = "UPSTREAMKEY0000001", **changes: object) -> UpstreamCredentialsRecord:
    """A stored-credentials row named "default" (ciphertext is opaque bytes to the store)."""
    values: dict[str, object] = {
        "name": "default",
        "api_key": api_key,
        "key_type": "hmac",
        "secret_ciphertext": b"\x01nonce-and-sealed\x00\xff",
        "set_at_ms": T0,
    }
    values.update(changes)
    return UpstreamCredentialsRecord(**values)  # type: ignore[arg-type]


class TestUpstreamCredentials:
    def test_absent_on_a_new_store(self, store: Store) -> None:
        """A new store has no upstream credentials and deleting them changes nothing."""
        assert store.find_upstream_credentials() is None
        assert store.delete_upstream_credentials() is False
        assert store.revision() == 0

    def test_round_trip(self, store: Store) -> None:
        """find returns every field set stored, bytes intact."""
        stored = record(key_type="rsa")
        store.set_upstream_credentials(stored)
        assert store.find_upstream_credentials() == stored
        assert store.find_upstream_credentials("other") is None

    def test_set_replaces_the_row(self, store: Store) -> None:
        """A second set for the same name replaces the first."""
        store.set_upstream_credentials(record())
        newer = record("UPSTREAMKEY0000002", set_at_ms=T0 + 5)
        store.set_upstream_credentials(newer)
        assert store.find_upstream_credentials() == newer

    def test_every_change_bumps_the_revision(self, store: Store) -> None:
        """set and a successful delete bump the revision (running gateways re-read)."""
        store.set_upstream_credentials(record())
        after_set = store.revision()
        assert after_set > 0
        assert store.delete_upstream_credentials() is True
        assert store.revision() > after_set
        assert store.find_upstream_credentials() is None
        after_delete = store.revision()
        assert store.delete_upstream_credentials() is False
        assert store.revision() == after_delete

    def test_overlong_api_key_is_refused(self, store: Store) -> None:
        """api keys longer than 64 characters are refused with ValueError, revision unchanged."""
        with pytest.raises(ValueError, match="64"):
            store.set_upstream_credentials(record("K" * 65))
        assert store.revision() == 0

    def test_repr_hides_the_ciphertext(self) -> None:
        """The record's repr names the key but not the ciphertext."""
        assert "nonce-and-sealed" not in repr(record())
        assert "UPSTREAMKEY0000001" in repr(record())

    def test_survives_reopening(self, sql_url: str) -> None:
        """A second store on the same database sees the credentials (CLI -> running node)."""
        first = open_store(sql_url)
        second = open_store(sql_url)
        try:
            first.set_upstream_credentials(record())
            assert second.find_upstream_credentials() == record()
            assert second.revision() == first.revision()
        finally:
            first.close()
            second.close()
