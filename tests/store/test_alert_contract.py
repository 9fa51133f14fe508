"""The alert-log part of the Store contract: memory, SQLite and PostgreSQL agree that one alert
condition of one key in one window is recorded once, and only its first caller hears True."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import pytest

from keyplane.alerts import AlertKind, AlertRecord
from keyplane.store import Store, open_store

from .test_store_contract import T0

DAY = T0 - T0 % 86_400_000


def record(**changes: object) -> AlertRecord:
    """Key AAA (id 1) crossed 75% of its daily quota today."""
    base = AlertRecord(
        key_id=1,
        api_key="AAA",
        uid=100001,
        kind=AlertKind.QUOTA_75,
        condition="quota.75",
        window_ms=DAY,
        at_ms=T0,
        summary="key AAA used 75 of its 100 daily requests",
        details={"used": 75, "quota": 100},
    )
    return replace(base, **changes)  # type: ignore[arg-type]


class TestRecordAlert:
    def test_first_caller_wins_then_false(self, store: Store) -> None:
        """record_alert is True once per (key, condition, window), then False."""
        assert store.record_alert(record()) is True
        assert store.record_alert(record(at_ms=T0 + 5, summary="again")) is False
        assert [r.summary for r in store.list_alerts()] == [record().summary]

    def test_other_window_condition_or_key_is_new(self, store: Store) -> None:
        """Tomorrow, another condition, another key: each recorded once more."""
        assert store.record_alert(record())
        assert store.record_alert(record(window_ms=DAY + 86_400_000, at_ms=T0 + 1))
        assert store.record_alert(record(condition="rate.75:/v5/order/create:spot", at_ms=T0 + 2))
        assert store.record_alert(record(key_id=2, api_key="BBB", at_ms=T0 + 3))
        assert len(store.list_alerts()) == 4

    def test_round_trips_every_field(self, store: Store) -> None:
        """What list_alerts returns equals what was recorded (details as JSON)."""
        stored = record(kind=AlertKind.EXPIRY_SOON, condition="expiry.7d", details={"days": 7})
        store.record_alert(stored)
        assert store.list_alerts() == [stored]

    def test_list_filters_by_key_and_since_and_keeps_newest(self, store: Store) -> None:
        """api_key and since_ms filter; limit keeps the newest, still oldest first."""
        for i in range(4):
            store.record_alert(record(window_ms=DAY + i, at_ms=T0 + i))
        store.record_alert(record(key_id=2, api_key="BBB", at_ms=T0 + 10))
        assert [r.at_ms for r in store.list_alerts(api_key="AAA")] == [T0 + i for i in range(4)]
        assert [r.api_key for r in store.list_alerts(since_ms=T0 + 3)] == ["AAA", "BBB"]
        assert [r.at_ms for r in store.list_alerts(limit=2)] == [T0 + 3, T0 + 10]
        assert store.list_alerts(api_key="ZZZ") == []

    def test_oversized_condition_is_refused(self, store: Store) -> None:
        """A condition longer than its 128-character column: ValueError, nothing stored."""
        with pytest.raises(ValueError, match="condition"):
            store.record_alert(record(condition="x" * 129))
        assert store.list_alerts() == []

    def test_recording_does_not_bump_the_revision(self, store: Store) -> None:
        """Alerts are not key changes: key caches stay valid."""
        before = store.revision()
        store.record_alert(record())
        assert store.revision() == before


class TestRecordAlertRace:
    def test_racing_processes_elect_exactly_one_winner(self, sql_url: str, tmp_path: Path) -> None:
        """8 threads on 2 separate stores (two "nodes") record the same alert: one True."""
        stores = [open_store(sql_url), open_store(sql_url)]
        wins: list[bool] = []
        barrier = threading.Barrier(8)

        def race(i: int) -> None:
            barrier.wait()
            wins.append(stores[i % 2].record_alert(record(at_ms=T0 + i)))

        threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert sorted(wins) == [False] * 7 + [True]
            assert len(stores[0].list_alerts()) == 1
        finally:
            for s in stores:
                s.close()


class TestPurgeAlerts:
    def test_rows_recorded_and_windowed_before_the_cutoff_go(self, store: Store) -> None:
        """purge_alerts(before_ms) deletes day-window rows with at_ms < before_ms, counts
        them, and leaves the rest; a second call finds nothing."""
        for i in range(5):
            store.record_alert(record(window_ms=DAY - i * 86_400_000, at_ms=T0 - i * 86_400_000))
        cutoff = T0 - 2 * 86_400_000 + 1  # rows 2, 3 and 4 days back go
        assert store.purge_alerts(before_ms=cutoff) == 3
        assert store.purge_alerts(before_ms=cutoff) == 0
        assert [r.at_ms for r in store.list_alerts()] == [T0 - 86_400_000, T0]

    def test_expiry_row_stays_until_its_window_is_past_the_cutoff(self, store: Store) -> None:
        """An expiry alert recorded long ago for a key that has not expired yet is kept, so
        the monitor's next sweep still finds it and does not send it again; once the expiry
        is older than the cutoff the row goes and the (key, condition, window) is free."""
        expires = T0 + 86_400_000
        expiry = record(
            kind=AlertKind.EXPIRY_SOON, condition="expiry.14d", window_ms=expires, at_ms=T0 - 13
        )
        assert store.record_alert(expiry)
        assert store.purge_alerts(before_ms=T0) == 0
        assert store.record_alert(replace(expiry, at_ms=T0 + 1)) is False
        assert store.purge_alerts(before_ms=expires + 1) == 1
        assert store.list_alerts() == []
        assert store.record_alert(replace(expiry, at_ms=expires + 2)) is True

    def test_purges_in_batches(self, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        """With 3 rows per transaction, 10 old rows still all go (several batches, an exact
        multiple included) and the new ones stay."""
        monkeypatch.setattr("keyplane.store.sql._ALERT_PURGE_BATCH", 3)
        for i in range(10):
            store.record_alert(record(key_id=10 + i, api_key=f"K{i}", at_ms=T0 - 100 + i))
        store.record_alert(record(at_ms=T0 + 5))
        store.record_alert(record(key_id=2, api_key="BBB", at_ms=T0 + 6))
        assert store.purge_alerts(before_ms=T0 + 1) == 10
        assert [r.api_key for r in store.list_alerts()] == ["AAA", "BBB"]
        for i in range(9):  # exactly three full batches: the loop ends on an empty one
            store.record_alert(record(key_id=30 + i, api_key=f"L{i}", at_ms=T0 - 50 + i))
        assert store.purge_alerts(before_ms=T0 + 1) == 9

    def test_purging_does_not_bump_the_revision(self, store: Store) -> None:
        """Alert rows are not key changes."""
        store.record_alert(record(at_ms=T0 - 10))
        before = store.revision()
        assert store.purge_alerts(before_ms=T0 + 86_400_000 * 2) == 1
        assert store.revision() == before
