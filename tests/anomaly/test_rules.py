"""Anomaly rules on synthetic usage streams: what trips them and, as important, what does not."""

from __future__ import annotations

import random

import pytest

from keyplane.anomaly import (
    AnomalyDetector,
    FailedSignatureBurst,
    NewNetwork,
    RateSpike,
    Response,
    SensitiveCallFromNewNetwork,
    default_rules,
    network_of,
)
from keyplane.usage import UsageEvent

T0 = 1_700_000_000_000
HOUR = 3_600_000


def event(
    at_ms: int,
    *,
    ip: str = "10.0.0.1",
    path: str = "/v5/order/create",
    ret_code: int = 0,
    api_key: str = "KEYAAAAAAAAAAAAAAA",
    key_id: int | None = 1,
    authenticated: bool | None = None,
) -> UsageEvent:
    return UsageEvent(
        at_ms=at_ms,
        api_key=api_key,
        key_id=key_id,
        uid=100001 if key_id else None,
        method="POST",
        path=path,
        http_status=200,
        ret_code=ret_code,
        request_bytes=80,
        response_bytes=200,
        latency_us=900,
        client_ip=ip,
        authenticated=ret_code not in (10002, 10003, 10004)
        if authenticated is None
        else authenticated,
    )


def steady(
    rule: RateSpike,
    per_second: float,
    seconds: int,
    start: int,
    *,
    jitter: float = 0.0,
    seed: int = 1,
) -> list[object]:
    """Feed a bot sending about per_second requests a second; returns the flags raised."""
    rnd = random.Random(seed)
    flags = []
    for second in range(seconds):
        n = max(0, round(per_second * (1 + rnd.uniform(-jitter, jitter))))
        for i in range(n):
            flag = rule.observe(event(start + second * 1000 + i * 1000 // max(n, 1)))
            if flag:
                flags.append(flag)
    return flags


class TestRateSpike:
    def test_steady_heavy_bot_never_trips(self) -> None:
        rule = RateSpike()
        assert steady(rule, 200, 900, T0, jitter=0.3) == []

    def test_ten_fold_jump_trips_once_per_window(self) -> None:
        rule = RateSpike()
        assert steady(rule, 20, 600, T0, jitter=0.2) == []
        flags = steady(rule, 200, 10, T0 + 600_000)
        assert len(flags) == 1
        assert flags[0].rule == "rate_spike"
        assert flags[0].response is Response.ALERT
        assert flags[0].details["baseline"] < 250
        assert flags[0].details["count"] > 250

    def test_a_new_key_has_no_baseline_yet(self) -> None:
        assert steady(RateSpike(), 500, 60, T0) == []

    def test_refused_requests_do_not_count(self) -> None:
        rule = RateSpike(min_windows=1, min_count=5)
        for i in range(1000):
            assert rule.observe(event(T0 + i, ret_code=10004)) is None


class TestNewNetwork:
    def stable(self, rule: NewNetwork) -> int:
        """100+ requests over 2 hours from 10.0.0.0/24; returns the time after them."""
        for i in range(120):
            assert rule.observe(event(T0 + i * HOUR // 60, ip=f"10.0.0.{i % 50 + 1}")) is None
        return T0 + 2 * HOUR + 1

    def test_stable_key_from_a_new_network_is_flagged_once(self) -> None:
        rule = NewNetwork()
        now = self.stable(rule)
        assert rule.observe(event(now, ip="10.0.0.200")) is None  # same /24
        flag = rule.observe(event(now + 1, ip="198.51.100.7"))
        assert flag is not None
        assert flag.details["network"] == "198.51.100.0/24"
        assert rule.observe(event(now + 2, ip="198.51.100.8")) is None

    def test_young_or_quiet_keys_are_not_flagged(self) -> None:
        rule = NewNetwork()
        for i in range(500):  # many requests, but within minutes
            assert rule.observe(event(T0 + i * 100, ip=f"10.{i % 200}.0.1")) is None

    def test_failed_requests_do_not_teach_networks(self) -> None:
        rule = NewNetwork()
        now = self.stable(rule)
        assert rule.observe(event(now, ip="198.51.100.7", ret_code=10004)) is None
        assert rule.observe(event(now + 1, ip="198.51.100.7")) is not None

    def test_ipv6_networks_are_48s(self) -> None:
        assert network_of("2001:db8:1234:5678::1") == "2001:db8:1234::/48"
        assert network_of("203.0.113.99") == "203.0.113.0/24"
        assert network_of("not an ip") is None


class TestSensitiveCallFromNewNetwork:
    WITHDRAW = "/v5/asset/withdraw/create"

    def test_withdraw_from_a_new_network_suspends(self) -> None:
        rule = SensitiveCallFromNewNetwork()
        assert rule.observe(event(T0, ip="10.0.0.1")) is None
        assert rule.observe(event(T0 + 1, ip="10.0.0.9", path=self.WITHDRAW)) is None
        flag = rule.observe(event(T0 + 2, ip="203.0.113.9", path=self.WITHDRAW))
        assert flag is not None
        assert flag.response is Response.SUSPEND
        assert flag.details == {"network": "203.0.113.0/24", "path": self.WITHDRAW}

    def test_transfer_counts_too_and_trading_does_not(self) -> None:
        rule = SensitiveCallFromNewNetwork()
        rule.observe(event(T0, ip="10.0.0.1"))
        assert rule.observe(event(T0 + 1, ip="192.0.2.1")) is None  # an order: not sensitive
        transfer = "/v5/asset/transfer/inter-transfer"
        assert rule.observe(event(T0 + 2, ip="198.51.100.1", path=transfer)) is not None

    def test_first_ever_request_has_no_history_to_compare(self) -> None:
        rule = SensitiveCallFromNewNetwork()
        assert rule.observe(event(T0, ip="203.0.113.9", path=self.WITHDRAW)) is None

    def test_unauthenticated_withdraw_is_not_this_rule(self) -> None:
        rule = SensitiveCallFromNewNetwork()
        rule.observe(event(T0))
        assert (
            rule.observe(event(T0 + 1, ip="203.0.113.9", path=self.WITHDRAW, ret_code=10004))
            is None
        )


class TestFailedSignatureBurst:
    def test_twenty_failures_in_a_minute_flag_a_possible_leak(self) -> None:
        rule = FailedSignatureBurst()
        flags = [
            rule.observe(event(T0 + i * 1000, ret_code=10004, ip="198.51.100.4")) for i in range(25)
        ]
        tripped = [f for f in flags if f is not None]
        assert len(tripped) == 1
        assert flags[19] is tripped[0]
        assert "may have leaked" in tripped[0].reason
        assert tripped[0].details["client_ip"] == "198.51.100.4"

    def test_other_nodes_failures_complete_a_burst_without_a_new_one_here(self) -> None:
        """12 failures here, 8 logged by other nodes (elsewhere): the re-check trips the rule
        once, with no further failure on this node; keys out of the window are forgotten."""
        rule = FailedSignatureBurst()
        assert all(rule.observe(event(T0 + i, ret_code=10004)) is None for i in range(12))
        assert rule.waiting(T0 + 20) == ["KEYAAAAAAAAAAAAAAA"]
        assert rule.recheck(T0 + 20) == []
        rule.elsewhere["KEYAAAAAAAAAAAAAAA"] = 8
        [flag] = rule.recheck(T0 + 30)
        assert flag.details["failures"] == 20
        assert rule.recheck(T0 + 40) == []  # once per window
        assert rule.waiting(T0 + 70_000) == []

    def test_stale_timestamps_count_and_it_rearms_after_the_window(self) -> None:
        rule = FailedSignatureBurst(threshold=3, window_ms=10_000)
        codes = [10002, 10004, 10002]
        assert [
            rule.observe(event(T0 + i, ret_code=c)) is not None for i, c in enumerate(codes)
        ] == [False, False, True]
        later = T0 + 20_000
        assert [rule.observe(event(later + i, ret_code=10004)) is not None for i in range(3)] == [
            False,
            False,
            True,
        ]

    def test_slow_failures_and_unknown_keys_do_not_trip(self) -> None:
        rule = FailedSignatureBurst()
        assert all(rule.observe(event(T0 + i * 4000, ret_code=10004)) is None for i in range(60))
        unknown = FailedSignatureBurst(threshold=2)
        assert all(
            unknown.observe(event(T0 + i, ret_code=10004, key_id=None)) is None for i in range(10)
        )


class TestDetector:
    def test_responses_are_configurable_per_rule(self) -> None:
        rules = default_rules({"new_network": Response.SUSPEND})
        assert {r.name: r.response for r in rules} == {
            "rate_spike": Response.ALERT,
            "new_network": Response.SUSPEND,
            "sensitive_call_new_network": Response.SUSPEND,
            "failed_signature_burst": Response.ALERT,
        }
        with pytest.raises(ValueError, match="unknown anomaly rule"):
            default_rules({"nope": Response.ALERT})

    def test_flags_are_counted_and_sorted_by_severity(self) -> None:
        detector = AnomalyDetector()
        first = event(T0)
        assert detector.observe(first) == []
        flags = detector.observe(
            first._replace(at_ms=T0 + 1, client_ip="203.0.113.9", path="/v5/asset/withdraw/create")
        )
        assert [f.rule for f in flags] == ["sensitive_call_new_network"]
        assert detector.flags == {("sensitive_call_new_network", "suspend"): 1}
