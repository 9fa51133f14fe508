"""The rate-limiter port: one decision per request, GCRA semantics on every backend.

GCRA (generic cell rate algorithm) with a budget of `limit` requests per `window_ms`: requests are
spaced by an emission interval T = window_ms / limit, and a burst of up to `limit` is allowed when
the bucket is idle. It is a rolling window (no reset at fixed second boundaries) and needs one
stored value per bucket: the theoretical arrival time (TAT), so Redis answers in one round trip.
Source of the budgets: Bybit V5 "Rate Limit" page (per-UID, per-endpoint, rolling per second).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

__all__ = ["Decision", "Rate", "RateLimiter", "gcra", "gcra_update", "parse_rate"]

#: tolerance of the allow check, ms (see gcra_update()).
EPSILON_MS = 0.001
_RATE_TEXT = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*(ms|s|m|min)\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "min": 60_000}


@dataclass(frozen=True, slots=True)
class Rate:
    """A budget: limit requests (int > 0) per window_ms (int, ms > 0).

    interval_ms (float, ms) is the emission interval T = window_ms / limit, worked out once here
    because every decision needs it. Raises ValueError for a limit or window below 1.
    """

    limit: int
    window_ms: int = 1000
    interval_ms: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.limit < 1 or self.window_ms < 1:
            raise ValueError(f"a rate needs limit >= 1 and window_ms >= 1, got {self!r}")
        object.__setattr__(self, "interval_ms", self.window_ms / self.limit)


class Decision(NamedTuple):
    """The answer for one request (a tuple: built on every request, compared by value).

    allowed: bool. limit: int, the budget. remaining: int, requests still allowed right now.
    reset_at_ms: int, ms since epoch when the next request will be allowed (now when it already
    is; always in the future when not allowed) -> X-Bapi-Limit-Reset-Timestamp.
    """

    allowed: bool
    limit: int
    remaining: int
    reset_at_ms: int


class RateLimiter(Protocol):
    """One decision per request; backends share gcra() semantics."""

    async def hit(self, bucket: str, rate: Rate, now_ms: int) -> Decision:
        """Count one request against bucket (e.g. "key:42:/v5/order/create:spot") at now_ms."""
        ...

    async def ping(self) -> None:
        """Return when the backend answers; raise (e.g. redis ConnectionError) when it cannot."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def gcra(tat_ms: float | None, rate: Rate, now_ms: int) -> tuple[Decision, float | None]:
    """Pure GCRA step: (decision, new TAT or None when unchanged) for a stored TAT (or None).

    The arithmetic is gcra_update()'s, on a bucket holding tat_ms.
    """
    tats = {} if tat_ms is None else {"": tat_ms}
    decision = gcra_update(tats, "", rate, now_ms)
    return decision, tats[""] if decision.allowed else None


def gcra_update(tats: dict[str, float], bucket: str, rate: Rate, now_ms: int) -> Decision:
    """One GCRA step for bucket in tats (bucket -> TAT, float ms; a missing bucket is idle):
    stores the new TAT when allowed, and returns the decision. The in-memory limiter's step.

    Allowed when tat - tau <= now (+ EPSILON_MS), with tau = window - T (the burst tolerance).
    TATs are float ms near 1.7e12, where one ulp is ~2e-4 ms: the 1 µs tolerance and the 1e-6
    nudge before flooring keep a burst at exactly `limit` despite rounding. The Redis script
    (keyplane.ratelimit.redis) does the same arithmetic on the same IEEE doubles.
    """
    interval = rate.interval_ms
    tau = rate.window_ms - interval
    tat: float = tats.get(bucket, now_ms)
    if tat < now_ms:
        tat = float(now_ms)
    allow_at = tat - tau - EPSILON_MS
    if now_ms < allow_at:
        return Decision(False, rate.limit, 0, math.ceil(allow_at))
    tats[bucket] = tat + interval
    remaining = math.floor((tau - (tat - now_ms)) / interval + 1e-6)
    return Decision(True, rate.limit, max(0, min(rate.limit - 1, remaining)), now_ms)


def parse_rate(text: str) -> Rate:
    """Parse "600/5s", "10/s", "60/min" into a Rate; raises ValueError otherwise."""
    match = _RATE_TEXT.match(text)
    if not match or int(match.group(1)) <= 0:
        raise ValueError(f"rate must look like 600/5s or 10/s, got {text!r}")
    count = int(match.group(2) or 1)
    if count <= 0:
        raise ValueError(f"rate window must be positive, got {text!r}")
    return Rate(int(match.group(1)), count * _UNIT_MS[match.group(3)])
