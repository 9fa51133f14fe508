"""Prometheus metrics at GET /metrics (text exposition format, prometheus-client).

The hot path only bumps plain in-process counters (a dict increment); this module turns them
into Prometheus samples when /metrics is scraped, so metrics cost the request path nothing
measurable. Each app has its own registry (several apps can live in one test process).

Series (all counters are totals since the process started):
- keyplane_auth_requests_total{ret_code}: authenticated-route outcomes, "0" for success.
- keyplane_ratelimit_decisions_total{outcome}: allowed, limited, ip_limited, ip_banned,
  failed_open, failed_closed (the limiter backend's fail policy, DESIGN.md §2).
- keyplane_key_cache_lookups_total{result}: hit, miss. keyplane_key_cache_invalidations_total.
- keyplane_revocation_propagation_seconds: histogram, commit of a key change on any node ->
  this node dropping its cache (PostgreSQL LISTEN/NOTIFY; wall clocks, so same-host accurate).
- keyplane_replay_checks_total{outcome}: replay-guard checks of keys with replay_guard on:
  passed, refused (10014), failed_open, failed_closed (the replay store's fail policy).
- keyplane_ratelimit_backend_round_trips_total: round trips to Redis (at most one a decision;
  concurrent decisions share one round trip, one script call).
- keyplane_gateway_upstream_requests_total / _failures_total: gateway mode only.
- keyplane_websocket_connections: gauge of open private WebSocket connections.
- keyplane_usage_queue_depth (gauge), keyplane_usage_rows_written_total, _spilled_total,
  _replayed_total, _lost_total: the usage log writer (keyplane.usage.writer); lost rows could be
  neither stored nor spilled, and are also audited as "usage.rows.lost".
- keyplane_anomaly_flags_total{rule,response}, keyplane_anomaly_suspensions_total{rule},
  keyplane_anomaly_events_dropped_total: the anomaly guard (keyplane.anomaly.guard).
- keyplane_quota_decisions_total{outcome}: daily-quota decisions (allowed, refused,
  failed_open, failed_closed); refused = answered 10006 because the day's quota was spent.
- keyplane_alerts_recorded_total{kind}: alerts this node stored first in the alert log (and so
  sent); keyplane_alerts_duplicates_total{kind}: alerts another node or an earlier run had
  already recorded (not sent again); keyplane_alerts_sent_total / _failed_total{notifier,kind}:
  deliveries of every alert, the anomaly guard's included (keyplane.alerts.dispatch).
- keyplane_build_info{version,hot_path}: always 1; hot_path is "compiled" (mypyc build,
  keyplane.build), "python" or "partial".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from keyplane import __version__
from keyplane.build import hot_path_build

__all__ = ["AlertCounts", "AnomalyCounts", "Metrics", "metrics_endpoint"]


class AnomalyCounts(Protocol):
    """What watch_anomaly reads (keyplane.anomaly.guard.GuardStats has this shape)."""

    @property
    def flags(self) -> Mapping[tuple[str, str], int]: ...  # (rule, response) -> flags
    @property
    def suspensions(self) -> Mapping[str, int]: ...  # rule -> keys it suspended
    @property
    def dropped(self) -> int: ...


class AlertCounts(Protocol):
    """What watch_alerts reads (keyplane.alerts.dispatch.DispatchStats has this shape)."""

    @property
    def recorded(self) -> Mapping[str, int]: ...  # kind -> alerts stored first here
    @property
    def duplicates(self) -> Mapping[str, int]: ...  # kind -> already recorded elsewhere
    @property
    def sent(self) -> Mapping[tuple[str, str], int]: ...  # (notifier, kind) -> delivered
    @property
    def failed(self) -> Mapping[tuple[str, str], int]: ...  # (notifier, kind) -> given up


#: propagation-lag buckets, seconds: the target is p99 < 0.1 s, never above 1 s.
_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """The metric sources of one app, and its Prometheus registry.

    auth_outcomes: Counter[int] keyed by retCode (0 = authenticated), bumped by the middleware.
    Sources registered with `watch_*` are read at scrape time.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.auth_outcomes: Counter[int] = Counter()
        self.propagation = Histogram(
            "keyplane_revocation_propagation_seconds",
            "Seconds from a key change committing on any node to this node dropping its cache.",
            buckets=_LAG_BUCKETS,
            registry=self.registry,
        )
        self._limiter_decisions: Counter[str] = Counter()
        self._replay_outcomes: Counter[str] = Counter()
        self._cache_stats: Callable[[], tuple[int, int, int]] = lambda: (0, 0, 0)
        self._ws_connections: Callable[[], int] = lambda: 0
        self._round_trips: Callable[[], int] | None = None
        self._gateway: Callable[[], tuple[int, int]] | None = None
        self._usage: Callable[[], tuple[int, int, int, int, int]] | None = None
        self._anomaly: Callable[[], AnomalyCounts] | None = None
        self._quota: Counter[str] | None = None
        self._alerts: Callable[[], AlertCounts] | None = None
        self.registry.register(_Collector(self))

    def watch_limiter(self, decisions: Counter[str]) -> None:
        """Expose this Counter of limiter outcomes (keyplane.http.limits.RequestLimits)."""
        self._limiter_decisions = decisions

    def watch_replay(self, outcomes: Counter[str]) -> None:
        """Expose this Counter of replay-guard outcomes (keyplane.http.replay.ReplayGuard)."""
        self._replay_outcomes = outcomes

    def watch_cache(self, stats: Callable[[], tuple[int, int, int]]) -> None:
        """stats() -> (hits, misses, invalidations) of the key cache."""
        self._cache_stats = stats

    def watch_round_trips(self, count: Callable[[], int]) -> None:
        """count() -> round trips to the limiter backend (Redis) so far."""
        self._round_trips = count

    def watch_gateway(self, counts: Callable[[], tuple[int, int]]) -> None:
        """counts() -> (requests forwarded upstream, of which failed with 10016)."""
        self._gateway = counts

    def watch_usage(self, stats: Callable[[], tuple[int, int, int, int, int]]) -> None:
        """stats() -> (queue depth, rows written, spilled, replayed, lost) of the usage writer."""
        self._usage = stats

    def watch_anomaly(self, stats: Callable[[], AnomalyCounts]) -> None:
        """stats() -> the anomaly guard's counters: flags by (rule, response), suspensions by
        rule, events dropped."""
        self._anomaly = stats

    def watch_quota(self, decisions: Counter[str]) -> None:
        """Expose this Counter of daily-quota outcomes (RequestLimits.quota_decisions)."""
        self._quota = decisions

    def watch_alerts(self, stats: Callable[[], AlertCounts]) -> None:
        """stats() -> the alert dispatcher's counters: recorded and duplicates by kind, sent and
        failed by (notifier, kind)."""
        self._alerts = stats

    def watch_websockets(self, count: Callable[[], int]) -> None:
        """count() -> open private WebSocket connections."""
        self._ws_connections = count

    def observe_propagation_ms(self, lag_ms: int) -> None:
        """Record one revocation-broadcast lag (int ms; negative clock skew counts as 0)."""
        self.propagation.observe(max(lag_ms, 0) / 1000)

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)


