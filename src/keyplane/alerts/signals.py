"""What the request path leaves for the alert monitor: plain containers, touched only when a
key is near a limit, read off the request path by keyplane.alerts.monitor.AlertMonitor.

    rate.75   RequestLimits hands every allowed decision to count_allowed(), which marks the
              (key, route) bucket "hot" at that second when either (a) the decision used
              >= rate_fraction of the budget: (limit - remaining) * 10000 >= rate_bp * limit
              (a burst; with the Redis limiter this sees every node's requests), or (b) this
              node has allowed >= rate_fraction * limit requests of the bucket in the current
              window slot ([k * window_ms, (k + 1) * window_ms)): an evenly spread load at 80%
              of the budget never leaves GCRA short of burst room, so (a) alone would miss it.
              (b) counts this node's share only. A hot request extends the bucket's streak of
              consecutive hot UTC seconds. Cost: a dict lookup, a tuple store and two integer
              compares.
    quota.75  RequestLimits queues (key, used, quota, at_ms) the first time on this node in a
              UTC day that a key's count reaches quota_threshold(quota) = ceil(fraction * quota).

All of it runs on the one event loop of a node: no locks. Deduplication across nodes and
restarts is the store's (Store.record_alert); this only keeps the hot path quiet.
"""

from __future__ import annotations

import math
from collections import deque

from keyplane.keys.model import ApiKey
from keyplane.quota.protocol import day_start_ms

__all__ = ["DEFAULT_ALERT_FRACTION", "AlertSignals", "QuotaCrossing", "Streak"]

#: rule: exchanges warn at 75% of a quota (issue 5: "an alert when a key crosses 75%").
DEFAULT_ALERT_FRACTION = 0.75
#: quota crossings held before the monitor drains them; beyond it the oldest are dropped.
_QUEUE_MAX = 10_000

#: (key, used, quota, at_ms): a key's day count reached its alert threshold.
QuotaCrossing = tuple[ApiKey, int, int, int]


class Streak:
    """Consecutive hot seconds of one bucket: first and last (int seconds since epoch), key."""

    __slots__ = ("first", "key", "last")

    def __init__(self, second: int, key: ApiKey) -> None:
        self.first = self.last = second
        self.key = key

    @property
    def seconds(self) -> int:
        """Length of the streak in seconds (both ends included)."""
        return self.last - self.first + 1


class AlertSignals:
    """Hot buckets and quota crossings (see the module docstring).

    rate_fraction / quota_fraction: float in (0, 1], the share of a rate budget / daily quota
    that counts as "near". streaks: bucket -> Streak of consecutive hot seconds. slots:
    bucket -> (end of the current window slot in ms, requests this node allowed in it).
    quota_crossed: deque of QuotaCrossing.
    """

    __slots__ = (
        "_quota_flagged",
        "quota_crossed",
        "quota_fraction",
        "rate_bp",
        "slots",
        "streaks",
    )

    def __init__(
        self,
        *,
        rate_fraction: float = DEFAULT_ALERT_FRACTION,
        quota_fraction: float = DEFAULT_ALERT_FRACTION,
    ) -> None:
        if not (0 < rate_fraction <= 1 and 0 < quota_fraction <= 1):
            raise ValueError("alert fractions must lie in (0, 1]")
        self.rate_bp = round(rate_fraction * 10_000)
        self.quota_fraction = quota_fraction
        self.streaks: dict[str, Streak] = {}
        self.slots: dict[str, tuple[int, int]] = {}
        self.quota_crossed: deque[QuotaCrossing] = deque(maxlen=_QUEUE_MAX)
        self._quota_flagged: dict[int, int] = {}

    def __repr__(self) -> str:
        return f"AlertSignals(hot={len(self.streaks)}, quota_crossed={len(self.quota_crossed)})"

    def quota_threshold(self, quota: int) -> int:
        """Requests of a day at which a quota of `quota` requests alerts: ceil(fraction * quota),
        at least 1."""
        return max(1, math.ceil(self.quota_fraction * quota - 1e-9))

    def count_allowed(
        self, bucket: str, key: ApiKey, limit: int, remaining: int, window_ms: int, now_ms: int
    ) -> None:
        """An allowed decision of key on bucket at now_ms (ms): limit requests per window_ms,
        remaining after it. Marks the bucket hot by burst or by this node's count in the
        window slot (see the module docstring)."""
        slot_end_ms = (now_ms // window_ms + 1) * window_ms
        seen = self.slots.get(bucket)
        count = seen[1] + 1 if seen is not None and seen[0] == slot_end_ms else 1
        self.slots[bucket] = (slot_end_ms, count)
        threshold = self.rate_bp * limit
        if (limit - remaining) * 10_000 >= threshold or count * 10_000 >= threshold:
            self.mark_hot(bucket, key, now_ms)

    def forget_slots(self, now_ms: int) -> None:
        """Drop the counts of window slots that ended before now_ms (ms); called off the
        request path by the monitor."""
        stale = [b for b, (slot_end_ms, _) in self.slots.items() if slot_end_ms <= now_ms]
        for bucket in stale:
            del self.slots[bucket]

    def mark_hot(self, bucket: str, key: ApiKey, now_ms: int) -> None:
        """A request of key on bucket used >= rate_fraction of its budget at now_ms (ms)."""
        second = now_ms // 1000
        streak = self.streaks.get(bucket)
        if streak is None or second > streak.last + 1:
            self.streaks[bucket] = Streak(second, key)
        else:
            streak.last = second

    def quota_used(self, key: ApiKey, used: int, quota: int, now_ms: int) -> None:
        """A request of key at now_ms (ms) was counted as the used-th of its UTC day."""
        day_ms = day_start_ms(now_ms)
        if used >= self.quota_threshold(quota) and self._quota_flagged.get(key.id) != day_ms:
            self._quota_flagged[key.id] = day_ms
            self.quota_crossed.append((key, used, quota, now_ms))
