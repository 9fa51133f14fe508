"""Network history per key: where a key's authenticated requests came from, on every node.

The network rules (keyplane.anomaly.rules: NewNetwork, SensitiveCallFromNewNetwork) ask it
whether a request's network is new for its key. A history kept per node would be wrong twice
over with several nodes: a withdrawal through node A from the key's usual network, whose
history only node B holds, would look "new" (a false suspension), and one from an attacker's
network through a node that never saw the key would not be flagged at all. So the history lives
in the store (table key_networks), and each node holds a view of it:

- load: a key this node has not seen yet is loaded from the store before its events are
  observed (the guard does it off the event loop, one query for the whole tick);
- refresh: an event from a network the view does not know re-reads the key first (another node
  may have seen the network a moment ago); new networks are rare, so this costs little;
- write: the networks and request counts observed here are written back (keyplane.store
  record_key_networks, an upsert that adds counts): new networks in the same tick, counts and
  last sightings every flush_ms.

If the store cannot be read, the view works on what it has (and retries the load next tick);
if it cannot be written, the writes are kept and retried. Networks: IPv4 /24, IPv6 /48.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from keyplane.usage.model import KeyNetwork, UsageEvent

__all__ = ["MAX_NETWORKS_PER_KEY", "NetworkHistory", "network_of"]

#: networks remembered per key (the least recently seen are forgotten first).
MAX_NETWORKS_PER_KEY = 1024
#: client IPs whose network is cached (parsing an address costs microseconds).
_IP_CACHE_MAX = 65_536


def network_of(ip: str) -> str | None:
    """The /24 (IPv4) or /48 (IPv6) containing ip, as CIDR text; None for unparsable input."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    prefix = 24 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))


@dataclass(slots=True)
class _Seen:
    """One network of one key: first and last sighting (ms) and requests."""

    first_ms: int
    last_ms: int
    requests: int


@dataclass(slots=True)
class _Key:
    """A key's view: the stored networks as last loaded, plus what this node saw since (not yet
    written). loaded: the store was read for this key at least once."""

    stored: dict[str, _Seen] = field(default_factory=dict)
    local: dict[str, _Seen] = field(default_factory=dict)
    loaded: bool = False


