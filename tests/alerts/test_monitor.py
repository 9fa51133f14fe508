"""The alert monitor and dispatcher on an in-memory store and a frozen clock: what becomes an
alert, that each goes out once per key per condition per window, and that store and notifier
failures are retried or counted, never raised."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from keyplane.alerts import (
    Alert,
    AlertDispatcher,
    AlertKind,
    AlertMonitor,
    AlertRecord,
    AlertSignals,
    DeliveryError,
    MemoryNotifier,
)
from keyplane.clock import FrozenClock
from keyplane.keys import DAY_MS, ApiKey, IpAllowlist, KeyEncryptionKey
from keyplane.ratelimit import MemoryRateLimiter, Rate
from keyplane.service import KeyService
from keyplane.store import MemoryStore

T0 = 1_700_000_000_000  # 22:13:20 UTC
BUCKET = "key:1:/v5/order/create:spot"


class FlakyStore(MemoryStore):
    down = False

    def record_alert(self, record: AlertRecord) -> bool:
        if self.down:
            raise ConnectionError("database unreachable")
        return super().record_alert(record)


class FailingNotifier:
    name = "webhook"

    async def send(self, alert: Alert) -> None:
        raise DeliveryError("HTTP 500")


class Setup:
    def __init__(self, **options: Any) -> None:
        self.clock = FrozenClock(T0)
        self.store = FlakyStore()
        self.service = KeyService(self.store, KeyEncryptionKey.generate(), self.clock)
        init = self.service.initialize()
        assert init is not None
        self.uid = init.account.uid
        self.master = init.issued.key
        self.memory = MemoryNotifier()
        self.dispatcher = AlertDispatcher([self.memory], store=self.store)
        self.signals = AlertSignals()
        self.monitor = AlertMonitor(
            self.store, self.dispatcher, self.signals, self.clock, **options
        )

    def key(self, ips: str = "*") -> ApiKey:
        return self.service.create_key(self.uid, ips=IpAllowlist.parse(ips)).key

    def run(self, step: str = "tick") -> list[Alert]:
        """One tick (or sweep) with deliveries awaited; returns everything sent so far."""

        async def go() -> None:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self.dispatcher.run)
                await anyio.sleep(0)
                await (self.monitor.tick() if step == "tick" else self.monitor.sweep_expiry())
                await anyio.sleep(0.01)
                tasks.cancel_scope.cancel()

        anyio.run(go)
        return self.memory.sent


class TestQuotaAlert:
    def test_crossing_alerts_once_per_day(self) -> None:
        """75 of 100: one quota.75 alert; later requests and ticks add none; tomorrow again."""
        s = Setup()
        key = s.key()
        day = T0 - T0 % DAY_MS
        assert s.signals.quota_threshold(100) == 75
        s.signals.quota_used(key, 74, 100, T0)
        assert s.run() == []
        for used in (75, 76, 99):
            s.signals.quota_used(key, used, 100, T0)
        [alert] = s.run()
        assert alert.kind is AlertKind.QUOTA_75
        assert alert.details["used"] == 75
        assert alert.id == f"{key.id}:quota.75:{day}"
        tomorrow = T0 + DAY_MS
        s.signals.quota_used(key, 80, 100, tomorrow)
        assert len(s.run()) == 2

    def test_small_quotas_round_up(self) -> None:
        """ceil(0.75 * q), at least 1: q=1 -> 1, q=2 -> 2, q=8 -> 6."""
        signals = AlertSignals()
        assert [signals.quota_threshold(q) for q in (1, 2, 4, 8, 100)] == [1, 2, 3, 6, 75]

    def test_another_node_already_recorded_it(self) -> None:
        """The store already holds today's quota.75 of the key: nothing sent, a duplicate."""
        s = Setup()
        key = s.key()
        s.signals.quota_used(key, 75, 100, T0)
        other = Setup()  # a second "node": its dispatcher records in the same store
        other.dispatcher.store = s.store
        other.signals.quota_used(key, 76, 100, T0)
        assert len(s.run()) == 1
        assert other.run() == []
        assert other.dispatcher.duplicates == {"quota.75": 1}

    def test_store_down_is_retried_and_sent_once(self) -> None:
        """record_alert fails: nothing sent; the next tick records and sends it once."""
        s = Setup()
        key = s.key()
        s.signals.quota_used(key, 75, 100, T0)
        s.store.down = True
        assert s.run() == []
        s.store.down = False
        assert len(s.run()) == 1
        assert len(s.run()) == 1


class TestRateAlert:
    def test_streak_reaching_the_sustain_alerts_once(self) -> None:
        """Hot in 3 consecutive seconds with a 3 s sustain: one rate.75 alert per day."""
        s = Setup(rate_sustain_s=3)
        key = s.key()
        for second in range(3):
            s.signals.mark_hot(BUCKET, key, T0 + second * 1000 + 500)
            s.clock.set(T0 + second * 1000 + 600)
            sent = s.run()
        [alert] = sent
        assert alert.kind is AlertKind.RATE_75
        assert alert.details["condition"] == "rate.75:/v5/order/create:spot"
        assert alert.details["path"] == "/v5/order/create"
        s.signals.mark_hot(BUCKET, key, T0 + 3500)
        s.clock.set(T0 + 3600)
        assert len(s.run()) == 1

    def test_a_cold_second_breaks_the_streak(self) -> None:
        """Hot, hot, (cold), hot, hot with a 3 s sustain: no alert."""
        s = Setup(rate_sustain_s=3)
        key = s.key()
        for second in (0, 1, 3, 4):
            s.signals.mark_hot(BUCKET, key, T0 + second * 1000)
            s.clock.set(T0 + second * 1000 + 100)
            assert s.run() == []
        s.clock.set(T0 + 6000)
        s.run()
        assert BUCKET not in s.signals.streaks  # forgotten once a second went by cold


