"""The ASGI application: routes, the auth middleware, background upkeep, error mapping."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import anyio
import httpx
import structlog
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from keyplane.alerts import AlertDispatcher, AlertMonitor, AlertSignals
from keyplane.anomaly import (
    AnomalyDetector,
    AnomalyGuard,
    default_rules,
    notifiers_from_settings,
    parse_responses,
)
from keyplane.auth.cache import KeyCache
from keyplane.clock import Clock, SystemClock
from keyplane.errors import KeyplaneError
from keyplane.gateway import gateway_from_settings, gateway_routes
from keyplane.http.envelope import envelope_response
from keyplane.http.errors import http_status_for
from keyplane.http.key_management import key_management_routes
from keyplane.http.limits import RequestLimits
from keyplane.http.metrics import Metrics, metrics_endpoint
from keyplane.http.middleware import AuthMiddleware
from keyplane.http.replay import ReplayGuard
from keyplane.http.usage import FanOutSink, LastUsedRecorder, UsageSink
from keyplane.keys import KeyEncryptionKey
from keyplane.logs import configure_logging
from keyplane.quota import MemoryQuotaCounter, QuotaCounter, RedisQuotaCounter
from keyplane.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from keyplane.replay import MemoryReplayStore, RedisReplayStore, ReplayStore
from keyplane.service import KeyService
from keyplane.settings import Settings, load_kek
from keyplane.store import SqlStore, Store, open_store
from keyplane.store.notifications import RevisionNotice, lag_ms, listen_for_revisions
from keyplane.usage.writer import UsageWriter
from keyplane.venue import VenueConfig, VenueState, venue_routes
from keyplane.ws import WsHub, ws_routes

__all__ = ["create_app"]

log = structlog.get_logger("keyplane.http")

_READY_TIMEOUT_S = 2.0


async def _keyplane_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, KeyplaneError)
    return envelope_response(
        None,
        now_ms=request.app.state.clock.now_ms(),
        ret_code=exc.ret_code,
        ret_msg=exc.ret_msg,
        status_code=http_status_for(exc),
    )


async def _healthz(_: Request) -> Response:
    """GET /healthz: the process is up and serving (liveness)."""
    return JSONResponse({"status": "ok"})


async def _readyz(request: Request) -> Response:
    """GET /readyz: 200 when the store and the limiter backend (Redis) answer, else 503.

    Body: {"status": "ready"|"unready", "checks": {"store": "ok"|error, "ratelimit": ...}}.
    A load balancer should route only to ready nodes.
    """
    state = request.app.state
    checks: dict[str, str] = {}
    try:
        with anyio.fail_after(_READY_TIMEOUT_S):
            await anyio.to_thread.run_sync(state.store.revision)
        checks["store"] = "ok"
    except Exception as exc:
        checks["store"] = type(exc).__name__
    try:
        with anyio.fail_after(_READY_TIMEOUT_S):
            await state.limits.limiter.ping()
        checks["ratelimit"] = "ok"
    except Exception as exc:
        checks["ratelimit"] = type(exc).__name__
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "unready", "checks": checks},
        status_code=200 if ready else 503,
    )


def _limiter_for(settings: Settings) -> RateLimiter:
    """Redis when settings.redis_url is set (shared by every node), else in-memory."""
    if settings.redis_url is None:
        return MemoryRateLimiter()
    return RedisRateLimiter.from_url(settings.redis_url.get_secret_value())


def _replay_store_for(settings: Settings) -> ReplayStore:
    """Redis when settings.redis_url is set (one replay guard for every node), else in-memory."""
    if settings.redis_url is None:
        return MemoryReplayStore()
    return RedisReplayStore.from_url(settings.redis_url.get_secret_value())


def _quota_for(settings: Settings, store: Store, clock: Clock) -> QuotaCounter:
    """Redis when settings.redis_url is set (one count per key across nodes), else in-memory,
    seeded after a restart from the usage log when it is on (Store.count_usage)."""
    if settings.redis_url is not None:
        return RedisQuotaCounter.from_url(settings.redis_url.get_secret_value())
    if not settings.usage_log:
        return MemoryQuotaCounter()

    def seed(api_key: str, since_ms: int) -> int:
        return store.count_usage(api_key=api_key, since_ms=since_ms)

    return MemoryQuotaCounter(seed=seed, created_ms=clock.now_ms())


def create_app(
    settings: Settings | None = None,
    *,
    store: Store | None = None,
    clock: Clock | None = None,
    kek: KeyEncryptionKey | None = None,
    venue: VenueState | None = None,
    limiter: RateLimiter | None = None,
    replay_store: ReplayStore | None = None,
    quota: QuotaCounter | None = None,
) -> Starlette:
    """Build the keyplane ASGI app; any port (store, clock, KEK, venue, limiter, replay store,
    quota counter) can be swapped.

    With no limiter or replay_store: Redis when settings.redis_url is set, else in-memory (one
    node); the replay store remembers signatures of keys with replay_guard on (10014 on a
    repeat, keyplane.http.replay) and fails open or closed like the limiter. With no store,
    opens (and migrates) settings.database_url. The app owns the store it made and closes it,
    the limiter and the replay store on shutdown. Background upkeep while running: key-cache
    invalidation by the revocation broadcast (PostgreSQL LISTEN/NOTIFY) and by polling the store
    revision every settings.cache_poll_ms, and lastUsedAt flushes every
    settings.last_used_flush_ms.
    With settings.upstream_url the app is a gateway: every policy route outside /v5/user/*
    is forwarded upstream (keyplane.gateway) instead of served by the demo venue.
    With settings.usage_log (default on) every request naming an api key becomes a usage row,
    written in batches by keyplane.usage.writer.UsageWriter (spilled to
    settings.usage_spill_file() while the store is down; the queue is drained on shutdown).
    With settings.anomaly_detection (default on) the usage stream also feeds an AnomalyGuard
    (keyplane.anomaly.guard) that audits flags, alerts the notifiers of settings (webhook,
    email) and suspends keys. Raises ValueError for invalid anomaly or notifier settings.
    Daily quotas (ApiKey.daily_quota) are counted by `quota` (default: Redis with
    settings.redis_url, else in memory seeded from the usage log after a restart). The
    notifiers are built once and shared by an AlertDispatcher (keyplane.alerts.dispatch) that
    the anomaly guard and the AlertMonitor (quota.75, rate.75, expiry alerts, recorded once in
    the store's alert log) both use, whether or not anomaly detection is on.
    """
    configure_logging()
    settings = settings or Settings()
    owns_store = store is None
    the_store: Store = store if store is not None else open_store(settings.database_url)
    the_clock: Clock = clock or SystemClock()
    service = KeyService(the_store, kek or load_kek(settings), the_clock)
    cache = KeyCache(service.key_entry)
    gateway = gateway_from_settings(settings, the_store, service.kek)
    if gateway is not None:  # gateway mode: credentials re-read after store changes
        cache.add_invalidation_listener(gateway.mark_stale)
    last_used = LastUsedRecorder()
    metrics = Metrics()
    usage: UsageWriter | None = None
    if settings.usage_log:
        usage = UsageWriter(
            the_store,
            spill_path=settings.usage_spill_file(),
            queue_max=settings.usage_queue_max,
            batch_rows=settings.usage_batch_rows,
            flush_ms=settings.usage_flush_ms,
            clock=the_clock,
        )
        metrics.watch_usage(usage.stats)
    alert_http = httpx.AsyncClient() if settings.webhook_url else None
    dispatcher = AlertDispatcher(
        notifiers_from_settings(settings, http=alert_http), store=the_store
    )
    metrics.watch_alerts(dispatcher.stats)
    guard: AnomalyGuard | None = None
    if settings.anomaly_detection:
        guard = AnomalyGuard(
            service,
            cache,
            detector=AnomalyDetector(default_rules(parse_responses(settings.anomaly_responses))),
            clock=the_clock,
            dispatcher=dispatcher,
            usage_node_id=usage.node_id if usage is not None else None,
        )
        metrics.watch_anomaly(guard.stats)
    sink: UsageSink | None = usage
    if guard is not None:
        sink = guard if usage is None else FanOutSink(usage, guard)
    if gateway is not None:
        metrics.watch_gateway(lambda: (gateway.requests, gateway.failures))
    limits = RequestLimits(
        limiter or _limiter_for(settings),
        ip_rate=settings.ip_rate(),
        ip_ban_ms=int(settings.ip_ban_seconds * 1000),
        fail_open_reads=settings.ratelimit_fail_open_reads,
        fail_open_writes=settings.ratelimit_fail_open_writes,
        quota=quota or _quota_for(settings, the_store, the_clock),
        signals=AlertSignals(
            rate_fraction=settings.rate_alert_fraction,
            quota_fraction=settings.quota_alert_fraction,
        ),
    )
    monitor = AlertMonitor(
        the_store,
        dispatcher,
        limits.signals,
        the_clock,
        rate_sustain_s=settings.rate_alert_sustain_s,
        expiry_days=settings.expiry_days(),
        sweep_interval_s=settings.alert_sweep_s,
    )
    metrics.watch_limiter(limits.decisions)
    replay = ReplayGuard(
        replay_store or _replay_store_for(settings),
        fail_open_reads=settings.ratelimit_fail_open_reads,
        fail_open_writes=settings.ratelimit_fail_open_writes,
    )
    metrics.watch_replay(replay.outcomes)
    metrics.watch_quota(limits.quota_decisions)
    metrics.watch_cache(lambda: (cache.hits, cache.misses, cache.invalidations))
    round_trips = getattr(limits.limiter, "round_trips", None)
    if round_trips is not None:
        metrics.watch_round_trips(lambda: int(getattr(limits.limiter, "round_trips", 0)))

    def on_notice(notice: RevisionNotice) -> None:
        if cache.sync_revision(notice.revision):
            metrics.observe_propagation_ms(lag_ms(notice))

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tasks:
            if isinstance(the_store, SqlStore) and the_store.engine.dialect.name == "postgresql":
                tasks.start_soon(listen_for_revisions, the_store.engine.url, on_notice, cache.clear)
            tasks.start_soon(_poll_revision, the_store, cache, settings.cache_poll_ms)
            tasks.start_soon(_flush_last_used, the_store, last_used, settings.last_used_flush_ms)
            if usage is not None:
                tasks.start_soon(usage.run)
            tasks.start_soon(dispatcher.run)
            tasks.start_soon(monitor.run)
            if guard is not None:
                tasks.start_soon(guard.run)
            upstream: contextlib.AbstractAsyncContextManager[None] = (
                gateway.running() if gateway is not None else contextlib.nullcontext()
            )
            try:
                async with upstream:
                    yield
            finally:
                tasks.cancel_scope.cancel()
        await anyio.to_thread.run_sync(last_used.flush, the_store)
        if usage is not None:
            await usage.drain()
        if alert_http is not None:
            await alert_http.aclose()
        await limits.limiter.close()
        await replay.store.close()
        if limits.quota is not None:
            await limits.quota.close()
        if owns_store:
            the_store.close()

    routes = [
        Route("/healthz", _healthz),
        Route("/readyz", _readyz),
        Route("/metrics", metrics_endpoint),
        *key_management_routes(),
        *(gateway_routes() if gateway is not None else venue_routes()),
        *ws_routes(),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(
                AuthMiddleware,
                cache=cache,
                clock=the_clock,
                last_used=last_used if usage is None else None,
                limits=limits,
                auth_outcomes=metrics.auth_outcomes,
                upstream_limit_headers=gateway is not None,
                usage=sink,
                replay=replay,
                max_body_bytes=settings.max_body_bytes,
                trusted_proxies=settings.trusted_proxies,
            )
        ],
        exception_handlers={KeyplaneError: _keyplane_error},
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.store = the_store
    app.state.clock = the_clock
    app.state.service = service
    app.state.cache = cache
    app.state.limits = limits
    app.state.replay = replay
    app.state.metrics = metrics
    app.state.usage = usage
    app.state.anomaly_guard = guard
    app.state.alerts = dispatcher
    app.state.alert_monitor = monitor
    app.state.venue = venue or VenueState(VenueConfig())
    app.state.gateway = gateway
    ws_hub = WsHub(
        cache,
        the_clock,
        trusted_proxies=settings.trusted_proxies,
        max_connections_per_key=settings.ws_max_connections_per_key,
        replay=replay,
        auth_timeout_s=settings.ws_auth_timeout_s,
    )
    app.state.venue.events.add_listener(ws_hub.on_venue_events)
    cache.add_invalidation_listener(ws_hub.on_invalidated)
    metrics.watch_websockets(ws_hub.count)
    app.state.ws_hub = ws_hub
    return app


async def _poll_revision(store: Store, cache: KeyCache, every_ms: int) -> None:
    """Drop cached keys whenever another process (CLI, node) changed the store."""
    while True:
        try:
            cache.sync_revision(await anyio.to_thread.run_sync(store.revision))
        except Exception:  # store briefly unreachable: keep the cache, try again
            log.warning("store revision poll failed", exc_info=True)
            cache.clear()
        await anyio.sleep(every_ms / 1000)


async def _flush_last_used(store: Store, last_used: LastUsedRecorder, every_ms: int) -> None:
    while True:
        await anyio.sleep(every_ms / 1000)
        try:
            await anyio.to_thread.run_sync(last_used.flush, store)
        except Exception:
            log.warning("lastUsedAt flush failed", exc_info=True)
