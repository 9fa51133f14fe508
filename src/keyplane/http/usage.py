"""Usage bookkeeping off the request path.

UsageSink: where the auth middleware hands each request's UsageEvent (keyplane.usage.writer's
UsageWriter in the app; with anomaly detection, a FanOutSink to it and the AnomalyGuard).
LastUsedRecorder: lastUsedAt marks when the usage log is off (with it on, the writer sets
lastUsedAt from the usage stream itself).
"""

from __future__ import annotations

import re
import threading
from typing import Protocol

from keyplane.store.protocol import Store
from keyplane.usage.model import UsageEvent, UsageFields

__all__ = ["FanOutSink", "LastUsedRecorder", "UsageSink", "ret_code_of"]

_RET_CODE = re.compile(rb'"retCode"\s*:\s*(-?\d+)')
_ENVELOPE_HEAD = b'{"retCode":'


class UsageSink(Protocol):
    """Takes one usage row per request (a UsageEvent, or its UsageFields tuple without row_id);
    must not block or do I/O (hot path)."""

    def emit(self, event: UsageEvent | UsageFields) -> None:
        """Queue the row."""
        ...


class FanOutSink:
    """Hands each usage row to two sinks in turn (the usage writer and the anomaly guard);
    as cheap as the two emits."""

    def __init__(self, first: UsageSink, second: UsageSink) -> None:
        self.first, self.second = first, second

    def __repr__(self) -> str:
        return f"FanOutSink({self.first!r}, {self.second!r})"

    def emit(self, event: UsageEvent | UsageFields) -> None:
        """Queue the row in both sinks."""
        self.first.emit(event)
        self.second.emit(event)


def ret_code_of(body: bytes) -> int:
    """The retCode of a V5 envelope from its first body chunk; -1 when it holds none.

    keyplane's own envelopes start with {"retCode":N, (a slice, no JSON parse); other bodies
    (gateway upstream replies) are searched in their first 512 bytes.
    """
    if body.startswith(_ENVELOPE_HEAD):
        end = body.find(b",", len(_ENVELOPE_HEAD))
        digits = body[len(_ENVELOPE_HEAD) : end if end > 0 else None]
        try:
            return int(digits)
        except ValueError:
            pass
    found = _RET_CODE.search(body[:512])
    return int(found.group(1)) if found else -1


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