class TestEvenlySpreadLoad:
    """rate.75 for a steady load: the in-memory GCRA limiter's real decisions, spaced evenly,
    handed to the signals as RequestLimits does; the frozen clock walks along."""

    def drive(self, per_second: int, seconds: int) -> tuple[Setup, list[Alert]]:
        s = Setup(rate_sustain_s=3)
        key = s.key()
        limiter, rate = MemoryRateLimiter(), Rate(5, 1000)  # 5 requests per second
        sent: list[Alert] = []
        for second in range(seconds):
            for i in range(per_second):
                at = T0 + second * 1000 + i * (1000 // per_second)
                decision = limiter.decide(BUCKET, rate, at)
                assert decision.allowed
                assert decision.remaining == 4  # never short of burst room: no burst signal
                s.signals.count_allowed(BUCKET, key, 5, decision.remaining, 1000, at)
            s.clock.set(T0 + second * 1000 + 999)
            sent = s.run()
        return s, sent

    def test_80_percent_evenly_spread_alerts(self) -> None:
        """4 requests a second, 250 ms apart, on a 5/s budget for 4 s (sustain 3 s): GCRA
        always has burst room left, yet the key runs at 80%: one rate.75 alert."""
        _, sent = self.drive(per_second=4, seconds=4)
        [alert] = sent
        assert alert.kind is AlertKind.RATE_75

    def test_60_percent_evenly_spread_stays_quiet(self) -> None:
        """3 a second on the same budget (60%): no alert, and the slot counts are forgotten."""
        s, sent = self.drive(per_second=3, seconds=6)
        assert sent == []
        s.clock.set(T0 + 10_000)
        s.run()
        assert s.signals.slots == {}


class TestExpiryAlert:
    def test_only_the_tightest_threshold_passed(self) -> None:
        """Swept first at 5 days left: expiry.7d only; at 10 h left: expiry.1d; never 14d."""
        s = Setup()
        key = s.key()
        s.clock.set(key.created_at_ms + 85 * DAY_MS)
        sent = s.run("sweep")
        mine = [a for a in sent if a.api_key == key.api_key]
        assert [a.details["condition"] for a in mine] == ["expiry.soon.7d"]
        s.clock.set(key.created_at_ms + 90 * DAY_MS - 10 * 3_600_000)
        s.run("sweep")
        sent = s.run("sweep")
        mine = [a for a in sent if a.api_key == key.api_key]
        assert [a.details["condition"] for a in mine] == ["expiry.soon.7d", "expiry.soon.1d"]

    def test_bound_revoked_expired_and_far_keys_do_not_alert(self) -> None:
        """Bound keys never expire; revoked and already expired keys and keys with more than
        14 days left get nothing."""
        s = Setup()
        s.key(ips="10.0.0.0/8")
        revoked = s.key()
        s.service.revoke_key(revoked.api_key)
        s.clock.set(T0 + 60 * DAY_MS)
        assert s.run("sweep") == []
        s.clock.set(T0 + 91 * DAY_MS)
        assert s.run("sweep") == []


class TestDispatcher:
    def test_failures_counted_by_notifier_and_kind(self) -> None:
        """A failing webhook is counted, the memory notifier still gets the alert."""
        s = Setup()
        s.dispatcher.notifiers.append(FailingNotifier())
        s.signals.quota_used(s.key(), 75, 100, T0)
        assert len(s.run()) == 1
        stats = s.dispatcher.stats()
        assert stats.sent == {("memory", "quota.75"): 1}
        assert stats.failed == {("webhook", "quota.75"): 1}
        assert stats.recorded == {"quota.75": 1}

    def test_alerts_sent_before_run_are_held(self) -> None:
        """send() before run() started: delivered once run() starts."""
        memory = MemoryNotifier()
        dispatcher = AlertDispatcher([memory])
        alert = Alert(id="a1", kind=AlertKind.ANOMALY, at_ms=T0, summary="x")
        dispatcher.send(alert)

        async def go() -> None:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(dispatcher.run)
                await anyio.sleep(0.01)
                tasks.cancel_scope.cancel()

        anyio.run(go)
        assert memory.sent == [alert]

    def test_record_without_store_is_a_bug(self) -> None:
        """record() needs the store that deduplicates."""
        with pytest.raises(RuntimeError):
            anyio.run(AlertDispatcher([]).record, _record())


def _record() -> AlertRecord:
    return AlertRecord(1, "AAA", 100001, AlertKind.QUOTA_75, "quota.75", 0, T0, "s")
