"""Rate limiting: GCRA budgets per key and route, in memory or in Redis."""

from keyplane.ratelimit.memory import MemoryRateLimiter
from keyplane.ratelimit.protocol import Decision, Rate, RateLimiter, gcra, parse_rate
from keyplane.ratelimit.redis import RedisRateLimiter

__all__ = [
    "Decision",
    "MemoryRateLimiter",
    "Rate",
    "RateLimiter",
    "RedisRateLimiter",
    "gcra",
    "parse_rate",
]