class _Collector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics
        self._hot_path = hot_path_build()

    def collect(self) -> Iterable[Metric]:
        build = GaugeMetricFamily(
            "keyplane_build_info",
            "This process's keyplane: version, and hot_path compiled (mypyc) or python.",
            labels=["version", "hot_path"],
        )
        build.add_metric([__version__, self._hot_path], 1)
        yield build
        auth = CounterMetricFamily(
            "keyplane_auth_requests",
            "Requests to authenticated routes by outcome retCode (0 = passed).",
            labels=["ret_code"],
        )
        for code, count in sorted(self._m.auth_outcomes.items()):
            auth.add_metric([str(code)], count)
        yield auth
        limiter = CounterMetricFamily(
            "keyplane_ratelimit_decisions",
            "Rate-limit decisions by outcome.",
            labels=["outcome"],
        )
        for outcome, count in sorted(self._m._limiter_decisions.items()):
            limiter.add_metric([outcome], count)
        yield limiter
        replay = CounterMetricFamily(
            "keyplane_replay_checks",
            "Replay-guard checks by outcome (refused = 10014; failed_* = store unavailable).",
            labels=["outcome"],
        )
        for outcome, count in sorted(self._m._replay_outcomes.items()):
            replay.add_metric([outcome], count)
        yield replay
        hits, misses, invalidations = self._m._cache_stats()
        lookups = CounterMetricFamily(
            "keyplane_key_cache_lookups", "Key-cache lookups by result.", labels=["result"]
        )
        lookups.add_metric(["hit"], hits)
        lookups.add_metric(["miss"], misses)
        yield lookups
        yield CounterMetricFamily(
            "keyplane_key_cache_invalidations",
            "Times the key cache was dropped (revocation broadcast, poll, local write).",
            value=invalidations,
        )
        if self._m._round_trips is not None:
            yield CounterMetricFamily(
                "keyplane_ratelimit_backend_round_trips",
                "Round trips to the rate-limit backend (Redis): at most one per decision.",
                value=self._m._round_trips(),
            )
        if self._m._gateway is not None:
            forwarded, failed = self._m._gateway()
            yield CounterMetricFamily(
                "keyplane_gateway_upstream_requests",
                "Requests forwarded to the upstream (gateway mode).",
                value=forwarded,
            )
            yield CounterMetricFamily(
                "keyplane_gateway_upstream_failures",
                "Forwarded requests answered 10016: upstream down, timed out or garbage.",
                value=failed,
            )
        if self._m._usage is not None:
            yield from _usage_series(*self._m._usage())
        if self._m._anomaly is not None:
            yield from _anomaly_series(self._m._anomaly())
        if self._m._quota is not None:
            quota = CounterMetricFamily(
                "keyplane_quota_decisions",
                "Daily-quota decisions by outcome (refused = 10006, quota spent).",
                labels=["outcome"],
            )
            for outcome, count in sorted(self._m._quota.items()):
                quota.add_metric([outcome], count)
            yield quota
        if self._m._alerts is not None:
            yield from _alert_series(self._m._alerts())
        yield GaugeMetricFamily(
            "keyplane_websocket_connections",
            "Open private WebSocket connections.",
            value=self._m._ws_connections(),
        )


