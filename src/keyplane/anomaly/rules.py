"""Anomaly rules over the usage stream, per key. Pure: state in memory, time from the events.

Each rule sees every UsageEvent of the node and may return a Flag. The response to a flag
(record, alert, suspend) is configured per rule; the defaults follow DESIGN.md §5: rate
anomalies and failed-signature bursts alert, Withdraw or transfer calls from a network the key
has not used before suspend; honest heavy traffic must not trip anything.

Networks are IPv4 /24 and IPv6 /48 (what one site or provider allocation usually spans).
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from keyplane.anomaly.history import NetworkHistory, network_of
from keyplane.usage.model import UsageEvent

__all__ = [
    "SENSITIVE_PATHS",
    "FailedSignatureBurst",
    "Flag",
    "NewNetwork",
    "RateSpike",
    "Response",
    "Rule",
    "SensitiveCallFromNewNetwork",
    "network_of",
]

#: Withdraw and transfer routes (Bybit V5 asset API): money leaves or moves.
SENSITIVE_PATHS = frozenset(
    {
        "/v5/asset/withdraw/create",
        "/v5/asset/transfer/inter-transfer",
        "/v5/asset/transfer/universal-transfer",
    }
)


class Response(enum.StrEnum):
    """What a flag leads to, in increasing severity."""

    RECORD = "record"  # audit event only
    ALERT = "alert"  # audit event and an alert to the notifiers
    SUSPEND = "suspend"  # audit event, alert, and the key is suspended (retCode 10007)


@dataclass(frozen=True)
class Flag:
    """A rule's finding about one key: rule name, response, when (ms), which key, why."""

    rule: str
    response: Response
    at_ms: int
    api_key: str
    key_id: int | None
    uid: int | None
    reason: str
    details: dict[str, Any] = field(default_factory=dict)


class Rule(Protocol):
    """name: stable identifier (metrics label, settings key); response: configured severity."""

    name: str
    response: Response

    def observe(self, event: UsageEvent) -> Flag | None:
        """Update state with event; a Flag when it trips the rule."""
        ...


def _flag(rule: Rule, event: UsageEvent, reason: str, **details: Any) -> Flag:
    return Flag(
        rule.name,
        rule.response,
        event.at_ms,
        event.api_key,
        event.key_id,
        event.uid,
        reason,
        details,
    )


@dataclass
class _Rate:
    window_start: int = 0
    count: int = 0
    mean: float = 0.0
    var: float = 0.0
    windows: int = 0
    flagged_window: int = -1


class RateSpike:
    """A key's request rate far above its own baseline (EWMA z-score).

    Counts authenticated requests per window_ms window. Closed windows (empty ones included)
    update an exponentially weighted mean and variance (weight alpha). The live window trips
    when its count is at least min_count and more than z standard deviations above the mean,
    once the key has min_windows of history; at most one flag per window. Defaults: 10 s
    windows, alpha 0.05 (about 3 minutes of memory), z 6, 30 windows of history (5 minutes),
    at least 100 requests: a steady bot at any rate never trips it, a 10x jump does.
    """

    name = "rate_spike"

    def __init__(
        self,
        *,
        response: Response = Response.ALERT,
        window_ms: int = 10_000,
        alpha: float = 0.05,
        z: float = 6.0,
        min_windows: int = 30,
        min_count: int = 100,
    ) -> None:
        self.response = response
        self.window_ms, self.alpha, self.z = window_ms, alpha, z
        self.min_windows, self.min_count = min_windows, min_count
        self._keys: dict[str, _Rate] = {}

    def observe(self, event: UsageEvent) -> Flag | None:
        """Count event; a Flag when the live window spikes."""
        if not event.authenticated:
            return None
        window = event.at_ms // self.window_ms
        state = self._keys.get(event.api_key)
        if state is None:
            state = self._keys[event.api_key] = _Rate(window_start=window)
        if window > state.window_start:
            self._close(state, window)
        state.count += 1
        if state.windows < self.min_windows or state.count < self.min_count:
            return None
        threshold = state.mean + self.z * math.sqrt(max(state.var, state.mean, 1.0))
        if state.count > threshold and state.flagged_window != window:
            state.flagged_window = window
            return _flag(
                self,
                event,
                f"{state.count} requests in {self.window_ms // 1000} s against a baseline of "
                f"{state.mean:.1f}",
                count=state.count,
                baseline=round(state.mean, 2),
                window_ms=self.window_ms,
            )
        return None

    def _close(self, state: _Rate, window: int) -> None:
        """Fold the finished window, then the empty ones up to `window`, into the EWMA."""
        gaps = min(window - state.window_start, 10 * self.min_windows)
        counts = [state.count] + [0] * (gaps - 1)
        for count in counts:
            if state.windows == 0:
                state.mean, state.var = float(count), 0.0
            else:
                diff = count - state.mean
                state.mean += self.alpha * diff
                state.var = (1 - self.alpha) * (state.var + self.alpha * diff * diff)
            state.windows += 1
        state.window_start, state.count = window, 0


def _key_and_network(history: NetworkHistory, event: UsageEvent) -> tuple[int, str] | None:
    """(key id, source network) of an authenticated event of a known key, else None."""
    key_id = event.key_id
    if not event.authenticated or key_id is None:
        return None
    network = history.network_of(event.client_ip)
    return None if network is None else (key_id, network)