class NetworkHistory:
    """The node's view of every key's network history (see the module docstring).

    flush_ms: int, ms between writes of request counts when no new network forces one.
    Use from one task (the anomaly guard's tick: to_load -> store read -> merge -> rules and
    add -> take_writes -> store write -> written or unwritten); the store calls run in a worker
    thread on values passed in and out, never on this object.
    """

    def __init__(self, *, flush_ms: int = 10_000) -> None:
        self.flush_ms = flush_ms
        self._keys: dict[int, _Key] = {}
        self._ip_networks: dict[str, str | None] = {}
        self._new_network_waiting = False
        self._last_flush_ms = 0

    def __repr__(self) -> str:
        return f"NetworkHistory(keys={len(self._keys)})"

    # --- what the rules ask ---------------------------------------------------------------
    def network_of(self, ip: str) -> str | None:
        """network_of(ip), cached per IP text."""
        cache = self._ip_networks
        try:
            return cache[ip]
        except KeyError:
            pass
        if len(cache) >= _IP_CACHE_MAX:
            cache.clear()
        network = cache[ip] = network_of(ip)
        return network

    def known(self, key_id: int, network: str) -> bool:
        """True when the key has been seen from network (on any node, as far as this view
        knows)."""
        key = self._keys.get(key_id)
        return key is not None and (network in key.local or network in key.stored)

    def has_history(self, key_id: int) -> bool:
        """True when the key has been seen from at least one network."""
        key = self._keys.get(key_id)
        return key is not None and bool(key.local or key.stored)

    def requests(self, key_id: int) -> int:
        """Authenticated requests counted for the key, over every network."""
        key = self._keys.get(key_id)
        if key is None:
            return 0
        return sum(s.requests for s in key.stored.values()) + sum(
            s.requests for s in key.local.values()
        )

    def first_ms(self, key_id: int) -> int | None:
        """The key's first sighting from any network (ms since epoch), None when never seen."""
        key = self._keys.get(key_id)
        if key is None:
            return None
        firsts = [s.first_ms for s in (*key.stored.values(), *key.local.values())]
        return min(firsts) if firsts else None

    # --- what the detector and the guard do ------------------------------------------------
    def add(self, event: UsageEvent, network: str) -> None:
        """Count one authenticated event of event.key_id from network (at event.at_ms)."""
        key_id = event.key_id
        if key_id is None:
            return
        key = self._keys.get(key_id)
        if key is None:
            key = self._keys[key_id] = _Key()
        seen = key.local.get(network)
        if seen is None:
            if network not in key.stored:
                self._new_network_waiting = True
            key.local[network] = _Seen(event.at_ms, event.at_ms, 1)
        else:
            seen.requests += 1
            seen.last_ms = max(seen.last_ms, event.at_ms)

    def to_load(self, events: Iterable[UsageEvent]) -> set[int]:
        """Key ids of authenticated events that should be read from the store first: keys this
        view never loaded, and keys seen here from a network the view does not know."""
        wanted: set[int] = set()
        for event in events:
            key_id = event.key_id
            if key_id is None or not event.authenticated or key_id in wanted:
                continue
            key = self._keys.get(key_id)
            if key is None or not key.loaded:
                wanted.add(key_id)
                continue
            network = self.network_of(event.client_ip)
            if network is not None and not self.known(key_id, network):
                wanted.add(key_id)
        return wanted

    def merge(self, loaded: Mapping[int, Sequence[KeyNetwork]]) -> None:
        """Replace the stored part of each loaded key with what the store holds now (rows by
        last_seen_ms ascending; the most recent MAX_NETWORKS_PER_KEY are kept)."""
        for key_id, rows in loaded.items():
            key = self._keys.get(key_id)
            if key is None:
                key = self._keys[key_id] = _Key()
            key.stored = {
                r.network: _Seen(r.first_seen_ms, r.last_seen_ms, r.requests)
                for r in rows[-MAX_NETWORKS_PER_KEY:]
            }
            key.loaded = True

    def take_writes(self, now_ms: int) -> list[KeyNetwork]:
        """What this node saw and has not written, as deltas for Store.record_key_networks; []
        unless a new network waits or flush_ms passed since the last write. The caller hands
        the list back to written() or, when the write failed, to unwritten()."""
        if not self._new_network_waiting and now_ms - self._last_flush_ms < self.flush_ms:
            return []
        self._new_network_waiting = False
        self._last_flush_ms = now_ms
        writes: list[KeyNetwork] = []
        for key_id, key in self._keys.items():
            for network, seen in key.local.items():
                writes.append(
                    KeyNetwork(key_id, network, seen.first_ms, seen.last_ms, seen.requests)
                )
            key.local = {}
        return writes

    def written(self, writes: Sequence[KeyNetwork]) -> None:
        """The store took writes: fold them into the stored part of the view (bounded)."""
        for row in writes:
            key = self._keys.get(row.key_id)
            if key is None:
                continue
            _fold(key.stored, row)
            while len(key.stored) > MAX_NETWORKS_PER_KEY:
                del key.stored[next(iter(key.stored))]

    def unwritten(self, writes: Sequence[KeyNetwork]) -> None:
        """The store refused writes: keep them for the next take_writes()."""
        for row in writes:
            key = self._keys.get(row.key_id)
            if key is None:
                key = self._keys[row.key_id] = _Key()
            _fold(key.local, row)
        self._new_network_waiting = True


def _fold(into: dict[str, _Seen], row: KeyNetwork) -> None:
    """Add row's sightings to into[row.network], which moves to the end (most recent)."""
    seen = into.pop(row.network, None)
    if seen is None:
        seen = _Seen(row.first_seen_ms, row.last_seen_ms, row.requests)
    else:
        seen.first_ms = min(seen.first_ms, row.first_seen_ms)
        seen.last_ms = max(seen.last_ms, row.last_seen_ms)
        seen.requests += row.requests
    into[row.network] = seen
