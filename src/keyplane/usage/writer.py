"""The usage writer: request rows off the request path, into the store in batches, never lost.

    request path --emit()--> bounded deque --run(): every flush_ms or batch_rows rows-->
        store.append_usage(batch) + store.record_last_used(max at_ms per key)   (in a thread)
          | store error
          v
        spill file (JSON lines, fsync per batch) --replayed when the store answers again-->

- emit() is the only call on the hot path: a deque append and a length check, no I/O, no lock.
  When the queue holds queue_max rows, the row goes straight to the spill file (flushed to the
  OS, not fsynced: an overloaded node must not wait for the disk per request).
- Every row gets a row_id "<node id>-<sequence>" (node id: random per process) before it is
  written or spilled; stores skip row_ids they already hold, so a crash in the middle of a
  replay, or two nodes replaying one shared spill file, never counts a request twice.
- Replay: the spill file is renamed to "<spill>.replay" (atomic, so emit()'s overflow appends
  start a new file), replayed page by page, then deleted. A replay interrupted by another
  outage or a crash resumes from the .replay file on the next flush, or after a restart.
- If writing the spill file fails too, the rows are counted in `lost` (metric
  keyplane_usage_rows_lost_total) and logged; an audit event "usage.rows.lost" (actor
  "system:usage", after={"rows": n}) is appended as soon as the store answers.
- lastUsedAt: each batch sets keys' last_used_at_ms to the latest at_ms of its authenticated
  rows (the signature verified), so it is exact to the ms of the request, outages included.
- drain() (app shutdown) flushes the whole queue (spilling it when the store is down).
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import threading
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import anyio
import structlog

from keyplane.audit.events import AuditEvent
from keyplane.clock import Clock, SystemClock
from keyplane.store.protocol import Store
from keyplane.usage.model import UsageEvent, UsageFields

__all__ = ["LOST_ACTION", "UsageWriter", "last_used_of"]

log = structlog.get_logger("keyplane.usage")

#: rows prepared (Store.prepare_usage) per step of the event loop: about 1.5 ms of work.
PREPARE_ROWS = 1000

#: audit action recorded when usage rows could be neither stored nor spilled.
LOST_ACTION = "usage.rows.lost"


def last_used_of(rows: Sequence[UsageEvent]) -> dict[int, int]:
    """key id -> latest at_ms (ms) among the authenticated rows (the signature verified)."""
    latest: dict[int, int] = {}
    for row in rows:
        key_id = row.key_id
        if row.authenticated and key_id is not None and row.at_ms > latest.get(key_id, -1):
            latest[key_id] = row.at_ms
    return latest


class UsageWriter:
    """Batches UsageEvents into the store; spills them to a file while the store is down.

    store: the Store (append_usage, record_last_used, append_audit are called in a worker
    thread). spill_path: the JSON-lines spill file (its parent is created on first spill).
    queue_max: rows held in memory before emit() spills directly. batch_rows: rows per store
    call, and the queue length that wakes the flusher early. flush_ms: int, ms between flushes.
    Counters (plain ints, read by keyplane.http.metrics): written, spilled, replayed, lost.
    """

    def __init__(
        self,
        store: Store,
        *,
        spill_path: Path,
        queue_max: int = 100_000,
        batch_rows: int = 5000,
        flush_ms: int = 1000,
        clock: Clock | None = None,
        node_id: str | None = None,
    ) -> None:
        self.store = store
        self.spill_path = Path(spill_path)
        self.replay_path = self.spill_path.with_name(self.spill_path.name + ".replay")
        self.queue_max = queue_max
        self.batch_rows = batch_rows
        self.flush_ms = flush_ms
        self.clock: Clock = clock or SystemClock()
        self.node_id = node_id or secrets.token_hex(8)
        self.written = 0
        self.spilled = 0
        self.replayed = 0
        self.lost = 0
        self._lost_unreported = 0
        self._queue: deque[UsageEvent | UsageFields] = deque()
        self._seq = itertools.count(1)
        self._flush_lock = threading.Lock()
        self._spill_lock = threading.Lock()
        self._wake: anyio.Event | None = None

    def __repr__(self) -> str:
        return f"UsageWriter(node_id={self.node_id!r}, depth={len(self._queue)})"

    @property
    def depth(self) -> int:
        """Rows waiting in memory."""
        return len(self._queue)

    def stats(self) -> tuple[int, int, int, int, int]:
        """(queue depth, rows written, rows spilled, rows replayed, rows lost) so far."""
        return len(self._queue), self.written, self.spilled, self.replayed, self.lost

    def emit(self, event: UsageEvent | UsageFields) -> None:
        """Queue one row, a UsageEvent or its UsageFields tuple (hot path: no I/O unless the
        queue is full, then one spill append)."""
        queue = self._queue
        if len(queue) >= self.queue_max:
            self._spill([self._with_id(event)], sync=False)
            return
        queue.append(event)
        if len(queue) >= self.batch_rows and self._wake is not None:
            self._wake.set()

    async def run(self) -> None:
        """Flush every flush_ms, or as soon as batch_rows rows wait; runs until cancelled.

        Each batch is taken and prepared (Store.prepare_usage: PostgreSQL COPY text) here on
        the event loop; only the store write runs in a worker thread, so that thread seldom
        needs the GIL while requests are served (bench/usage_overhead.py)."""
        while True:
            self._wake = anyio.Event()
            with anyio.move_on_after(self.flush_ms / 1000):
                await self._wake.wait()
            try:
                await self._flush_async()
            except Exception:  # never let the writer die: the next flush retries
                log.exception("usage flush failed")

    async def _flush_async(self) -> None:
        """Write the rows queued when it starts (rows queued meanwhile wait for the next flush:
        chasing them would turn the writer into a stream of tiny batches, each paying a
        transaction and a lastUsedAt update). Batches are taken and prepared PREPARE_ROWS rows
        at a time, yielding to the event loop in between (no long stall for requests)."""
        store_ok = True
        left = len(self._queue)
        # rows taken off the queue are written or spilled even when the task is cancelled
        with anyio.CancelScope(shield=True):
            while left > 0 and self._queue:
                batch, prepared = await self._next_batch(left, prepare=store_ok)
                left -= len(batch)
                latest = last_used_of(batch)
                store_ok = await anyio.to_thread.run_sync(self._write, batch, prepared, latest)
            await anyio.to_thread.run_sync(self._settle, store_ok)

    async def _next_batch(
        self, limit: int, *, prepare: bool
    ) -> tuple[list[UsageEvent], Sequence[UsageEvent] | None]:
        """Up to limit rows (at most batch_rows) off the queue, PREPARE_ROWS at a time with a
        yield to the event loop in between, and what Store.prepare_usage made of them (None
        when prepare is False, the store being down, or when preparing failed)."""
        batch: list[UsageEvent] = []
        prepared: Sequence[UsageEvent] | None = None
        want = min(limit, self.batch_rows)
        while len(batch) < want:
            piece = self._take(min(want - len(batch), PREPARE_ROWS))
            if not piece:  # another flush (shutdown drain) took the rest
                break
            if prepare:
                prepared = self._prepare(piece, prepared)
                prepare = prepared is not None
            batch.extend(piece)
            await anyio.sleep(0)
        return batch, prepared

    async def drain(self) -> int:
        """Flush everything queued (shutdown); returns rows taken off the queue."""
        return await anyio.to_thread.run_sync(self.flush)

    def flush(self) -> int:
        """Write the queue in batches, all in the calling thread (blocking); spill batches the
        store refuses; replay the spill file once the store answers; report lost rows. Returns
        rows taken off the queue.
        """
        taken = 0
        store_ok = True
        while self._queue:
            batch = self._take()
            taken += len(batch)
            prepared = self._prepare(batch) if store_ok else None
            store_ok = self._write(batch, prepared, last_used_of(batch))
        self._settle(store_ok)
        return taken

    def _prepare(
        self, rows: list[UsageEvent], onto: Sequence[UsageEvent] | None = None
    ) -> Sequence[UsageEvent] | None:
        """rows as Store.prepare_usage makes them (after onto's); None (logged) when that
        fails."""
        try:
            return self.store.prepare_usage(rows, onto=onto)
        except Exception as exc:
            log.warning("usage rows could not be prepared; spilling", error=type(exc).__name__)
            return None

    def _write(
        self,
        batch: list[UsageEvent],
        prepared: Sequence[UsageEvent] | None,
        latest: Mapping[int, int],
    ) -> bool:
        """Store the prepared batch and lastUsedAt (latest: key id -> ms), or spill the batch
        (prepared None: the store is known to be down, or preparing failed). Returns whether
        the store took it."""
        with self._flush_lock:
            if prepared is not None and self._store(prepared, latest):
                self.written += len(batch)
                return True
            self._spill(batch, sync=True)
            return False

    def _settle(self, store_ok: bool) -> None:
        """After a flush: replay the spill file and report lost rows while the store answers."""
        with self._flush_lock:
            if store_ok:
                store_ok = self._replay()
            if store_ok and self._lost_unreported:
                self._report_lost()

    def _take(self, limit: int | None = None) -> list[UsageEvent]:
        """Up to limit (default batch_rows) rows off the queue, each with its row_id."""
        pop, with_id = self._queue.popleft, self._with_id
        batch: list[UsageEvent] = []
        count = min(len(self._queue), self.batch_rows if limit is None else limit)
        try:
            for _ in range(count):
                batch.append(with_id(pop()))
        except IndexError:  # another flush (shutdown drain) took the rest
            pass
        return batch

    def _with_id(self, e: UsageEvent | UsageFields) -> UsageEvent:
        """The row as a UsageEvent with a row_id ("<node id>-<sequence>")."""
        if isinstance(e, UsageEvent):
            return e if e.row_id else e._replace(row_id=f"{self.node_id}-{next(self._seq)}")
        return UsageEvent(*e, f"{self.node_id}-{next(self._seq)}")  # UsageFields

    def _store(self, rows: Sequence[UsageEvent], latest: Mapping[int, int] | None = None) -> bool:
        """Append rows (as given or prepared) and move lastUsedAt (latest: key id -> ms, else
        taken from rows); False (logged, no exception) when the store fails."""
        try:
            self.store.append_usage(rows)
            if latest is None:
                latest = last_used_of(rows)
            if latest:
                self.store.record_last_used(latest)
        except Exception as exc:
            log.warning("usage store write failed; spilling", error=type(exc).__name__)
            return False
        return True

    def _spill(self, rows: Sequence[UsageEvent], *, sync: bool) -> None:
        """Append rows as JSON lines (fsync when sync); count them lost when that fails."""
        data = "".join(
            json.dumps(r._asdict(), separators=(",", ":"), ensure_ascii=False) + "\n" for r in rows
        ).encode("utf-8")
        try:
            with self._spill_lock:
                self.spill_path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.spill_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, data)
                    if sync:
                        os.fsync(fd)
                finally:
                    os.close(fd)
        except OSError as exc:
            self._count_lost(len(rows), reason=type(exc).__name__)
            return
        self.spilled += len(rows)

    def _count_lost(self, rows: int, *, reason: str) -> None:
        self.lost += rows
        self._lost_unreported += rows
        log.error("usage rows lost", rows=rows, reason=reason, spill_path=str(self.spill_path))

    def _replay(self) -> bool:
        """Re-insert spilled rows (idempotent); False when the store failed again."""
        if not self.replay_path.exists():
            with self._spill_lock:
                if not self.spill_path.exists() or self.spill_path.stat().st_size == 0:
                    return True
                os.replace(self.spill_path, self.replay_path)
        try:
            for page in self._pages(self.replay_path):
                if not self._store(page):
                    return False
                self.replayed += len(page)
        except OSError as exc:  # the file vanished (another node replayed it) or is unreadable
            log.warning("usage spill replay stopped", error=type(exc).__name__)
            return True
        self.replay_path.unlink(missing_ok=True)
        log.info("usage spill replayed", rows=self.replayed)
        return True

    def _pages(self, path: Path) -> Iterator[list[UsageEvent]]:
        page: list[UsageEvent] = []
        with path.open(encoding="utf-8") as lines:
            for line in lines:
                if not line.strip():
                    continue
                try:
                    page.append(UsageEvent(**json.loads(line)))
                except (ValueError, TypeError):  # a torn last line after a crash
                    self._count_lost(1, reason="unreadable spill line")
                    continue
                if len(page) >= self.batch_rows:
                    yield page
                    page = []
        if page:
            yield page

    def _report_lost(self) -> None:
        rows = self._lost_unreported
        event = AuditEvent(
            at_ms=self.clock.now_ms(),
            actor="system:usage",
            action=LOST_ACTION,
            target="",
            after={"rows": rows, "spillPath": str(self.spill_path)},
        )
        try:
            self.store.append_audit([event])
        except Exception as exc:
            log.warning("usage lost-rows audit failed; retrying later", error=type(exc).__name__)
            return
        self._lost_unreported -= rows
