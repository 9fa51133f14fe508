"""ReplayGuard (keyplane.http.replay) and the TTL rules: what a caller of the request path sees
for a repeat (10014), for every accepted spelling of one signature, and when the store fails."""

from __future__ import annotations

import base64

import pytest

from keyplane.auth.headers import AuthHeaders
from keyplane.auth.pipeline import FUTURE_TOLERANCE_MS, check_timestamp
from keyplane.errors import DuplicateRequestError, KeyplaneError, TimestampWindowError
from keyplane.http.replay import ReplayGuard
from keyplane.keys import ApiKey, IpAllowlist, KeyType, Permissions
from keyplane.replay import (
    CLOCK_SKEW_GRACE_MS,
    MemoryReplayStore,
    canonical_signature,
    http_ttl_ms,
    ws_ttl_ms,
)

pytestmark = pytest.mark.anyio

#: what the signatures below were sent for (method and path)
REQUEST = "GET /v5/account/wallet-balance"

NOW = 1_700_000_000_000
HEX_SIG = "f9567bf613cbbf2d5b55cd1d016a2481db50fa66fbcb8f0fe5657495ba5fb41e"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def guarded_key(key_type: KeyType = KeyType.HMAC, key_id: int = 42) -> ApiKey:
    return ApiKey(
        id=key_id,
        api_key="ABCDEFGHIJKLMNOPQR",
        uid=1,
        key_type=key_type,
        read_only=False,
        permissions=Permissions.parse(""),
        ips=IpAllowlist.parse("*"),
        created_at_ms=NOW,
        expires_at_ms=None,
        replay_guard=True,
    )


class BrokenStore:
    """A store whose every call raises, as Redis does when it is down."""

    async def first_seen(self, key_id: int, signature: str, ttl_ms: int) -> bool:
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    async def ping(self) -> None:
        raise ConnectionError("down")

    async def close(self) -> None:
        pass


class TestTtl:
    """Signatures are remembered at least as long as the timestamp rule accepts them."""

    @pytest.mark.parametrize("recv_window", [1, 5000, 60_000])
    def test_http_ttl_covers_the_last_accepted_instant(self, recv_window: int) -> None:
        """At every instant check_timestamp still accepts the request, the TTL set at its first
        sight has not run out; and it runs out at most 1 ms + the skew grace after that."""
        for ts in (NOW - recv_window, NOW, NOW + FUTURE_TOLERANCE_MS - 1):
            ttl = http_ttl_ms(ts, recv_window, NOW)
            last_accepted = ts + recv_window
            headers = AuthHeaders("K", str(ts), ts, "s", str(recv_window), recv_window)
            check_timestamp(headers, last_accepted)  # still accepted then
            with pytest.raises(TimestampWindowError):
                check_timestamp(headers, last_accepted + 1)
            assert NOW + ttl > last_accepted  # remembered at the last accepted instant
            assert NOW + ttl == last_accepted + 1 + CLOCK_SKEW_GRACE_MS

    def test_http_ttl_never_below_one_ms(self) -> None:
        """A timestamp already outside the window (cannot happen after check_timestamp) still
        gives a TTL of at least 1 ms."""
        assert http_ttl_ms(NOW - 10_000, 5000, NOW) >= 1

    def test_ws_ttl_runs_until_expires(self) -> None:
        """An auth frame accepted at now with expires 10 s ahead: remembered 10 s (+ grace)."""
        assert ws_ttl_ms(NOW + 10_000, NOW) == 10_000 + CLOCK_SKEW_GRACE_MS
        assert ws_ttl_ms(NOW + 1, NOW) == 1 + CLOCK_SKEW_GRACE_MS


