"""The one alert dispatcher of an app: records alerts once in the store and sends them to every
notifier in background tasks, counting what happened.

    record(AlertRecord) --worker thread--> Store.record_alert  (unique key, condition, window)
        True  (this node stored it first)  -> send(alert)     recorded[kind] += 1
        False (another node or run did)    -> nothing sent     duplicates[kind] += 1
    send(Alert) -> one task per notifier in run()'s task group; each delivery counted in
        sent[(notifier, kind)] or failed[(notifier, kind)], never raised to the caller.

Built once by create_app from the settings' notifiers (webhook, email) and shared by the alert
monitor (quota, rate, expiry) and the anomaly guard, so notifiers work whether or not anomaly
detection is on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
import structlog
from anyio.abc import TaskGroup

from keyplane.alerts.model import Alert, AlertRecord
from keyplane.alerts.notifiers import Notifier

if TYPE_CHECKING:
    from keyplane.store.protocol import Store

__all__ = ["AlertDispatcher", "DispatchStats"]

log = structlog.get_logger("keyplane.alerts")


@dataclass(frozen=True)
class DispatchStats:
    """For metrics: recorded / duplicates by alert kind; sent / failed by (notifier, kind)."""

    recorded: Mapping[str, int]
    duplicates: Mapping[str, int]
    sent: Mapping[tuple[str, str], int]
    failed: Mapping[tuple[str, str], int]


class AlertDispatcher:
    """Records and sends alerts (see the module docstring).

    notifiers: where alerts go (may be empty: alerts are still recorded). store: where
    record() deduplicates (None: record() cannot be used, send() still works). Alerts sent
    before run() started are held and sent once it runs; run() cancelled cancels deliveries
    still retrying.
    """

    def __init__(self, notifiers: Sequence[Notifier], *, store: Store | None = None) -> None:
        self.notifiers = list(notifiers)
        self.store = store
        self.recorded: Counter[str] = Counter()
        self.duplicates: Counter[str] = Counter()
        self.sent: Counter[tuple[str, str]] = Counter()
        self.failed: Counter[tuple[str, str]] = Counter()
        self._tasks: TaskGroup | None = None
        self._held: list[Alert] = []

    def __repr__(self) -> str:
        return f"AlertDispatcher(notifiers={[n.name for n in self.notifiers]})"

    def stats(self) -> DispatchStats:
        """Counters so far (read by keyplane.http.metrics at scrape time)."""
        return DispatchStats(
            dict(self.recorded), dict(self.duplicates), dict(self.sent), dict(self.failed)
        )

    async def run(self) -> None:
        """Hold the task group deliveries run in, until cancelled."""
        async with anyio.create_task_group() as tasks:
            self._tasks = tasks
            held, self._held = self._held, []
            for alert in held:
                self.send(alert)
            try:
                await anyio.sleep_forever()
            finally:
                self._tasks = None

    def send(self, alert: Alert) -> None:
        """Start one delivery per notifier in the background (no I/O here, never raises)."""
        tasks = self._tasks
        if tasks is None:
            self._held.append(alert)
            return
        for notifier in self.notifiers:
            tasks.start_soon(self._deliver, notifier, alert)

    async def deliver(self, alert: Alert) -> None:
        """Send alert to every notifier now and wait (counted like send(); never raises)."""
        async with anyio.create_task_group() as tasks:
            for notifier in self.notifiers:
                tasks.start_soon(self._deliver, notifier, alert)

    async def record(self, record: AlertRecord) -> bool:
        """Store record (worker thread) and send its alert when this call stored it first.

        Returns True when sent (this node won), False when already recorded. Raises the
        store's error (the caller retries later) and RuntimeError without a store.
        """
        store = self.store
        if store is None:
            raise RuntimeError("AlertDispatcher.record needs a store")
        won = await anyio.to_thread.run_sync(store.record_alert, record)
        kind = record.kind.value
        if not won:
            self.duplicates[kind] += 1
            return False
        self.recorded[kind] += 1
        log.info("alert recorded", kind=kind, condition=record.condition, api_key=record.api_key)
        self.send(record.to_alert())
        return True

    async def _deliver(self, notifier: Notifier, alert: Alert) -> None:
        label = (notifier.name, alert.kind.value)
        try:
            await notifier.send(alert)
        except Exception as exc:  # DeliveryError, or a notifier bug: counted, never raised
            self.failed[label] += 1
            log.warning(
                "alert not delivered",
                notifier=notifier.name,
                alert_id=alert.id,
                error=type(exc).__name__,
            )
            return
        self.sent[label] += 1
