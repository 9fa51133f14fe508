"""The network history view: what it loads, what it writes back, and what a store outage does."""

from __future__ import annotations

from keyplane.anomaly.history import MAX_NETWORKS_PER_KEY, NetworkHistory
from keyplane.store import MemoryStore
from keyplane.usage import KeyNetwork, UsageEvent

T0 = 1_700_000_000_000
HOME, OFFICE = "10.0.0.0/24", "10.9.9.0/24"


def seen(ip: str, at_ms: int = T0, key_id: int = 7, *, ok: bool = True) -> UsageEvent:
    return UsageEvent(at_ms, "KEY", key_id, 100001, "GET", "/v5/x", 200, 0, 0, 10, 5, ip, ok)


def teach(history: NetworkHistory, event: UsageEvent) -> None:
    network = history.network_of(event.client_ip)
    assert network is not None
    history.add(event, network)


class TestNetworkHistory:
    def test_unloaded_keys_and_unknown_networks_are_asked_of_the_store(self) -> None:
        """A key never loaded is loaded; once loaded, only a network the view lacks re-reads it;
        refused requests never do."""
        history = NetworkHistory()
        assert history.to_load([seen("10.0.0.5"), seen("8.8.8.8", ok=False)]) == {7}
        history.merge({7: [KeyNetwork(7, HOME, T0, T0, 3)]})
        assert history.to_load([seen("10.0.0.9")]) == set()
        assert history.to_load([seen("10.9.9.1")]) == {7}
        assert history.known(7, HOME)
        assert history.has_history(7)
        assert history.requests(7) == 3

    def test_new_networks_are_written_at_once_counts_on_the_flush_interval(self) -> None:
        store = MemoryStore()
        history = NetworkHistory(flush_ms=10_000)
        history.merge(store.load_key_networks([7]))
        teach(history, seen("10.0.0.5", T0))
        writes = history.take_writes(T0)
        assert writes == [KeyNetwork(7, HOME, T0, T0, 1)]
        store.record_key_networks(writes)
        history.written(writes)
        teach(history, seen("10.0.0.6", T0 + 5))
        assert history.take_writes(T0 + 5) == []  # an old network: wait for the interval
        assert history.requests(7) == 2  # the view counts it meanwhile
        later = history.take_writes(T0 + 10_000)
        assert later == [KeyNetwork(7, HOME, T0 + 5, T0 + 5, 1)]
        store.record_key_networks(later)
        history.written(later)
        assert store.load_key_networks([7])[7] == [KeyNetwork(7, HOME, T0, T0 + 5, 2)]
        assert history.requests(7) == 2

    def test_refused_writes_are_kept_and_retried(self) -> None:
        history = NetworkHistory()
        teach(history, seen("10.9.9.1"))
        writes = history.take_writes(T0)
        history.unwritten(writes)
        assert history.known(7, OFFICE)  # still known while the store is down
        assert history.take_writes(T0 + 1) == writes  # and written on the next chance

    def test_memory_is_bounded_per_key(self) -> None:
        history = NetworkHistory()
        rows = [KeyNetwork(7, f"10.{i // 256}.{i % 256}.0/24", T0, T0 + i, 1) for i in range(2000)]
        history.merge({7: rows})
        assert history.requests(7) == MAX_NETWORKS_PER_KEY
        assert history.known(7, rows[-1].network)
        assert not history.known(7, rows[0].network)
