"""The verification pipeline as a pure function: each step's retCode and the order of steps."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyplane.auth.headers import parse_auth_headers, parse_query, query_sign_candidates
from keyplane.auth.pipeline import KeyEntry, authenticate, authorize
from keyplane.errors import (
    ApiKeyExpiredError,
    AuthenticationFailedError,
    InvalidApiKeyError,
    KeyplaneError,
    ParameterError,
    PermissionDeniedError,
    SignatureMismatchError,
    TimestampWindowError,
    UnmatchedIpError,
)
from keyplane.keys import (
    Account,
    AccountStatus,
    ApiKey,
    IpAllowlist,
    KeyStatus,
    KeyType,
    Permissions,
)
from keyplane.policy import find_route
from keyplane.secret import Secret
from keyplane.signing import HmacKey, sign_hmac, string_to_sign

NOW = 1_700_000_000_000
SECRET = "s" * 36
API_KEY = "K" * 18


def make_entry(**changes: object) -> KeyEntry:
    key = ApiKey(
        id=1,
        api_key=API_KEY,
        uid=100001,
        key_type=KeyType.HMAC,
        read_only=False,
        permissions=Permissions.parse("Spot:SpotTrade"),
        ips=IpAllowlist(),
        created_at_ms=NOW - 1000,
        expires_at_ms=NOW + 10_000,
    ).with_changes(**changes)
    account = Account(uid=100001, parent_uid=None, created_at_ms=NOW - 5000)
    return KeyEntry(key=key, account=account, verifier=HmacKey(Secret(SECRET)))


def headers(
    payload: bytes = b"", *, ts: int = NOW, rw: str = "5000", sign: str | None = None
) -> list[tuple[bytes, bytes]]:
    sig = sign or sign_hmac(SECRET, string_to_sign(str(ts), API_KEY, rw, payload))
    return [
        (b"x-bapi-api-key", API_KEY.encode()),
        (b"x-bapi-timestamp", str(ts).encode()),
        (b"x-bapi-sign", sig.encode()),
        (b"x-bapi-recv-window", rw.encode()),
        (b"x-bapi-sign-type", b"2"),
    ]


def run(
    raw_headers: list[tuple[bytes, bytes]],
    entry: KeyEntry | None,
    *,
    ip: str = "127.0.0.1",
    payload: bytes = b"",
    now: int = NOW,
) -> None:
    authenticate(parse_auth_headers(raw_headers), (payload,), entry, client_ip=ip, now_ms=now)


class TestHeaders:
    def test_missing_api_key_is_10003(self) -> None:
        """No X-BAPI-API-KEY -> retCode 10003."""
        with pytest.raises(InvalidApiKeyError):
            parse_auth_headers(headers()[1:])

    @pytest.mark.parametrize("drop", [b"x-bapi-timestamp", b"x-bapi-sign"])
    def test_missing_timestamp_or_sign_is_10001(self, drop: bytes) -> None:
        """No timestamp or signature -> retCode 10001 naming the header."""
        with pytest.raises(ParameterError, match=drop.decode().upper()):
            parse_auth_headers([h for h in headers() if h[0] != drop])

    def test_duplicated_header_is_10001(self) -> None:
        """A repeated auth header is ambiguous -> 10001."""
        with pytest.raises(ParameterError, match="duplicated"):
            parse_auth_headers([*headers(), (b"x-bapi-sign", b"abc")])

    def test_repeated_other_header_is_fine(self) -> None:
        """Only the auth headers must be unique: a repeated Accept does not matter."""
        raw = [(b"accept", b"*/*"), *headers(), (b"accept", b"application/json")]
        assert parse_auth_headers(raw) == parse_auth_headers(headers())

    @pytest.mark.parametrize("bad", [b"abc", b"-5", b"1.5e12", b"\xff"])
    def test_non_numeric_timestamp_is_10001(self, bad: bytes) -> None:
        """Timestamp must be decimal digits."""
        raw = [h if h[0] != b"x-bapi-timestamp" else (h[0], bad) for h in headers()]
        with pytest.raises(ParameterError):
            parse_auth_headers(raw)

    def test_recv_window_defaults_to_5000(self) -> None:
        """Without X-BAPI-RECV-WINDOW the window is 5000 ms and the string to sign has ''."""
        parsed = parse_auth_headers([h for h in headers() if h[0] != b"x-bapi-recv-window"])
        assert parsed.recv_window_ms == 5000
        assert parsed.recv_window_text == ""

    @given(
        st.lists(
            st.tuples(
                st.sampled_from(
                    [
                        b"x-bapi-api-key",
                        b"x-bapi-timestamp",
                        b"x-bapi-sign",
                        b"x-bapi-recv-window",
                        b"x",
                    ]
                ),
                st.binary(max_size=40),
            ),
            max_size=8,
        )
    )
    def test_random_headers_raise_only_keyplane_errors(
        self, raw: list[tuple[bytes, bytes]]
    ) -> None:
        """Any header soup either parses or raises a typed KeyplaneError."""
        with contextlib.suppress(KeyplaneError):
            parse_auth_headers(raw)

    @given(st.binary(max_size=80))
    def test_random_query_raise_only_keyplane_errors(self, raw: bytes) -> None:
        """Any query bytes either parse or raise a typed KeyplaneError."""
        try:
            query_sign_candidates(raw)
            parse_query(raw)
        except KeyplaneError:
            pass


class TestQuery:
    def test_percent_encoded_form_offers_decoded_candidate(self) -> None:
        """Clients sign 'a=x y'; requests sends 'a=x%20y': both forms are candidates."""
        assert query_sign_candidates(b"a=x%20y") == (b"a=x%20y", b"a=x y")
        assert parse_query(b"a=x%20y&b=1+2") == {"a": "x y", "b": "1+2"}

    def test_duplicate_parameter_is_10001(self) -> None:
        """a=1&a=2 is refused rather than guessed."""
        with pytest.raises(ParameterError):
            parse_query(b"a=1&a=2")


class TestPipelineOrder:
    def test_valid_request_passes(self) -> None:
        """A correctly signed request yields the caller's context."""
        ctx = authenticate(
            parse_auth_headers(headers()), (b"",), make_entry(), client_ip="127.0.0.1", now_ms=NOW
        )
        assert ctx.uid == 100001

    def test_unknown_and_revoked_keys_are_10003(self) -> None:
        """Unknown or revoked keys -> 10003, before the signature is looked at."""
        with pytest.raises(InvalidApiKeyError):
            run(headers(sign="00"), None)
        with pytest.raises(InvalidApiKeyError):
            run(headers(sign="00"), make_entry(status=KeyStatus.REVOKED))

    @pytest.mark.parametrize(
        ("ts", "ok"),
        [(NOW - 5000, True), (NOW - 5001, False), (NOW + 999, True), (NOW + 1000, False)],
    )
    def test_timestamp_window_edges(self, ts: int, ok: bool) -> None:
        """server - recv_window <= ts < server + 1000 (Bybit V5 rule)."""
        if ok:
            run(headers(ts=ts), make_entry())
        else:
            with pytest.raises(TimestampWindowError) as info:
                run(headers(ts=ts), make_entry())
            assert str(ts) in info.value.ret_msg
            assert str(NOW) in info.value.ret_msg

    def test_wider_recv_window_admits_older_requests(self) -> None:
        """pybit's retry with recv_window 7500 is accepted for a 6 s old timestamp."""
        run(headers(ts=NOW - 6000, rw="7500"), make_entry())

    def test_bad_signature_is_10004_before_state(self) -> None:
        """A wrong signature on a suspended, expired, IP-bound key is still just 10004."""
        entry = make_entry(
            status=KeyStatus.SUSPENDED, expires_at_ms=NOW - 1, ips=IpAllowlist.parse("10.0.0.1")
        )
        with pytest.raises(SignatureMismatchError):
            run(headers(sign="0" * 64), entry)

    def test_suspended_is_10007(self) -> None:
        """A suspended key with a good signature -> 10007."""
        with pytest.raises(AuthenticationFailedError):
            run(headers(), make_entry(status=KeyStatus.SUSPENDED))

    def test_frozen_account_is_10007(self) -> None:
        """A frozen account's key -> 10007."""
        entry = make_entry()
        frozen = KeyEntry(
            entry.key, Account(100001, None, 0, status=AccountStatus.FROZEN), entry.verifier
        )
        with pytest.raises(AuthenticationFailedError):
            run(headers(), frozen)

    def test_expired_is_33004(self) -> None:
        """At expiredAt the key stops working with 33004."""
        with pytest.raises(ApiKeyExpiredError):
            run(headers(), make_entry(expires_at_ms=NOW))

    @pytest.mark.parametrize(
        ("ips", "client", "ok"),
        [
            ("10.0.0.0/8", "10.2.3.4", True),
            ("10.0.0.0/8", "11.2.3.4", False),
            ("2001:db8::/32", "2001:db8::1", True),
            ("2001:db8::/32", "2001:db9::1", False),
            ("127.0.0.1", "::ffff:127.0.0.1", True),
            ("127.0.0.1", "not-an-ip", False),
        ],
    )
    def test_ip_binding(self, ips: str, client: str, ok: bool) -> None:
        """Bound keys accept only listed IPs/CIDRs (IPv4, IPv6, v4-mapped) -> else 10010."""
        entry = make_entry(ips=IpAllowlist.parse(ips), expires_at_ms=None)
        if ok:
            run(headers(), entry, ip=client)
        else:
            with pytest.raises(UnmatchedIpError):
                run(headers(), entry, ip=client)

    def test_admitted_entry_still_expires_and_checks_each_new_ip(self) -> None:
        """A key admitted before (its context remembered on the entry) still gets 33004 once
        its expiry passes, and 10010 from an IP outside its list."""
        entry = make_entry(ips=IpAllowlist.parse("10.0.0.0/8"), expires_at_ms=NOW + 5000)
        run(headers(), entry, ip="10.2.3.4")
        run(headers(ts=NOW + 1000), entry, ip="10.2.3.4", now=NOW + 1000)  # remembered: passes
        with pytest.raises(UnmatchedIpError):
            run(headers(ts=NOW + 1000), entry, ip="11.2.3.4", now=NOW + 1000)
        with pytest.raises(ApiKeyExpiredError):
            run(headers(ts=NOW + 5000), entry, ip="10.2.3.4", now=NOW + 5000)


