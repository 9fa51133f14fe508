"""lastUsedAt bookkeeping off the request path: marks in memory, flushed to the store in batches."""

from __future__ import annotations

import threading

from keyplane.store.protocol import Store

__all__ = ["LastUsedRecorder"]


class LastUsedRecorder:
    """Collects key id -> last use (ms since epoch) and writes them with one store call."""

    def __init__(self) -> None:
        self._pending: dict[int, int] = {}
        self._lock = threading.Lock()

    def mark(self, key_id: int, now_ms: int) -> None:
        """Record a use of key_id at now_ms (no I/O)."""
        self._pending[key_id] = now_ms

    def flush(self, store: Store) -> int:
        """Write pending marks to the store (blocking); returns how many keys were written."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if pending:
            store.record_last_used(pending)
        return len(pending)
