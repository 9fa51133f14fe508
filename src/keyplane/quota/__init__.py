"""Daily request quotas: a counter per key per UTC day, in memory or in Redis.

A key with `daily_quota` N gets N authenticated requests per calendar day in UTC (the count
resets at 00:00 UTC, like Kong's and Stripe's day quotas); request N + 1 is refused with
retCode 10006 until then (keyplane.http.limits).
"""

from keyplane.quota.memory import MemoryQuotaCounter, UsageSeed
from keyplane.quota.protocol import (
    DailyQuotaExceededError,
    QuotaCounter,
    QuotaDecision,
    day_start_ms,
    next_day_ms,
)
from keyplane.quota.redis import RedisQuotaCounter

__all__ = [
    "DailyQuotaExceededError",
    "MemoryQuotaCounter",
    "QuotaCounter",
    "QuotaDecision",
    "RedisQuotaCounter",
    "UsageSeed",
    "day_start_ms",
    "next_day_ms",
]