class TestCanonicalSignature:
    """Every spelling the verifier accepts is one entry in the store."""

    def test_hmac_any_case_is_one_signature(self) -> None:
        assert canonical_signature(KeyType.HMAC, HEX_SIG.upper()) == HEX_SIG
        assert canonical_signature(KeyType.HMAC, HEX_SIG) == HEX_SIG

    def test_rsa_unused_trailing_bits_are_one_signature(self) -> None:
        """256 signature bytes end in "x==": the 4 unused bits of x may differ in base64."""
        raw = bytes(range(256))
        canonical = base64.b64encode(raw).decode()
        assert canonical.endswith("==")
        sloppy = canonical[:-3] + chr(ord(canonical[-3]) + 1) + "=="
        assert base64.b64decode(sloppy, validate=True) == raw
        assert sloppy != canonical
        assert canonical_signature(KeyType.RSA, sloppy) == canonical


class TestReplayGuard:
    """10014 for a repeat; the fail policy when the store is down."""

    async def test_repeat_is_refused_with_10014(self) -> None:
        """First use passes; the same signature again raises DuplicateRequestError (10014)."""
        guard = ReplayGuard(MemoryReplayStore())
        key = guarded_key()
        await guard.check(key, REQUEST, HEX_SIG, 6000, write=False)
        with pytest.raises(DuplicateRequestError) as refused:
            await guard.check(key, REQUEST, HEX_SIG, 6000, write=False)
        assert (refused.value.ret_code, refused.value.ret_msg) == (
            10014,
            "Invalid duplicate request.",
        )
        assert guard.outcomes == {"passed": 1, "refused": 1}

    async def test_uppercase_replay_is_refused(self) -> None:
        """The verifier accepts an HMAC signature in upper case: as a replay it is refused."""
        guard = ReplayGuard(MemoryReplayStore())
        await guard.check(guarded_key(), REQUEST, HEX_SIG, 6000, write=True)
        with pytest.raises(DuplicateRequestError):
            await guard.check(guarded_key(), REQUEST, HEX_SIG.upper(), 6000, write=True)

    async def test_other_key_same_signature_passes(self) -> None:
        guard = ReplayGuard(MemoryReplayStore())
        await guard.check(guarded_key(key_id=1), REQUEST, HEX_SIG, 6000, write=False)
        await guard.check(guarded_key(key_id=2), REQUEST, HEX_SIG, 6000, write=False)

    async def test_store_down_reads_pass_writes_10016_by_default(self) -> None:
        """Default policy: a read passes (failed_open), a write gets 10016 (failed_closed);
        neither message names the store's error or the signature."""
        guard = ReplayGuard(BrokenStore())
        await guard.check(guarded_key(), REQUEST, HEX_SIG, 6000, write=False)
        with pytest.raises(KeyplaneError) as refused:
            await guard.check(guarded_key(), REQUEST, HEX_SIG, 6000, write=True)
        assert refused.value.ret_code == 10016
        assert HEX_SIG not in refused.value.ret_msg
        assert "6379" not in refused.value.ret_msg
        assert guard.outcomes == {"failed_open": 1, "failed_closed": 1}

    async def test_policy_is_configurable(self) -> None:
        """fail_open_reads=False refuses reads; fail_open_writes=True lets writes through."""
        guard = ReplayGuard(BrokenStore(), fail_open_reads=False, fail_open_writes=True)
        await guard.check(guarded_key(), REQUEST, HEX_SIG, 6000, write=True)
        with pytest.raises(KeyplaneError) as refused:
            await guard.check(guarded_key(), REQUEST, HEX_SIG, 6000, write=False)
        assert refused.value.ret_code == 10016

    async def test_full_memory_store_follows_the_fail_policy(self) -> None:
        """A full in-memory store is a store failure: read passes, write 10016, counted."""
        store = MemoryReplayStore(max_entries=1)
        guard = ReplayGuard(store)
        await guard.check(guarded_key(), REQUEST, "aa", 6000, write=False)
        await guard.check(guarded_key(), REQUEST, "bb", 6000, write=False)
        with pytest.raises(KeyplaneError):
            await guard.check(guarded_key(), REQUEST, "cc", 6000, write=True)
        assert guard.outcomes == {"passed": 1, "failed_open": 1, "failed_closed": 1}
