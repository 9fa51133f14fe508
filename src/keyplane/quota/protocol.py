"""The quota-counter port: one count per key per UTC day, counted only while under quota.

Why not keyplane.ratelimit.RateLimiter: a rate limit is a rolling GCRA window whose state is a
theoretical arrival time; a daily quota is a plain counter over a fixed calendar window (00:00
to 24:00 UTC) whose value itself matters (the 75% alert reads it, and a restarted single node
seeds it from the usage log). Forcing one into the other would blur both, so quotas have their
own small protocol and the same two backends (memory for one node, Redis for several).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from keyplane.errors import RateLimitedError
from keyplane.keys.model import DAY_MS

__all__ = [
    "DailyQuotaExceededError",
    "QuotaCounter",
    "QuotaDecision",
    "day_start_ms",
    "next_day_ms",
]


def day_start_ms(now_ms: int) -> int:
    """00:00 UTC of the day holding now_ms (int ms since epoch); Unix time has no leap seconds,
    so every UTC day is exactly DAY_MS long."""
    return now_ms - now_ms % DAY_MS


def next_day_ms(now_ms: int) -> int:
    """The next 00:00 UTC after now_ms, ms since epoch (when a spent quota resets)."""
    return day_start_ms(now_ms) + DAY_MS


@dataclass(frozen=True, slots=True)
class QuotaDecision:
    """The answer for one request.

    allowed: bool. used: int, requests counted for the day including this one when allowed
    (when refused: the count, >= quota). quota: int, the day's budget. reset_at_ms: int, next
    00:00 UTC in ms since epoch (-> X-Bapi-Limit-Reset-Timestamp when refused).
    """

    allowed: bool
    used: int
    quota: int
    reset_at_ms: int


class QuotaCounter(Protocol):
    """Counts requests per key per UTC day; every backend passes tests/quota's contract suite.

    Keys are named by api_key (a rotated key is a new api_key with a fresh count, like a new
    key), which is also how the usage log is indexed (api_key, at_ms) for the restart seed.
    """

    async def hit(self, api_key: str, quota: int, now_ms: int) -> QuotaDecision:
        """Count one request of api_key on the UTC day of now_ms (ms) when fewer than quota
        (int >= 1) are counted; otherwise refuse and count nothing. Raises ValueError for a
        quota < 1 and the backend's error (e.g. redis ConnectionError) when it cannot answer."""
        ...

    async def used(self, api_key: str, now_ms: int) -> int:
        """Requests counted for api_key on the UTC day of now_ms (0 when none)."""
        ...

    async def ping(self) -> None:
        """Return when the backend answers; raise when it cannot."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class DailyQuotaExceededError(RateLimitedError):
    """A key's daily quota is spent (retCode 10006, like Bybit's rate limit, so every client
    backs off the way it already knows). limit: int, the quota. reset_at_ms: int, next 00:00 UTC
    in ms (-> X-Bapi-Limit-Reset-Timestamp; pybit sleeps until it)."""
