"""The usage record: what one request through the auth pipeline looked like."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["UsageEvent"]


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """One request that named an api key (passed or refused).

    at_ms: int, ms since epoch. api_key: the X-BAPI-API-KEY sent. key_id / uid: the key's id and
    account when the key exists, else None. method: "GET"/"POST"; path: "/v5/...".
    http_status: int; ret_code: int, the V5 retCode answered (0 = success).
    request_bytes / response_bytes: int, body sizes. latency_us: int, µs inside keyplane.
    client_ip: str, as resolved by keyplane (trusted proxies applied).
    authenticated: bool, the signature verified (the caller holds the secret); False for
    refusals at or before the signature check (10002 timestamp, 10003 key, 10004 signature).
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
