"""Clocks: time comes from here, never from time.time() inside core logic."""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "FrozenClock", "OffsetClock", "SystemClock"]


class Clock(Protocol):
    """Source of wall-clock time."""

    def now_ms(self) -> int:
        """Return the current time: int, ms since the Unix epoch (UTC)."""
        ...


class SystemClock:
    """The machine's wall clock."""

    def now_ms(self) -> int:
        """Return time.time() as int ms since epoch."""
        return time.time_ns() // 1_000_000


class FrozenClock:
    """A clock that moves only when told to; for tests of window edges.

    now_ms: int, ms since epoch, the starting instant.
    """

    def __init__(self, now_ms: int = 1_700_000_000_000) -> None:
        self._now_ms = now_ms

    def now_ms(self) -> int:
        """Return the frozen instant (ms since epoch)."""
        return self._now_ms

    def advance(self, ms: int) -> None:
        """Move the clock forward by ms milliseconds."""
        self._now_ms += ms

    def set(self, now_ms: int) -> None:
        """Jump to an absolute instant (ms since epoch)."""
        self._now_ms = now_ms


class OffsetClock:
    """The system clock shifted by offset_ms (int, ms; positive = ahead); for skew tests."""

    def __init__(self, offset_ms: int) -> None:
        self.offset_ms = offset_ms

    def now_ms(self) -> int:
        """System time plus the offset, int ms since epoch."""
        return time.time_ns() // 1_000_000 + self.offset_ms
