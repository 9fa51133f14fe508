"""In-process replay store (one node): a dict of live signatures and a heap of their expiries.

An entry is (key id, SHA-256 digest of the canonical signature) (signature_digest): the
signature itself is never kept.

Memory rule: at most max_entries signatures are remembered at once (default 250,000, about
70 MB worst case at about 260 bytes an entry; one node serving 5,000 guarded requests a second
with the default 5 s recv_window holds about 30,000). Expired entries are dropped on every
call, cheapest first (heap order). A live signature is never forgotten to make room: when the
store is full of live ones, first_seen raises ReplayStoreFullError and the caller's fail
policy decides (the request path: reads pass, writes get 10016, counted). Evicting instead
would let exactly the replay the guard exists to stop through.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable

from keyplane.replay.protocol import ReplayStoreFullError, signature_digest

__all__ = ["DEFAULT_MAX_ENTRIES", "MemoryReplayStore"]

DEFAULT_MAX_ENTRIES = 250_000

_Entry = tuple[int, bytes]  # (key id, signature_digest)


def _monotonic_ms() -> float:
    return time.monotonic_ns() / 1_000_000


class MemoryReplayStore:
    """Remembered signatures of this process; see the module docstring for the memory rule.

    max_entries: int >= 1. monotonic_ms: the clock expiries are measured on (float ms, only
    differences matter; time.monotonic by default, like Redis' own clock for PX).
    Decisions need no await, so concurrent first_seen calls on one event loop are atomic.
    """

    def __init__(
        self,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        monotonic_ms: Callable[[], float] = _monotonic_ms,
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.max_entries = max_entries
        self._now = monotonic_ms
        self._expires: dict[_Entry, float] = {}
        self._heap: list[tuple[float, _Entry]] = []

    def __len__(self) -> int:
        """Signatures remembered right now (expired ones are dropped on the next call)."""
        return len(self._expires)

    async def first_seen(self, key_id: int, signature: str, ttl_ms: int) -> bool:
        """See keyplane.replay.protocol.ReplayStore.first_seen; raises ValueError (ttl_ms < 1)
        and ReplayStoreFullError (max_entries live signatures)."""
        return self.decide(key_id, signature, ttl_ms)

    def decide(self, key_id: int, signature: str, ttl_ms: int) -> bool:
        """first_seen() without the coroutine."""
        if ttl_ms < 1:
            raise ValueError(f"ttl_ms must be >= 1, got {ttl_ms}")
        now = self._now()
        self._drop_expired(now)
        entry = (key_id, signature_digest(signature))
        if entry in self._expires:
            return False
        if len(self._expires) >= self.max_entries:
            raise ReplayStoreFullError(
                f"replay store holds {self.max_entries} live signatures (max_entries)"
            )
        expires_at = now + ttl_ms
        self._expires[entry] = expires_at
        heapq.heappush(self._heap, (expires_at, entry))
        return True

    def _drop_expired(self, now: float) -> None:
        heap, expires = self._heap, self._expires
        while heap and heap[0][0] <= now:
            expires_at, entry = heapq.heappop(heap)
            if expires.get(entry) == expires_at:  # not re-added since (then a later expiry)
                del expires[entry]

    async def ping(self) -> None:
        """Always answers: the signatures live in this process."""

    async def close(self) -> None:
        """Forget every signature."""
        self._expires.clear()
        self._heap.clear()
