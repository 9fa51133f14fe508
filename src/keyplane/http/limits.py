"""Rate limits on the request path: the per-IP flood guard and per-key route budgets.

Per key (Bybit V5 "Rate Limit"): every authenticated request is counted against
(key id, path, category) with the route's budget; over it, retCode 10006 with HTTP 200 and the
reset time in X-Bapi-Limit-Reset-Timestamp, which pybit sleeps until before retrying.
Per IP: 600 requests / 5 s by default, HTTP 403 and a ban (Bybit answers floods with 403).
When the limiter backend fails (Redis down), the decision is explicit and counted: by default
reads pass (fail open) and writes get retCode 10016 (fail closed).

Daily quota (keyplane.quota): a key with `daily_quota` N has its authenticated requests counted
per UTC day after its rate-limit check passed; request N + 1 gets retCode 10006 (HTTP 200) with
X-Bapi-Limit = N, X-Bapi-Limit-Status = 0 and X-Bapi-Limit-Reset-Timestamp = next 00:00 UTC (ms).
Refused requests are never counted. A key without a quota costs one attribute check. A quota
backend failure follows the same fail-open-reads / fail-closed-writes policy, counted in
quota_decisions. With alert signals, near-limit requests are marked for the alert monitor
(keyplane.alerts.signals): one integer compare per request with a budget.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import structlog

from keyplane.alerts.signals import AlertSignals
from keyplane.auth.context import AuthContext
from keyplane.errors import KeyplaneError, RateLimitedError
from keyplane.http.errors import IpRateLimitedError
from keyplane.keys.limits import RateOverrides
from keyplane.policy import RoutePolicy
from keyplane.quota import DailyQuotaExceededError, QuotaCounter, QuotaDecision
from keyplane.ratelimit import Decision, MemoryRateLimiter, Rate, RateLimiter

__all__ = [
    "DEFAULT_IP_RATE",
    "MIN_RESET_AHEAD_MS",
    "RequestLimits",
    "backend_failed",
    "limit_headers",
]

log = structlog.get_logger("keyplane.ratelimit")

#: rule: Bybit V5 "Rate Limit", IP limit 600 requests per 5 s, answered with HTTP 403.
DEFAULT_IP_RATE = Rate(600, 5000)
#: a refused request's X-Bapi-Limit-Reset-Timestamp is at least this far (ms) after the
#: decision. The limiter's own reset can be 1 ms away; a client reads the header later, on its
#: own clock, and pybit sleeps (reset - its now), raising on a negative time. A margin as wide
#: as the accepted clock skew (a timestamp may run 1000 ms ahead) keeps every client that
#: passes the timestamp check from seeing a reset in its past; Bybit's per-second windows
#: likewise reset within the next second. Early retries are still allowed when budget returns.
MIN_RESET_AHEAD_MS = 1000
#: most (key, route, category) budgets remembered before the memo starts over.
_MAX_MEMO_BUDGETS = 100_000

_MemoBudget = tuple[RateOverrides, RateOverrides, RoutePolicy, tuple[str, Rate] | None]


def limit_headers(decision: Decision) -> list[tuple[bytes, bytes]]:
    """X-Bapi-Limit, X-Bapi-Limit-Status (remaining), X-Bapi-Limit-Reset-Timestamp (ms)."""
    return [
        (b"x-bapi-limit", str(decision.limit).encode()),
        (b"x-bapi-limit-status", str(decision.remaining).encode()),
        (b"x-bapi-limit-reset-timestamp", str(decision.reset_at_ms).encode()),
    ]


@dataclass
class RequestLimits:
    """Applies the IP guard and key budgets with one limiter backend.

    ip_rate: Rate or None (off). ip_ban_ms: int, ms an IP stays refused after tripping it.
    fail_open_reads / fail_open_writes: what to do when the backend raises.
    decisions: Counter of outcomes, for metrics ("allowed", "limited", "failed_open", ...).
    quota: the daily-quota counter, None when quotas are not enforced. quota_decisions: Counter
    of quota outcomes ("allowed", "refused", "failed_open", "failed_closed").
    signals: where near-limit requests are marked for the alert monitor (None: no rate/quota
    alerts).
    """

    limiter: RateLimiter
    ip_rate: Rate | None = DEFAULT_IP_RATE
    ip_ban_ms: int = 0
    fail_open_reads: bool = True
    fail_open_writes: bool = False
    quota: QuotaCounter | None = None
    signals: AlertSignals | None = None

    def __post_init__(self) -> None:
        self.decisions: Counter[str] = Counter()
        self.quota_decisions: Counter[str] = Counter()
        self._banned_until: dict[str, int] = {}
        # (key id, route path, category) -> what _budget() answered, and the overrides and route
        # it answered for (see _key_budget)
        self._budgets: dict[tuple[int, str, str | None], _MemoBudget] = {}
        # the in-process limiter decides synchronously and cannot fail: skip the coroutine
        limiter = self.limiter
        self._decide_now = limiter.decide if isinstance(limiter, MemoryRateLimiter) else None
        #: True when key budgets are decided in this process (check_key_now may be used)
        self.in_process = self._decide_now is not None

    async def check_ip(self, client_ip: str, now_ms: int) -> None:
        """Raise IpRateLimitedError (HTTP 403) for a flooding or banned IP."""
        if self.ip_rate is None:
            return
        self._check_ban(client_ip, self.ip_rate.limit, now_ms)
        decision = await self._hit(f"ip:{client_ip}", self.ip_rate, now_ms, write=False)
        self._count_ip(client_ip, decision, now_ms)

    def check_ip_now(self, client_ip: str, now_ms: int) -> None:
        """check_ip() without a coroutine, for the in-process limiter only (see in_process):
        the request path's common case. Same result and errors as check_ip()."""
        assert self._decide_now is not None, "check_ip_now needs the in-process limiter"
        if self.ip_rate is None:
            return
        self._check_ban(client_ip, self.ip_rate.limit, now_ms)
        bucket = f"ip:{client_ip}"
        self._count_ip(client_ip, self._decide_now(bucket, self.ip_rate, now_ms), now_ms)

    def _check_ban(self, client_ip: str, limit: int, now_ms: int) -> None:
        """Raise IpRateLimitedError (X-Bapi-Limit = limit, the IP budget) while client_ip is
        banned; forget a ban that ended."""
        banned_until = self._banned_until.get(client_ip)
        if banned_until is not None:
            if now_ms < banned_until:
                self.decisions["ip_banned"] += 1
                raise IpRateLimitedError(reset_at_ms=banned_until, limit=limit)
            del self._banned_until[client_ip]

    def _count_ip(self, client_ip: str, decision: Decision | None, now_ms: int) -> None:
        """Raise IpRateLimitedError (and start the ban, if any) when decision refused."""
        if decision is not None and not decision.allowed:
            until = max(decision.reset_at_ms, now_ms + self.ip_ban_ms)
            if self.ip_ban_ms:
                self._banned_until[client_ip] = until
            self.decisions["ip_limited"] += 1
            raise IpRateLimitedError(reset_at_ms=until, limit=decision.limit)

    async def check_key(
        self, caller: AuthContext, policy: RoutePolicy, category: str | None, now_ms: int
    ) -> Decision | None:
        """Count the request against the key's route budget.

        The budget is the route's default (keyplane.policy), replaced by the key's override for
        the route, else the account's. Returns the decision (for the headers), None when the
        route has no budget or the backend failed open. Raises RateLimitedError (10006) over
        budget, KeyplaneError (10016) when the backend failed and the route fails closed.
        """
        budget = self._key_budget(caller, policy, category)
        if budget is None:
            return None
        bucket, rate = budget
        decision = await self._hit(bucket, rate, now_ms, write=policy.write)
        return self._counted(decision, now_ms, bucket, rate.window_ms, caller)

    def check_key_now(
        self, caller: AuthContext, policy: RoutePolicy, category: str | None, now_ms: int
    ) -> Decision | None:
        """check_key() without a coroutine, for the in-process limiter only (see in_process):
        the request path's common case. Same result and errors as check_key()."""
        assert self._decide_now is not None, "check_key_now needs the in-process limiter"
        budget = self._key_budget(caller, policy, category)
        if budget is None:
            return None
        bucket, rate = budget
        return self._counted(
            self._decide_now(bucket, rate, now_ms), now_ms, bucket, rate.window_ms, caller
        )

    async def check_quota(
        self, caller: AuthContext, policy: RoutePolicy, now_ms: int
    ) -> QuotaDecision | None:
        """Count the request against the key's daily quota (call only when
        caller.key.daily_quota is not None, after check_key passed).

        Returns the decision, None when quotas are off or the backend failed open. Raises
        DailyQuotaExceededError (10006, limit = quota, reset_at_ms = next 00:00 UTC) when the
        day's quota is spent, KeyplaneError (10016) when the backend failed and the route fails
        closed (fail_open_reads / fail_open_writes, as for rate limits).
        """
        quota = caller.key.daily_quota
        counter = self.quota
        if counter is None or quota is None or quota < 1:
            return None
        try:
            decision = await counter.hit(caller.key.api_key, quota, now_ms)
        except Exception as exc:  # backend down: the configured, counted choice
            self._backend_failed(exc, policy.write, self.quota_decisions, "quota counter")
            return None
        if not decision.allowed:
            self.quota_decisions["refused"] += 1
            raise DailyQuotaExceededError(reset_at_ms=decision.reset_at_ms, limit=quota)
        self.quota_decisions["allowed"] += 1
        if self.signals is not None:
            self.signals.quota_used(caller.key, decision.used, quota, now_ms)
        return decision

    def _counted(
        self,
        decision: Decision | None,
        now_ms: int,
        bucket: str,
        window_ms: int,
        caller: AuthContext,
    ) -> Decision | None:
        """Count the decision; raise RateLimitedError when refused; hand an allowed one to the
        alert signals (rate.75: a burst, or this node's count in the window slot)."""
        if decision is None:
            return None
        if not decision.allowed:
            self.decisions["limited"] += 1
            reset = max(decision.reset_at_ms, now_ms + MIN_RESET_AHEAD_MS)
            raise RateLimitedError(reset_at_ms=reset, limit=decision.limit)
        self.decisions["allowed"] += 1
        if self.signals is not None:
            self.signals.count_allowed(
                bucket, caller.key, decision.limit, decision.remaining, window_ms, now_ms
            )
        return decision

    def _key_budget(
        self, caller: AuthContext, policy: RoutePolicy, category: str | None
    ) -> tuple[str, Rate] | None:
        """_budget(), remembered per (key, route, category) for as long as the key's and its
        account's overrides are the same objects: a key or account change reloads the key
        (keyplane.auth.cache), which brings new override objects and so a fresh answer."""
        memo_key = (caller.key.id, policy.path, category)
        key_limits, account_limits = caller.key.rate_limits, caller.account.rate_limits
        memo = self._budgets.get(memo_key)
        if (
            memo is not None
            and memo[0] is key_limits
            and memo[1] is account_limits
            and memo[2] is policy
        ):
            return memo[3]
        budget = _budget(caller, policy, category)
        if len(self._budgets) >= _MAX_MEMO_BUDGETS:  # categories are caller-chosen text
            self._budgets.clear()
        self._budgets[memo_key] = (key_limits, account_limits, policy, budget)
        return budget

    async def _hit(self, bucket: str, rate: Rate, now_ms: int, *, write: bool) -> Decision | None:
        if self._decide_now is not None:
            return self._decide_now(bucket, rate, now_ms)
        try:
            return await self.limiter.hit(bucket, rate, now_ms)
        except Exception as exc:  # backend down: the configured, counted choice
            self._backend_failed(exc, write, self.decisions, "rate limiter")
            return None

    def _backend_failed(
        self, exc: Exception, write: bool, outcomes: Counter[str], what: str
    ) -> None:
        backend_failed(
            exc,
            fail_open=self.fail_open_writes if write else self.fail_open_reads,
            outcomes=outcomes,
            what=what,
        )


