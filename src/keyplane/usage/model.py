"""The usage record: what one request through the auth pipeline looked like."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

__all__ = [
    "KeyNetwork",
    "UsageBy",
    "UsageEvent",
    "UsageFields",
    "UsageSummaryRow",
    "percentile_rank",
]

#: a UsageEvent's fields before row_id, in declaration order: what the auth middleware emits
#: (a plain tuple is the cheapest thing to make on the hot path).
UsageFields = tuple[int, str, int | None, int | None, str, str, int, int, int, int, int, str, bool]

#: how `keyplane usage` groups rows: by "METHOD /path" or by "<http status>/<retCode>".
UsageBy = Literal["endpoint", "status"]


class UsageEvent(NamedTuple):
    """One request that named an api key (passed or refused); an immutable named tuple, in
    usage_log's column order, so the store can hand it to COPY as it is.

    at_ms: int, ms since epoch. api_key: the X-BAPI-API-KEY sent. key_id / uid: the key's id and
    account when the key exists, else None. method: "GET"/"POST"; path: "/v5/...".
    http_status: int; ret_code: int, the V5 retCode answered (0 = success).
    request_bytes / response_bytes: int, body sizes. latency_us: int, µs inside keyplane.
    client_ip: str, as resolved by keyplane (trusted proxies applied).
    authenticated: bool, the signature verified (the caller holds the secret); False for
    refusals at or before the signature check (10002 timestamp, 10003 key, 10004 signature).
    row_id: str, unique per row across nodes ("<node id>-<sequence>", at most 64 characters),
    assigned by the usage writer ("" until then); stores skip a row_id they already hold, so a
    replayed spill file never counts a request twice. No field ever holds a secret or signature.
    """

    at_ms: int
    api_key: str
    key_id: int | None
    uid: int | None
    method: str
    path: str
    http_status: int
    ret_code: int
    request_bytes: int
    response_bytes: int
    latency_us: int
    client_ip: str
    authenticated: bool
    row_id: str = ""


@dataclass(frozen=True, slots=True)
class UsageSummaryRow:
    """One group of `Store.usage_summary`.

    group: "GET /v5/account/wallet-balance" (by endpoint) or "200/10003" (by status: HTTP
    status / retCode). requests: rows in the group. errors: rows with retCode != 0 or HTTP
    status >= 400. avg_latency_us / max_latency_us: int µs (average rounded down).
    p50_latency_us / p99_latency_us: int µs, nearest-rank percentiles (the latency of the
    ceil(p/100 × requests)-th fastest request).
    """

    group: str
    requests: int
    errors: int
    avg_latency_us: int
    max_latency_us: int
    p50_latency_us: int
    p99_latency_us: int


def percentile_rank(pct: int, count: int) -> int:
    """The 1-based nearest rank of the pct-th percentile (0 < pct <= 100) among count values:
    ceil(pct/100 × count), at least 1."""
    return max(1, (pct * count + 99) // 100)


@dataclass(frozen=True, slots=True)
class KeyNetwork:
    """A source network a key's authenticated requests came from (the anomaly rules' history,
    shared by every node through the store).

    key_id: int. network: str, IPv4 /24 or IPv6 /48 as CIDR text ("203.0.113.0/24").
    first_seen_ms / last_seen_ms: int, ms since epoch. requests: int, requests counted from it
    (as a delta when written: the store adds it to what it holds).
    """

    key_id: int
    network: str
    first_seen_ms: int
    last_seen_ms: int
    requests: int
