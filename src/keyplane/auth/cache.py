"""The in-process key cache that keeps the hot path free of database round trips.

Entries (including "unknown key" answers) live until the store's revision counter moves; a
background poller (see keyplane.http.app) calls `sync_revision` every few hundred ms, so a key
revoked or changed by another process stops working within about one poll interval.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace

from keyplane.auth.pipeline import KeyEntry
from keyplane.keys.model import KeyStatus

__all__ = ["KeyCache"]

_MAX_ENTRIES = 100_000


class KeyCache:
    """api_key -> KeyEntry | None, cleared whenever the store revision changes.

    loader: api_key -> KeyEntry | None (does the database read; called off the event loop).
    """

    def __init__(self, loader: Callable[[str], KeyEntry | None], revision: int = -1) -> None:
        self._loader = loader
        self._entries: dict[str, KeyEntry | None] = {}
        self._revision = revision
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []
        # api keys refused on this node before the store says so (see hold())
        self._held: frozenset[str] = frozenset()
        self.hits = 0
        self.misses = 0
        self.invalidations = 0

    def add_invalidation_listener(self, listener: Callable[[], None]) -> None:
        """Call listener() (on the caller's thread, after the drop) whenever entries are dropped.

        Used by long-lived connections (WebSocket) to re-check their key after a revocation.
        A listener must not raise and must not block; it runs on the event loop.
        """
        self._listeners.append(listener)

    def _invalidated(self) -> None:
        self.invalidations += 1
        for listener in self._listeners:
            listener()

    def peek(self, api_key: str) -> tuple[bool, KeyEntry | None]:
        """(found, entry) without loading: the hot path's no-I/O lookup."""
        try:
            entry = self._entries[api_key]
        except KeyError:
            return False, None
        self.hits += 1
        return True, entry

    def load(self, api_key: str) -> KeyEntry | None:
        """Load through the loader and remember the answer (blocking: run in a thread)."""
        self.misses += 1
        revision = self._revision
        entry = self._loader(api_key)
        if api_key in self._held and entry is not None:
            entry = _suspended(entry)
        with self._lock:
            if revision == self._revision:
                if len(self._entries) >= _MAX_ENTRIES:
                    self._entries.clear()
                self._entries[api_key] = entry
        return entry

    def sync_revision(self, revision: int) -> bool:
        """Drop every entry when revision differs from the last seen; True when it did."""
        with self._lock:
            if revision == self._revision:
                return False
            self._revision = revision
            self._entries = {}
        self._invalidated()
        return True

    def clear(self) -> None:
        """Drop every entry now (same-process writes call this)."""
        with self._lock:
            self._entries = {}
            self._revision = -1
        self._invalidated()

    def hold(self, api_key: str) -> None:
        """Refuse api_key on this node at once, as suspended (retCode 10007), until release():
        what an automatic suspension does before its store write lands (the store write then
        reaches every node through the revocation broadcast). Live WebSocket connections are
        re-checked. Runs on the event loop."""
        with self._lock:
            self._held = self._held | {api_key}
            entry = self._entries.get(api_key)
            if entry is not None:
                self._entries[api_key] = _suspended(entry)
        self._invalidated()

    def release(self, api_key: str) -> None:
        """Stop holding api_key (its store record decides again from the next load)."""
        with self._lock:
            self._held = self._held - {api_key}
            self._entries.pop(api_key, None)


def _suspended(entry: KeyEntry) -> KeyEntry:
    """entry with its key's status set to suspended (revoked stays revoked)."""
    if entry.key.status is not KeyStatus.ACTIVE:
        return entry
    return replace(entry, key=entry.key.with_changes(status=KeyStatus.SUSPENDED))