def _usage_series(
    depth: int, written: int, spilled: int, replayed: int, lost: int
) -> Iterable[Metric]:
    yield GaugeMetricFamily(
        "keyplane_usage_queue_depth", "Usage rows waiting in memory.", value=depth
    )
    for name, value, text in (
        ("written", written, "Usage rows written to the store from the queue."),
        ("spilled", spilled, "Usage rows written to the spill file (store down or queue full)."),
        ("replayed", replayed, "Spilled usage rows re-inserted into the store."),
        ("lost", lost, "Usage rows neither stored nor spilled (also audited)."),
    ):
        yield CounterMetricFamily(f"keyplane_usage_rows_{name}", text, value=value)


def _alert_series(stats: AlertCounts) -> Iterable[Metric]:
    for name, by_kind, text in (
        ("recorded", stats.recorded, "Alerts this node recorded first (and sent), by kind."),
        ("duplicates", stats.duplicates, "Alerts already recorded by another node, by kind."),
    ):
        family = CounterMetricFamily(f"keyplane_alerts_{name}", text, labels=["kind"])
        for kind, count in sorted(by_kind.items()):
            family.add_metric([kind], count)
        yield family
    for name, counts, text in (
        ("sent", stats.sent, "Alerts delivered, by notifier and kind."),
        ("failed", stats.failed, "Alerts a notifier gave up on, by notifier and kind."),
    ):
        family = CounterMetricFamily(f"keyplane_alerts_{name}", text, labels=["notifier", "kind"])
        for (notifier, kind), count in sorted(counts.items()):
            family.add_metric([notifier, kind], count)
        yield family


def _anomaly_series(stats: AnomalyCounts) -> Iterable[Metric]:
    flags = CounterMetricFamily(
        "keyplane_anomaly_flags",
        "Anomaly rule flags by rule and configured response.",
        labels=["rule", "response"],
    )
    for (rule, response), count in sorted(stats.flags.items()):
        flags.add_metric([rule, response], count)
    yield flags
    suspensions = CounterMetricFamily(
        "keyplane_anomaly_suspensions",
        "Keys suspended by an anomaly rule on this node, by rule.",
        labels=["rule"],
    )
    for rule, count in sorted(stats.suspensions.items()):
        suspensions.add_metric([rule], count)
    yield suspensions
    yield CounterMetricFamily(
        "keyplane_anomaly_events_dropped",
        "Usage events the anomaly guard dropped (its queue was full).",
        value=stats.dropped,
    )


async def metrics_endpoint(request: Request) -> Response:
    """GET /metrics: the app's metrics in the Prometheus text format."""
    metrics: Metrics = request.app.state.metrics
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