def backend_failed(exc: Exception, *, fail_open: bool, outcomes: Counter[str], what: str) -> None:
    """Carry out the fail policy for a backend that could not decide (Redis down, a full
    in-memory store): count "failed_open" or "failed_closed" in outcomes, log "<what>
    unavailable" with the error's type (never its text), then return (fail open: the request
    goes on without this check) or raise KeyplaneError 10016 "Server error: <what>
    unavailable." (fail closed), from exc. Shared by the rate limiter, the daily quota and the
    replay guard; by default reads fail open and writes fail closed
    (settings.ratelimit_fail_open_reads / _writes).
    """
    outcome = "failed_open" if fail_open else "failed_closed"
    outcomes[outcome] += 1
    log.warning(f"{what} unavailable", outcome=outcome, error=type(exc).__name__)
    if not fail_open:
        raise KeyplaneError(f"Server error: {what} unavailable.") from exc


def _budget(
    caller: AuthContext, policy: RoutePolicy, category: str | None
) -> tuple[str, Rate] | None:
    """(bucket, rate) of this request: the route's default budget with the key's override, else
    the account's; None when the route has no budget."""
    rate = policy.rate_for(category)
    if rate is None:
        return None
    override = caller.key.rate_limits.lookup(policy.path, category)
    if override is None:
        override = caller.account.rate_limits.lookup(policy.path, category)
    if override is not None:
        rate = Rate(override, rate.window_ms)
    return f"key:{caller.key.id}:{policy.path}:{category or ''}", rate
