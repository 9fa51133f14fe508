"""The replay guard on the request path: a key with replay_guard on gets 10014 for a signature
it already used inside that signature's time window (keyplane.replay).

Asked right after the signature verified (REST: keyplane.http.middleware; WebSocket auth:
keyplane.ws.hub), only for keys with the flag, so other keys pay one attribute check. When the
store fails (Redis down, memory store full) the decision is explicit and counted, with the rate
limiter's settings (keyplane.http.limits): by default reads pass (fail open) and writes get
retCode 10016 (fail closed), through keyplane.http.limits.backend_failed. Log lines name the
outcome and the error type, never a signature.
"""

from __future__ import annotations

from collections import Counter

from keyplane.errors import DuplicateRequestError
from keyplane.http.limits import backend_failed
from keyplane.keys.model import ApiKey
from keyplane.replay import MemoryReplayStore, ReplayStore, canonical_signature

__all__ = ["ReplayGuard"]


class ReplayGuard:
    """Applies one ReplayStore with a fail policy.

    store: the ReplayStore (MemoryReplayStore by default: one node). fail_open_reads /
    fail_open_writes: what to do when the store raises. outcomes: Counter for metrics, keys
    "passed", "refused", "failed_open", "failed_closed".
    """

    def __init__(
        self,
        store: ReplayStore | None = None,
        *,
        fail_open_reads: bool = True,
        fail_open_writes: bool = False,
    ) -> None:
        self.store: ReplayStore = store if store is not None else MemoryReplayStore()
        self.fail_open_reads = fail_open_reads
        self.fail_open_writes = fail_open_writes
        self.outcomes: Counter[str] = Counter()

    async def check(
        self, key: ApiKey, request: str, signature: str, ttl_ms: int, *, write: bool
    ) -> None:
        """Admit the first use of key's (verified) signature for request, remembered for ttl_ms
        (int ms, keyplane.replay.http_ttl_ms / ws_ttl_ms); write: the request changes state.

        request: what the signature was sent for, "GET /v5/account/info" (REST: method and
        path) or "ws private" (a WebSocket channel's auth frame). Bybit V5 does not sign the
        path, so two requests to different endpoints with the same timestamp and parameters
        carry the same signature; ccxt's is_unified_enabled sends /v5/user/query-api and
        /v5/account/info that way within one millisecond. Keyed on the signature alone the
        guard refused the second as a duplicate; keyed on (request, signature) it refuses only
        a copy sent to the same endpoint. The price: within its window a captured signature can
        still be sent once to each other endpoint that takes the same parameters.

        Raises DuplicateRequestError (10014) for a repeat, KeyplaneError (10016) when the store
        failed and the policy for this kind of request is fail closed.
        """
        canonical = f"{request} {canonical_signature(key.key_type, signature)}"
        try:
            first = await self.store.first_seen(key.id, canonical, ttl_ms)
        except Exception as exc:  # store down or full: the configured, counted choice
            fail_open = self.fail_open_writes if write else self.fail_open_reads
            backend_failed(exc, fail_open=fail_open, outcomes=self.outcomes, what="replay guard")
            return
        if not first:
            self.outcomes["refused"] += 1
            raise DuplicateRequestError()
        self.outcomes["passed"] += 1
