"""The usage writer: batches reach the store, outages spill to a file and replay, nothing is
lost silently, shutdown drains the queue, lastUsedAt follows the stream."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from keyplane.clock import SystemClock
from keyplane.keys import KeyEncryptionKey
from keyplane.service import KeyService
from keyplane.store import SqlStore, open_store
from keyplane.usage import UsageEvent
from keyplane.usage.writer import LOST_ACTION, UsageWriter

T0 = 1_700_000_000_000


class FlakyStore:
    """A real SqlStore whose usage writes fail while `down` is True (a database outage)."""

    def __init__(self, inner: SqlStore) -> None:
        self.inner = inner
        self.down = False
        self.calls = 0
        self.delay_s = 0.0  # a slow database: each usage write takes this long

    def prepare_usage(
        self, rows: Sequence[UsageEvent], *, onto: Sequence[UsageEvent] | None = None
    ) -> Sequence[UsageEvent]:
        return self.inner.prepare_usage(rows, onto=onto)

    def append_usage(self, rows: Sequence[UsageEvent]) -> int:
        self.calls += 1
        time.sleep(self.delay_s)
        if self.down:
            raise ConnectionError("database unreachable")
        return self.inner.append_usage(rows)

    def record_last_used(self, last_used: Any) -> None:
        if self.down:
            raise ConnectionError("database unreachable")
        self.inner.record_last_used(last_used)

    def append_audit(self, events: Any) -> Any:
        if self.down:
            raise ConnectionError("database unreachable")
        return self.inner.append_audit(events)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    made = open_store(f"sqlite:///{tmp_path / 'keyplane.db'}")
    yield made
    made.close()


@pytest.fixture
def key(store: SqlStore) -> tuple[str, int]:
    """(api_key, key id) of the master key of an initialised store."""
    init = KeyService(store, KeyEncryptionKey.generate(), SystemClock()).initialize()
    assert init is not None
    return init.issued.key.api_key, init.issued.key.id


def event(api_key: str, key_id: int, at_ms: int, *, ok: bool = True) -> UsageEvent:
    return UsageEvent(
        at_ms=at_ms,
        api_key=api_key,
        key_id=key_id,
        uid=100001,
        method="GET",
        path="/v5/account/wallet-balance",
        http_status=200,
        ret_code=0 if ok else 10004,
        request_bytes=0,
        response_bytes=200,
        latency_us=800,
        client_ip="127.0.0.1",
        authenticated=ok,
    )


def stored(store: SqlStore, api_key: str) -> int:
    return sum(r.requests for r in store.usage_summary(api_key=api_key))


class TestUsageWriter:
    def test_batches_reach_the_store_and_move_last_used(
        self, store: SqlStore, key: tuple[str, int], tmp_path: Path
    ) -> None:
        """Every emitted row is stored; lastUsedAt is the latest authenticated request's ms."""
        api_key, key_id = key
        writer = UsageWriter(store, spill_path=tmp_path / "spill.jsonl", batch_rows=7)
        for i in range(20):
            writer.emit(event(api_key, key_id, T0 + i))
        writer.emit(event(api_key, key_id, T0 + 99, ok=False))  # refused: not a use of the key
        assert writer.flush() == 21
        assert stored(store, api_key) == 21
        assert writer.stats() == (0, 21, 0, 0, 0)
        found = store.find_key(api_key)
        assert found is not None
        assert found.last_used_at_ms == T0 + 19
        assert not (tmp_path / "spill.jsonl").exists()

    def test_outage_spills_then_replays_exactly_once(
        self, store: SqlStore, key: tuple[str, int], tmp_path: Path
    ) -> None:
        """Rows written during an outage go to the spill file and reach the store afterwards."""
        api_key, key_id = key
        flaky = FlakyStore(store)
        spill = tmp_path / "spill" / "usage.jsonl"
        writer = UsageWriter(flaky, spill_path=spill, batch_rows=4)  # type: ignore[arg-type]
        for i in range(5):
            writer.emit(event(api_key, key_id, T0 + i))
        writer.flush()
        flaky.down = True
        for i in range(5, 15):
            writer.emit(event(api_key, key_id, T0 + i))
        writer.flush()
        assert flaky.calls == 3  # one failed try, then the rest spilled without waiting
        assert len(spill.read_text().splitlines()) == 10
        assert stored(store, api_key) == 5
        flaky.down = False
        writer.flush()
        assert stored(store, api_key) == 15
        assert writer.stats() == (0, 5, 10, 10, 0)
        assert not spill.exists()
        assert not writer.replay_path.exists()
        found = store.find_key(api_key)
        assert found is not None
        assert found.last_used_at_ms == T0 + 14

    def test_replay_interrupted_by_a_crash_counts_no_row_twice(
        self, store: SqlStore, key: tuple[str, int], tmp_path: Path
    ) -> None:
        """A .replay file left by a crash after part of it was stored is replayed idempotently."""
        api_key, key_id = key
        first = UsageWriter(store, spill_path=tmp_path / "s.jsonl", node_id="nodeA")
        rows = [first._with_id(event(api_key, key_id, T0 + i)) for i in range(6)]
        store.append_usage(rows[:4])  # the crash came after four rows were re-inserted
        first.replay_path.write_text("".join(json.dumps(_asdict(r)) + "\n" for r in rows))
        restarted = UsageWriter(store, spill_path=tmp_path / "s.jsonl")
        restarted.flush()
        assert stored(store, api_key) == 6
        assert not restarted.replay_path.exists()

    def test_full_queue_spills_instead_of_dropping(
        self, store: SqlStore, key: tuple[str, int], tmp_path: Path
    ) -> None:
        """Past queue_max, rows go straight to the spill file and still reach the store."""
        api_key, key_id = key
        writer = UsageWriter(store, spill_path=tmp_path / "spill.jsonl", queue_max=3)
        for i in range(10):
            writer.emit(event(api_key, key_id, T0 + i))
        assert writer.depth == 3
        assert writer.spilled == 7
        writer.flush()
        assert stored(store, api_key) == 10
        assert writer.stats() == (0, 3, 7, 7, 0)

    def test_shutdown_drains_the_queue(
        self, store: SqlStore, key: tuple[str, int], tmp_path: Path
    ) -> None:
        """run() flushes on its own; drain() writes whatever is still queued at shutdown."""
        api_key, key_id = key
        writer = UsageWriter(store, spill_path=tmp_path / "spill.jsonl", flush_ms=50)

        async def main() -> None:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(writer.run)
                for i in range(10):
                    writer.emit(event(api_key, key_id, T0 + i))
                await anyio.sleep(0.3)
                assert stored(store, api_key) == 10
                for i in range(10, 25):
                    writer.emit(event(api_key, key_id, T0 + i))
                tasks.cancel_scope.cancel()
            await writer.drain()

        anyio.run(main)
        assert stored(store, api_key) == 25

    def test_shutdown_in_the_middle_of_a_flush_loses_nothing(
        self, store: SqlStore, key: tuple[str, int], tmp_path: Path
    ) -> None:
        """run() cancelled while its batches are being taken, prepared and written (a slow
        database): every row it took is still written, the rest by drain(), none twice."""
        api_key, key_id = key
        slow = FlakyStore(store)
        slow.delay_s = 0.05
        writer = UsageWriter(  # type: ignore[arg-type]
            slow, spill_path=tmp_path / "spill.jsonl", flush_ms=20, batch_rows=700
        )
        for i in range(3000):
            writer.emit(event(api_key, key_id, T0 + i))

        async def main() -> None:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(writer.run)
                await anyio.sleep(0.08)  # the first flush is writing its first batches
                assert 0 < writer.depth < 3000
                tasks.cancel_scope.cancel()
            await writer.drain()

        anyio.run(main)
        assert stored(store, api_key) == 3000
        assert writer.stats() == (0, 3000, 0, 0, 0)
        found = store.find_key(api_key)
        assert found is not None
        assert found.last_used_at_ms == T0 + 2999

    def test_shutdown_during_an_outage_spills_the_queue(
        self, store: SqlStore, key: tuple[str, int], tmp_path: Path
    ) -> None:
        """drain() with the store down writes the queue to the spill file; the next node
        (same spill path) replays it once the store answers."""
        api_key, key_id = key
        flaky = FlakyStore(store)
        flaky.down = True
        spill = tmp_path / "spill.jsonl"
        writer = UsageWriter(flaky, spill_path=spill)  # type: ignore[arg-type]
        for i in range(12):
            writer.emit(event(api_key, key_id, T0 + i))
        assert anyio.run(writer.drain) == 12
        assert len(spill.read_text().splitlines()) == 12
        assert stored(store, api_key) == 0
        UsageWriter(store, spill_path=spill).flush()  # the restarted node
        assert stored(store, api_key) == 12
        assert not spill.exists()

    def test_failed_spill_counts_lost_rows_and_audits_them(
        self, store: SqlStore, key: tuple[str, int], tmp_path: Path
    ) -> None:
        """Store down and spill file unwritable: rows are counted lost and audited later."""
        api_key, key_id = key
        flaky = FlakyStore(store)
        blocked = tmp_path / "not-a-dir"
        blocked.write_text("a file where the spill directory should be")
        writer = UsageWriter(flaky, spill_path=blocked / "spill.jsonl")  # type: ignore[arg-type]
        flaky.down = True
        for i in range(4):
            writer.emit(event(api_key, key_id, T0 + i))
        writer.flush()
        assert writer.lost == 4
        assert [r for r in store.list_audit() if r.event.action == LOST_ACTION] == []
        flaky.down = False
        writer.flush()
        lost = [r for r in store.list_audit() if r.event.action == LOST_ACTION]
        assert len(lost) == 1
        assert lost[0].event.after["rows"] == 4
        assert lost[0].event.actor == "system:usage"
        writer.flush()  # reported once
        assert len([r for r in store.list_audit() if r.event.action == LOST_ACTION]) == 1

    def test_spill_file_is_private(
        self, store: SqlStore, key: tuple[str, int], tmp_path: Path
    ) -> None:
        """The spill file is created 0600 and holds no signature or secret."""
        api_key, key_id = key
        flaky = FlakyStore(store)
        flaky.down = True
        writer = UsageWriter(flaky, spill_path=tmp_path / "spill.jsonl")  # type: ignore[arg-type]
        writer.emit(event(api_key, key_id, T0))
        writer.flush()
        assert os.stat(tmp_path / "spill.jsonl").st_mode & 0o777 == 0o600
        line = json.loads((tmp_path / "spill.jsonl").read_text())
        assert set(line) == {
            "at_ms", "api_key", "key_id", "uid", "method", "path", "http_status", "ret_code",
            "request_bytes", "response_bytes", "latency_us", "client_ip", "authenticated",
            "row_id",
        }  # fmt: skip


def _asdict(row: UsageEvent) -> dict[str, Any]:
    return row._asdict()