class NewNetwork:
    """An authenticated request from a network the key has not used, for a key with a stable
    history (at least min_requests requests over at least min_age_ms). Default: alert.

    history: the NetworkHistory shared with the other network rules and the store (the detector
    teaches it every event after all rules ran); without one the rule keeps and teaches its own.
    """

    name = "new_network"

    def __init__(
        self,
        *,
        response: Response = Response.ALERT,
        min_requests: int = 100,
        min_age_ms: int = 3_600_000,
        history: NetworkHistory | None = None,
    ) -> None:
        self.response = response
        self.min_requests, self.min_age_ms = min_requests, min_age_ms
        self.history = history if history is not None else NetworkHistory()
        self.learns = history is None

    def observe(self, event: UsageEvent) -> Flag | None:
        """A Flag when a stable key shows up from a new network."""
        found = _key_and_network(self.history, event)
        if found is None:
            return None
        key_id, network = found
        history = self.history
        new = not history.known(key_id, network)
        stable = False
        if new:  # the history's totals are only summed for the rare new network
            first = history.first_ms(key_id)
            stable = (
                first is not None
                and history.requests(key_id) >= self.min_requests
                and event.at_ms - first >= self.min_age_ms
            )
        if self.learns:
            history.add(event, network)
        if stable:
            return _flag(self, event, f"first request from network {network}", network=network)
        return None


class SensitiveCallFromNewNetwork:
    """A Withdraw or transfer call from a network the key has not used before, for a key that
    has been used at least once from somewhere else (on any node). Default: suspend.

    The tripping request itself has already been served (the rule reads the usage stream);
    suspension makes it the last one the key gets through. history: as for NewNetwork.
    """

    name = "sensitive_call_new_network"

    def __init__(
        self, *, response: Response = Response.SUSPEND, history: NetworkHistory | None = None
    ) -> None:
        self.response = response
        self.history = history if history is not None else NetworkHistory()
        self.learns = history is None

    def observe(self, event: UsageEvent) -> Flag | None:
        """A Flag for a withdraw/transfer from a network new to the key."""
        found = _key_and_network(self.history, event)
        if found is None:
            return None
        key_id, network = found
        history = self.history
        tripped = (
            event.path in SENSITIVE_PATHS
            and history.has_history(key_id)
            and not history.known(key_id, network)
        )
        if self.learns:
            history.add(event, network)
        if tripped:
            return _flag(
                self,
                event,
                f"{event.path} from network {network}, never used by this key before",
                network=network,
                path=event.path,
            )
        return None


class FailedSignatureBurst:
    """Many failed signatures or stale timestamps for one api key: someone holds the key id but
    not the secret (a possible leak). threshold failures within window_ms trip it, once per
    window. Default: 20 in 60 s, alert.

    elsewhere: api key -> failures other nodes recorded in the last window_ms (from the shared
    usage log; the anomaly guard sets it before each batch), added to this node's own count, so
    a burst spread over several nodes still trips the rule.
    """

    name = "failed_signature_burst"

    #: retCodes that mean "the key id was right, the proof was not".
    FAILURES = frozenset({10002, 10004})

    def __init__(
        self,
        *,
        response: Response = Response.ALERT,
        threshold: int = 20,
        window_ms: int = 60_000,
    ) -> None:
        self.response = response
        self.threshold, self.window_ms = threshold, window_ms
        self._failures: dict[str, deque[int]] = {}
        self._flagged_until: dict[str, int] = {}
        self._last: dict[str, UsageEvent] = {}  # latest failure per key (for a re-check's flag)
        self.elsewhere: dict[str, int] = {}

    def observe(self, event: UsageEvent) -> Flag | None:
        """Count a failed proof for a known key; a Flag when the burst reaches threshold."""
        if event.key_id is None or event.ret_code not in self.FAILURES:
            return None
        times = self._failures.setdefault(event.api_key, deque())
        times.append(event.at_ms)
        self._last[event.api_key] = event
        return self._judge(event.api_key, event.at_ms)

    def waiting(self, now_ms: int) -> list[str]:
        """Api keys with failures inside the window that have not tripped the rule: the ones
        whose count other nodes may still complete (their rows reach the usage log up to a
        flush interval later). Keys whose failures all left the window are forgotten."""
        found = []
        for api_key, times in list(self._failures.items()):
            while times and times[0] <= now_ms - self.window_ms:
                times.popleft()
            if not times:
                del self._failures[api_key]
                self._last.pop(api_key, None)
                self.elsewhere.pop(api_key, None)
            elif now_ms >= self._flagged_until.get(api_key, 0):
                found.append(api_key)
        return found

    def recheck(self, now_ms: int) -> list[Flag]:
        """Flags for waiting keys that reach threshold with what other nodes saw (elsewhere),
        without a new failure here."""
        flags = []
        for api_key in self.waiting(now_ms):
            flag = self._judge(api_key, now_ms)
            if flag is not None:
                flags.append(flag)
        return flags

    def _judge(self, api_key: str, now_ms: int) -> Flag | None:
        times = self._failures[api_key]
        while times and times[0] <= now_ms - self.window_ms:
            times.popleft()
        failures = len(times) + self.elsewhere.get(api_key, 0)
        if failures < self.threshold or now_ms < self._flagged_until.get(api_key, 0):
            return None
        self._flagged_until[api_key] = now_ms + self.window_ms
        event = self._last[api_key]
        return _flag(
            self,
            event,
            f"{failures} failed signatures or stale timestamps in {self.window_ms // 1000} s "
            f"(last from {event.client_ip}): the key id may have leaked",
            failures=failures,
            window_ms=self.window_ms,
            client_ip=event.client_ip,
        )