class TestAuthorize:
    def _ctx(self, **changes: object):  # type: ignore[no-untyped-def]
        return authenticate(
            parse_auth_headers(headers()),
            (b"",),
            make_entry(**changes),
            client_ip="127.0.0.1",
            now_ms=NOW,
        )

    def test_read_only_key_refused_on_write(self) -> None:
        """readOnly=1 on POST /v5/order/create -> 10005."""
        policy = find_route("POST", "/v5/order/create")
        assert policy is not None
        with pytest.raises(PermissionDeniedError):
            authorize(self._ctx(read_only=True), policy, "spot")

    def test_permission_by_category(self) -> None:
        """Spot:SpotTrade allows spot orders but not linear ones."""
        policy = find_route("POST", "/v5/order/create")
        assert policy is not None
        ctx = self._ctx()
        authorize(ctx, policy, "spot")
        with pytest.raises(PermissionDeniedError):
            authorize(ctx, policy, "linear")

    def test_withdraw_needs_wallet_withdraw(self) -> None:
        """Withdrawals need Wallet:Withdraw."""
        policy = find_route("POST", "/v5/asset/withdraw/create")
        assert policy is not None
        with pytest.raises(PermissionDeniedError):
            authorize(self._ctx(), policy, None)
        authorize(self._ctx(permissions=Permissions.parse("Wallet:Withdraw")), policy, None)
