"""The alert monitor: turns near-limit signals and key expiry into alerts, off the request path.

Runs in the app's lifespan (keyplane.http.app); every tick_ms it reads keyplane.alerts.signals
and every sweep_interval_s (and at start) it sweeps the keys for expiry:

    quota.75     a key's count for the UTC day reached ceil(fraction * daily_quota);
                 window = that day's 00:00 UTC (ms).
    rate.75      a (key, route) bucket used >= fraction of its rate budget in each of
                 rate_sustain_s consecutive UTC seconds; condition "rate.75:<path>:<category>",
                 window = the UTC day (ms) the streak reached the sustain length in.
    expiry.<N>d  an active unbound key (expires_at_ms set) has at most N days left, for N in
                 expiry_days (default 14, 7, 1; Bybit's 90-day rule for keys without IPs);
                 only the tightest threshold passed is sent (a key first seen with 5 days left
                 gets expiry.7d, never expiry.14d); window = the key's expires_at_ms, so
                 re-saving the key without IPs (a new 90 days) arms the alerts again.

Each becomes an AlertRecord given to AlertDispatcher.record: the store keeps one row per (key,
condition, window) and only the node that stored it sends, so one alert goes out per key per
condition per window across nodes and restarts. A store error leaves the record pending for the
next tick. Conditions already settled are remembered locally, so steady state costs no
database round trip.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import anyio
import structlog

from keyplane.alerts.dispatch import AlertDispatcher
from keyplane.alerts.model import AlertKind, AlertRecord
from keyplane.alerts.signals import AlertSignals
from keyplane.clock import Clock
from keyplane.keys.model import DAY_MS, ApiKey, KeyStatus, iso_utc
from keyplane.quota.protocol import day_start_ms, next_day_ms

if TYPE_CHECKING:
    from keyplane.store.protocol import Store

__all__ = ["DEFAULT_EXPIRY_DAYS", "AlertMonitor"]

log = structlog.get_logger("keyplane.alerts")

#: rule: issue 5, "alerts for unbound keys 14, 7 and 1 days before their 90-day expiry".
DEFAULT_EXPIRY_DAYS = (14, 7, 1)
_KEY_PAGE = 1000

_Unique = tuple[int, str, int]


class AlertMonitor:
    """Quota, rate and expiry alerts (see the module docstring).

    store: keys are listed from it (worker thread). dispatcher: records and sends. signals:
    what RequestLimits marked (None: only expiry alerts). clock: the app's clock (ms).
    rate_sustain_s: int seconds. expiry_days: thresholds in days. sweep_interval_s: float
    seconds between expiry sweeps (monotonic time). tick_ms: int ms between signal reads.
    """

    def __init__(
        self,
        store: Store,
        dispatcher: AlertDispatcher,
        signals: AlertSignals | None,
        clock: Clock,
        *,
        rate_sustain_s: int = 60,
        expiry_days: Sequence[int] = DEFAULT_EXPIRY_DAYS,
        sweep_interval_s: float = 600.0,
        tick_ms: int = 250,
    ) -> None:
        if rate_sustain_s < 1 or any(d < 1 for d in expiry_days):
            raise ValueError("rate_sustain_s and expiry days must be >= 1")
        self.store = store
        self.dispatcher = dispatcher
        self.signals = signals
        self.clock = clock
        self.rate_sustain_s = rate_sustain_s
        self.expiry_days = tuple(sorted(set(expiry_days)))
        self.sweep_interval_s = sweep_interval_s
        self.tick_ms = tick_ms
        self._settled: set[_Unique] = set()
        self._pending: dict[_Unique, AlertRecord] = {}

    def __repr__(self) -> str:
        return f"AlertMonitor(expiry_days={self.expiry_days}, pending={len(self._pending)})"

    async def run(self) -> None:
        """Sweep at start, then read signals every tick_ms and sweep every sweep_interval_s;
        runs until cancelled, logging (never raising) failures."""
        next_sweep = 0.0
        while True:
            if time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + self.sweep_interval_s
                try:
                    await self.sweep_expiry()
                except Exception:
                    log.warning("expiry sweep failed; retrying next sweep", exc_info=True)
            try:
                await self.tick()
            except Exception:
                log.exception("alert monitor tick failed")
            await anyio.sleep(self.tick_ms / 1000)

    async def tick(self) -> int:
        """Turn queued quota crossings and sustained hot buckets into records, then record
        every pending one; returns the alerts this node sent."""
        now_ms = self.clock.now_ms()
        signals = self.signals
        if signals is not None:
            while signals.quota_crossed:
                key, used, quota, at_ms = signals.quota_crossed.popleft()
                self._add(self._quota_record(key, used, quota, at_ms, signals))
            self._read_streaks(signals, now_ms)
            signals.forget_slots(now_ms)
        return await self._flush()

    async def sweep_expiry(self) -> int:
        """Check every active unbound key for the expiry thresholds; returns alerts sent."""
        now_ms = self.clock.now_ms()
        keys = await anyio.to_thread.run_sync(self._expiring_keys)
        for key in keys:
            record = self._expiry_record(key, now_ms)
            if record is not None:
                self._add(record)
        today = day_start_ms(now_ms)  # forget settled windows that can never come back
        self._settled = {u for u in self._settled if u[2] >= today}
        return await self._flush()

    def _expiring_keys(self) -> list[ApiKey]:
        found: list[ApiKey] = []
        after = 0
        while True:
            page = self.store.list_keys(include_revoked=False, after_id=after, limit=_KEY_PAGE)
            found.extend(
                k for k in page if k.status is KeyStatus.ACTIVE and k.expires_at_ms is not None
            )
            if len(page) < _KEY_PAGE:
                return found
            after = page[-1].id

    def _add(self, record: AlertRecord) -> None:
        unique = (record.key_id, record.condition, record.window_ms)
        if unique not in self._settled and unique not in self._pending:
            self._pending[unique] = record

    async def _flush(self) -> int:
        sent = 0
        for unique, record in list(self._pending.items()):
            try:
                sent += await self.dispatcher.record(record)
            except Exception as exc:
                log.warning(
                    "alert not recorded yet; retrying",
                    condition=record.condition,
                    api_key=record.api_key,
                    error=type(exc).__name__,
                )
                return sent
            del self._pending[unique]
            self._settled.add(unique)
        return sent

    def _read_streaks(self, signals: AlertSignals, now_ms: int) -> None:
        second = now_ms // 1000
        for bucket, streak in list(signals.streaks.items()):
            if streak.last < second - 1:  # a second went by below the threshold
                del signals.streaks[bucket]
            elif streak.seconds >= self.rate_sustain_s:
                self._add(self._rate_record(bucket, streak.key, streak.last * 1000, signals))

    def _quota_record(
        self, key: ApiKey, used: int, quota: int, at_ms: int, signals: AlertSignals
    ) -> AlertRecord:
        threshold = signals.quota_threshold(quota)
        percent = round(100 * used / quota)
        return AlertRecord(
            key_id=key.id,
            api_key=key.api_key,
            uid=key.uid,
            kind=AlertKind.QUOTA_75,
            condition=AlertKind.QUOTA_75.value,
            window_ms=day_start_ms(at_ms),
            at_ms=at_ms,
            summary=f"key {key.api_key} used {used} of its {quota} daily requests ({percent}%)",
            details={
                "used": used,
                "quota": quota,
                "threshold": threshold,
                "resetAtMs": next_day_ms(at_ms),
            },
        )

    def _rate_record(
        self, bucket: str, key: ApiKey, at_ms: int, signals: AlertSignals
    ) -> AlertRecord:
        route = bucket.split(":", 2)[2] if bucket.count(":") >= 2 else bucket
        path, _, category = route.rpartition(":")
        percent = signals.rate_bp / 100
        return AlertRecord(
            key_id=key.id,
            api_key=key.api_key,
            uid=key.uid,
            kind=AlertKind.RATE_75,
            condition=f"{AlertKind.RATE_75.value}:{route}"[:128],
            window_ms=day_start_ms(at_ms),
            at_ms=at_ms,
            summary=(
                f"key {key.api_key} ran at >= {percent:g}% of its rate limit on {path}"
                f"{f' ({category})' if category else ''} for {self.rate_sustain_s} s"
            ),
            details={
                "path": path,
                "category": category or None,
                "sustainSeconds": self.rate_sustain_s,
                "fraction": signals.rate_bp / 10_000,
            },
        )

    def _expiry_record(self, key: ApiKey, now_ms: int) -> AlertRecord | None:
        expires = key.expires_at_ms
        if expires is None or expires <= now_ms:
            return None
        passed = [d for d in self.expiry_days if expires - now_ms <= d * DAY_MS]
        if not passed:
            return None
        days = passed[0]  # the tightest threshold passed (sorted ascending)
        return AlertRecord(
            key_id=key.id,
            api_key=key.api_key,
            uid=key.uid,
            kind=AlertKind.EXPIRY_SOON,
            condition=f"{AlertKind.EXPIRY_SOON.value}.{days}d",
            window_ms=expires,
            at_ms=now_ms,
            summary=(
                f"key {key.api_key} expires in {key.deadline_days(now_ms)} days "
                f"({iso_utc(expires)}): bind it to IPs or save it again"
            ),
            details={
                "thresholdDays": days,
                "daysLeft": key.deadline_days(now_ms),
                "expiresAt": iso_utc(expires),
            },
        )
