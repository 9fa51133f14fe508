"""The anomaly guard: carries out what the anomaly rules decide, off the request path.

    request path --emit(fields)--> bounded deque --run(): every tick_ms, or at once after a
    Withdraw or transfer call-->
        network history of the events' keys read from the store where needed (history.py)
        AnomalyDetector.observe(event) -> Flags, each carried out in order:
          SUSPEND      first the key is held in this node's cache (refused with 10007 from
                       that moment, before any store write)
          every flag   audit event "anomaly.flag" (actor "system:<rule>", target "key:<api_key>",
                       after = {rule, response, reason, details})            (worker thread)
          ALERT        + an Alert (ANOMALY; LEAK_SUSPECTED for failed_signature_burst)
          SUSPEND      + service.suspend_key(actor "system:<rule>") (worker thread); the other
                       nodes follow through the revocation broadcast; the hold is released
                       once the store says suspended; Alert SUSPENDED
        networks seen written back to the store

- emit() is the only call on the hot path: a length check, a deque append and a set lookup.
- A key that is already suspended (or revoked, or gone) is not suspended again; the flag is
  still audited and alerted as ANOMALY.
- Store errors: logged; the flag stays pending (with what was already done) and is retried on
  the next tick, so a flag is audited once and a key suspended once.
- Alerts are delivered through an AlertDispatcher in background tasks (notifiers retry with
  backoff); a notifier that gives up is counted there (sent / failed by notifier and kind) and
  logged, never raised into the guard loop.
- No secret ever reaches an audit row, alert or log line: flags carry api keys, networks,
  paths and counts only.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import anyio
import httpx
import structlog
from anyio.abc import TaskGroup

from keyplane.alerts import (
    Alert,
    AlertDispatcher,
    AlertKind,
    AlertRecord,
    Notifier,
    SmtpNotifier,
    WebhookNotifier,
)
from keyplane.anomaly.detector import AnomalyDetector, default_rules
from keyplane.anomaly.rules import SENSITIVE_PATHS, FailedSignatureBurst, Flag, Response
from keyplane.auth.cache import KeyCache
from keyplane.clock import Clock, SystemClock
from keyplane.errors import NotFoundError, ParameterError
from keyplane.keys import KeyStatus
from keyplane.secret import Secret
from keyplane.usage.model import UsageEvent, UsageFields

if TYPE_CHECKING:
    from keyplane.service import KeyService
    from keyplane.settings import Settings

__all__ = [
    "FLAG_ACTION",
    "AnomalyGuard",
    "GuardStats",
    "notifiers_from_settings",
    "parse_responses",
]

log = structlog.get_logger("keyplane.anomaly")

#: ms between re-checks of failed-signature bursts that have not tripped (other nodes' share).
_RECHECK_MS = 250
#: audit action of every flag.
FLAG_ACTION = "anomaly.flag"


def parse_responses(text: str) -> dict[str, Response]:
    """ "new_network=suspend,rate_spike=record" -> {"new_network": Response.SUSPEND, ...}.

    Empty text -> {}. Raises ValueError for a malformed item, an unknown response or an
    unknown rule name (the message lists the known ones).
    """
    found: dict[str, Response] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, value = (s.strip() for s in item.partition("="))
        if not sep or not name:
            raise ValueError(f"anomaly response {item!r}: expected <rule>=<record|alert|suspend>")
        try:
            found[name] = Response(value.lower())
        except ValueError:
            known = ", ".join(r.value for r in Response)
            message = f"anomaly response {item!r}: {value!r} is not one of {known}"
            raise ValueError(message) from None
    default_rules(found)  # ValueError for an unknown rule name
    return found


def notifiers_from_settings(
    settings: Settings, *, http: httpx.AsyncClient | None = None
) -> list[Notifier]:
    """The notifiers settings configure: a WebhookNotifier (webhook_url + webhook_secret) and an
    SmtpNotifier (smtp_url "smtp://user:pass@host:port" or "smtp+starttls://...", with
    alert_email_from and alert_email_to). Raises ValueError for a half-configured one.

    http: a client the webhook reuses (the caller closes it); without one each alert makes its
    own, whose TLS setup blocks the event loop for tens of ms.
    """
    notifiers: list[Notifier] = []
    if settings.webhook_url:
        if settings.webhook_secret is None:
            raise ValueError("KEYPLANE_WEBHOOK_URL is set without KEYPLANE_WEBHOOK_SECRET")
        secret = Secret(settings.webhook_secret.get_secret_value())
        notifiers.append(WebhookNotifier(settings.webhook_url, secret, client=http))
    if settings.smtp_url is not None:
        url = urlsplit(settings.smtp_url.get_secret_value())
        if url.scheme not in ("smtp", "smtp+starttls") or not url.hostname:
            raise ValueError("smtp_url must look like smtp://user:pass@host:port")
        recipients = [a.strip() for a in (settings.alert_email_to or "").split(",") if a.strip()]
        if not recipients or not settings.alert_email_from:
            raise ValueError("smtp_url needs alert_email_from and alert_email_to")
        starttls = url.scheme == "smtp+starttls"
        notifiers.append(
            SmtpNotifier(
                url.hostname,
                url.port or (587 if starttls else 25),
                sender=settings.alert_email_from,
                recipients=recipients,
                username=unquote(url.username) if url.username else None,
                password=Secret(unquote(url.password)) if url.password else None,
                starttls=starttls,
            )
        )
    return notifiers


@dataclass(frozen=True)
class GuardStats:
    """For metrics: flags by (rule, response); suspensions made, by rule; events dropped
    because the queue was full (alerts are counted by the AlertDispatcher)."""

    flags: Mapping[tuple[str, str], int]
    suspensions: Mapping[str, int]
    dropped: int


@dataclass
class _Pending:
    flag: Flag
    audited: bool = False
    handled: bool = False  # suspension done (or skipped) for SUSPEND flags
    suspended: bool = False


class AnomalyGuard:
    """Usage events in (emit), flags carried out (run).

    service: the KeyService (record_security_event, find_key, suspend_key run in a worker
    thread). cache: this node's KeyCache, cleared after a suspension. detector: the rules
    (default_rules() when None). notifiers: where ALERT and SUSPEND flags are sent.
    tick_ms: int, ms between drains. queue_max: events held; beyond it events are dropped and
    counted. dispatcher: the AlertDispatcher alerts go through and are counted in (create_app
    shares its one; default: a new one over `notifiers`, without a store); with a store, leak
    alerts are recorded once per key per burst window, across nodes. usage_node_id: this node's
    usage-writer id; with it, the failed-signature rule also counts the failures other nodes
    wrote to the usage log (a burst spread over the nodes trips it); None: this node's only.
    """

    def __init__(
        self,
        service: KeyService,
        cache: KeyCache,
        *,
        detector: AnomalyDetector | None = None,
        notifiers: Sequence[Notifier] = (),
        tick_ms: int = 50,
        queue_max: int = 100_000,
        clock: Clock | None = None,
        dispatcher: AlertDispatcher | None = None,
        usage_node_id: str | None = None,
    ) -> None:
        self.service = service
        self.usage_node_id = usage_node_id
        # alerts go out (and are counted) through one dispatcher: the app's shared one, or
        # this guard's own over `notifiers` (deliveries awaited in tick()/run()'s task group)
        self.dispatcher = dispatcher if dispatcher is not None else AlertDispatcher(notifiers)
        self.cache = cache
        self.detector = detector or AnomalyDetector()
        self._burst = next(
            (r for r in self.detector.rules if isinstance(r, FailedSignatureBurst)), None
        )
        self.tick_ms = tick_ms
        self.queue_max = queue_max
        self.clock: Clock = clock or SystemClock()
        self.suspensions: Counter[str] = Counter()  # rule -> keys it suspended
        self.dropped = 0
        self._queue: deque[UsageEvent | UsageFields] = deque()
        self._pending: deque[_Pending] = deque()
        self._wake: anyio.Event | None = None
        self._rechecked_ms = 0

    def __repr__(self) -> str:
        return f"AnomalyGuard(rules={[r.name for r in self.detector.rules]}, depth={self.depth})"

    @property
    def depth(self) -> int:
        """Events waiting to be observed."""
        return len(self._queue)

    def stats(self) -> GuardStats:
        """Counters so far (read by keyplane.http.metrics at scrape time)."""
        return GuardStats(
            dict(self.detector.flags),
            dict(self.suspensions),
            self.dropped,
        )

    def emit(self, event: UsageEvent | UsageFields) -> None:
        """Queue one usage row (hot path: no I/O, no lock). A Withdraw or transfer call wakes
        the guard at once instead of at the next tick."""
        queue = self._queue
        if len(queue) >= self.queue_max:
            self.dropped += 1
            return
        queue.append(event)
        if event[5] in SENSITIVE_PATHS and self._wake is not None:  # [5]: the path
            self._wake.set()

    async def run(self) -> None:
        """Drain and act every tick_ms; runs until cancelled (alerts in flight are cancelled
        with it)."""
        async with anyio.create_task_group() as alerts:
            while True:
                self._wake = anyio.Event()
                with anyio.move_on_after(self.tick_ms / 1000):
                    await self._wake.wait()
                try:
                    await self.tick(alerts)
                except Exception:  # never let the guard die: the next tick retries
                    log.exception("anomaly guard tick failed")

    async def tick(self, alerts: TaskGroup | None = None) -> int:
        """Observe every queued event and carry out the flags; returns events observed.

        Before observing, the network history of the events' keys is read from the store where
        this node's view lacks it (keyplane.anomaly.history); after, what was seen is written
        back. Alerts are sent in `alerts` (a task group) when given, else awaited before
        returning. Flags whose store writes fail stay pending for the next tick.
        """
        queue = self._queue
        events = [e if isinstance(e, UsageEvent) else UsageEvent(*e) for e in _drain(queue)]
        if events and self.detector.histories:
            await self._load_histories(events)
        burst, node_id = self._burst, self.usage_node_id
        recheck = False
        if burst is not None and node_id is not None:
            now = self.clock.now_ms()
            recheck = now - self._rechecked_ms >= _RECHECK_MS
            if recheck:
                self._rechecked_ms = now
            await self._load_failures(events, burst, node_id, waiting=recheck)
        detector = self.detector
        flags = [flag for event in events for flag in detector.observe(event)]
        if recheck and burst is not None:  # bursts completed by other nodes' rows
            flags += detector.counted(burst.recheck(self.clock.now_ms()))
        for flag in flags:
            self._pending.append(_Pending(flag))
            if flag.response is Response.SUSPEND:
                self.cache.hold(flag.api_key)  # this node refuses the key from now on
        if self.detector.histories:
            await self._write_histories()
        if not self._pending:
            return len(events)
        if alerts is None:
            async with anyio.create_task_group() as own:
                await self._act(own)
        else:
            await self._act(alerts)
        return len(events)

    async def _load_histories(self, events: Sequence[UsageEvent]) -> None:
        """Read the store's network history of keys the view lacks (one query per history)."""
        for history in self.detector.histories:
            wanted = history.to_load(events)
            if not wanted:
                continue
            try:
                loaded = await anyio.to_thread.run_sync(
                    self.service.store.load_key_networks, wanted
                )
            except Exception as exc:  # store down: judge on this node's view, retry next tick
                log.warning(
                    "network history not loaded", keys=len(wanted), error=type(exc).__name__
                )
                continue
            history.merge(loaded)

    async def _load_failures(
        self,
        events: Sequence[UsageEvent],
        rule: FailedSignatureBurst,
        node_id: str,
        *,
        waiting: bool,
    ) -> None:
        """Read what other nodes logged of failed proofs (one query) for the keys failing in
        events and, with waiting, for the keys whose burst has not tripped yet (other nodes'
        rows reach the usage log up to a flush interval after their requests)."""
        failures = rule.FAILURES
        keys = {e.api_key for e in events if e.key_id is not None and e.ret_code in failures}
        if waiting:
            keys.update(rule.waiting(self.clock.now_ms()))
        if not keys:
            return
        try:
            counts = await anyio.to_thread.run_sync(
                lambda: self.service.store.count_failures(
                    keys,
                    since_ms=self.clock.now_ms() - rule.window_ms,
                    ret_codes=failures,
                    excluding_node=node_id,
                )
            )
        except Exception as exc:  # store down: judge on this node's own failures
            log.warning("failure counts not loaded", keys=len(keys), error=type(exc).__name__)
            return
        for key in keys:
            rule.elsewhere[key] = counts.get(key, 0)

    async def _write_histories(self) -> None:
        """Write what this node saw (new networks at once, counts every flush_ms)."""
        now = self.clock.now_ms()
        for history in self.detector.histories:
            writes = history.take_writes(now)
            if not writes:
                continue
            try:
                await anyio.to_thread.run_sync(self.service.store.record_key_networks, writes)
            except Exception as exc:  # kept and retried on the next tick
                history.unwritten(writes)
                log.warning(
                    "network history not written", rows=len(writes), error=type(exc).__name__
                )
                continue
            history.written(writes)

    async def _act(self, alerts: TaskGroup) -> None:
        while self._pending:
            item = self._pending[0]
            try:
                await anyio.to_thread.run_sync(self._apply, item)
            except Exception as exc:
                log.warning(
                    "anomaly flag not carried out yet; retrying",
                    rule=item.flag.rule,
                    api_key=item.flag.api_key,
                    error=type(exc).__name__,
                )
                return
            self._pending.popleft()
            if item.handled:  # the store decides now (suspended, or it already was not active)
                self.cache.release(item.flag.api_key)
            if item.suspended:
                self.cache.clear()
            alert = self._alert_for(item)
            if alert is None:
                continue
            record = self._leak_record(item, alert)
            if record is not None and self.dispatcher.store is not None:
                try:
                    await self.dispatcher.record(record)  # once per key per burst window
                    continue
                except Exception as exc:  # store down: rather twice than never
                    log.warning("leak alert not recorded; sending", error=type(exc).__name__)
                alert = record.to_alert()
            alerts.start_soon(self.dispatcher.deliver, alert)

    def _apply(self, item: _Pending) -> None:
        """Audit the flag and, when asked, suspend the key, in one transaction when both are
        due (blocking; raises on store errors, leaving item as far as it got)."""
        flag = item.flag
        actor = f"system:{flag.rule}"
        service = self.service
        flag_event = service.security_event(
            FLAG_ACTION,
            target=f"key:{flag.api_key}",
            actor=actor,
            details={
                "rule": flag.rule,
                "response": flag.response.value,
                "reason": flag.reason,
                "details": flag.details,
            },
        )
        if flag.response is Response.SUSPEND and not item.handled:
            preceding = [] if item.audited else [flag_event]
            try:
                before = service.get_key(flag.api_key)
                key = service.suspend_key(flag.api_key, actor=actor, preceding=preceding)
            except (NotFoundError, ParameterError):  # gone or revoked: nothing to suspend
                pass
            else:
                item.audited = True  # suspend_key wrote the flag with the suspension
                if before.status is KeyStatus.ACTIVE and key.status is KeyStatus.SUSPENDED:
                    self.suspensions[flag.rule] += 1
                    item.suspended = True
                    log.warning(
                        "key suspended by anomaly rule", rule=flag.rule, api_key=flag.api_key
                    )
            item.handled = True
        if not item.audited:
            service.store.append_audit([flag_event])
            item.audited = True

    def _leak_record(self, item: _Pending, alert: Alert | None) -> AlertRecord | None:
        """The alert-log record of a leak alert (deduplicated across nodes per key and burst
        window), None for other alerts."""
        flag = item.flag
        if (
            alert is None
            or alert.kind is not AlertKind.LEAK_SUSPECTED
            or flag.key_id is None
            or flag.uid is None
        ):
            return None
        window = int(flag.details.get("window_ms", 60_000)) or 60_000
        return AlertRecord(
            key_id=flag.key_id,
            api_key=flag.api_key,
            uid=flag.uid,
            kind=AlertKind.LEAK_SUSPECTED,
            condition=AlertKind.LEAK_SUSPECTED.value,
            window_ms=flag.at_ms // window * window,
            at_ms=alert.at_ms,
            summary=alert.summary,
            details=alert.details,
        )

    def _alert_for(self, item: _Pending) -> Alert | None:
        flag = item.flag
        if flag.response is Response.RECORD or not self.dispatcher.notifiers:
            return None
        if item.suspended:
            kind = AlertKind.SUSPENDED
            summary = f"key {flag.api_key} suspended by {flag.rule}: {flag.reason}"
        elif flag.rule == FailedSignatureBurst.name:
            kind = AlertKind.LEAK_SUSPECTED
            summary = f"key {flag.api_key}: {flag.reason}"
        else:
            kind = AlertKind.ANOMALY
            summary = f"key {flag.api_key} flagged by {flag.rule}: {flag.reason}"
        details: dict[str, Any] = {
            "rule": flag.rule,
            "response": flag.response.value,
            "reason": flag.reason,
            **flag.details,
        }
        return Alert(
            id=f"{flag.rule}:{flag.api_key}:{flag.at_ms}",
            kind=kind,
            at_ms=self.clock.now_ms(),
            summary=summary,
            api_key=flag.api_key,
            key_id=flag.key_id,
            uid=flag.uid,
            details=details,
        )


def _drain(queue: deque[UsageEvent | UsageFields]) -> list[UsageEvent | UsageFields]:
    """Everything in queue, oldest first (appends from the request path go on meanwhile)."""
    taken: list[UsageEvent | UsageFields] = []
    popleft = queue.popleft
    while queue:
        taken.append(popleft())
    return taken
