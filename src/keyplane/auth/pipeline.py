"""The verification pipeline, a pure function of (request facts, key record, clock reading).

Order (each step raises the typed error named; keyplane.http maps it to the envelope):

1. headers present and well-formed ........ ParameterError 10001 / InvalidApiKeyError 10003
   (keyplane.auth.headers.parse_auth_headers, run before this module)
2. key known and not revoked .............. InvalidApiKeyError 10003
3. timestamp window ....................... TimestampWindowError 10002
4. signature over the raw query or body ... SignatureMismatchError 10004
5. key and account state .................. AuthenticationFailedError 10007 (suspended/frozen)
6. not expired ............................ ApiKeyExpiredError 33004
7. client IP in the key's list ............ UnmatchedIpError 10010
8. permission and readOnly for the route .. PermissionDeniedError 10005 (authorize())

The signature is checked before anything that would reveal key state to someone who holds only
the api key (suspension, expiry, IP binding, permissions).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from keyplane.auth.context import AuthContext
from keyplane.auth.headers import AuthHeaders
from keyplane.errors import (
    ApiKeyExpiredError,
    AuthenticationFailedError,
    InvalidApiKeyError,
    ParameterError,
    PermissionDeniedError,
    SignatureMismatchError,
    TimestampWindowError,
    UnmatchedIpError,
)
from keyplane.keys.model import Account, AccountStatus, ApiKey, KeyStatus
from keyplane.policy import RoutePolicy
from keyplane.signing import string_to_sign, verify_rsa, ws_string_to_sign

__all__ = [
    "FUTURE_TOLERANCE_MS",
    "MAX_RECV_WINDOW_MS",
    "KeyEntry",
    "RsaVerifier",
    "Verifier",
    "authenticate",
    "authenticate_ws",
    "authorize",
    "check_key_state",
    "check_timestamp",
]

#: rule: Bybit V5 guide, a timestamp may be at most 1000 ms ahead of the server.
FUTURE_TOLERANCE_MS = 1000
#: Largest recv_window accepted; pybit widens 5000 -> 7500 -> 10000 on 10002 retries.
MAX_RECV_WINDOW_MS = 60_000
#: most client IPs one KeyEntry remembers as admitted (see KeyEntry.admitted); past it, the
#: checks simply run every time for new IPs.
_MAX_ADMITTED_IPS = 1024


class Verifier(Protocol):
    """Checks a signature over a message for one key: keyplane.signing.HmacKey (HMAC keys) or
    RsaVerifier (RSA keys)."""

    def verify(self, message: bytes, signature: str) -> bool:
        """True when signature is valid for message; never raises."""
        ...


@dataclass(frozen=True, slots=True)
class RsaVerifier:
    """RSASSA-PKCS1-v1_5 SHA-256 (base64) under the key's uploaded public key."""

    public_key: RSAPublicKey = field(repr=False)

    def verify(self, message: bytes, signature: str) -> bool:
        """RSA check (keyplane.signing.verify_rsa)."""
        return verify_rsa(self.public_key, message, signature)


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """A key ready for the hot path: the record, its account and its verifier.

    admitted: client IP -> the AuthContext that passed check_key_state from that IP. Key and
    account are immutable here, so those checks (status, account freeze, IP list) give the same
    answer for the entry's life; only expiry depends on the clock and is checked every time. Any
    change to the key or account brings a new entry (keyplane.auth.cache), hence a fresh memo.
    """

    key: ApiKey
    account: Account
    verifier: Verifier
    admitted: dict[str, AuthContext] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )


def check_timestamp(headers: AuthHeaders, now_ms: int) -> None:
    """Apply the V5 timestamp rule.

    Accept when now_ms - recv_window <= timestamp < now_ms + 1000 (all ms since epoch).
    Raises ParameterError (10001) when recv_window is 0 or above MAX_RECV_WINDOW_MS, and
    TimestampWindowError (10002, both timestamps in retMsg) outside the window.
    rule: Bybit V5 guide, "Authentication for HTTP requests".
    """
    recv_window = headers.recv_window_ms
    if recv_window <= 0 or recv_window > MAX_RECV_WINDOW_MS:
        raise ParameterError(f"recv_window must be between 1 and {MAX_RECV_WINDOW_MS} ms")
    ts = headers.timestamp_ms
    if not (now_ms - recv_window <= ts < now_ms + FUTURE_TOLERANCE_MS):
        raise TimestampWindowError(
            req_timestamp_ms=ts, server_time_ms=now_ms, recv_window_ms=recv_window
        )


def authenticate(
    headers: AuthHeaders,
    payloads: Sequence[bytes],
    entry: KeyEntry | None,
    *,
    client_ip: str,
    now_ms: int,
) -> AuthContext:
    """Run steps 2-7 of the pipeline and return the verified caller.

    payloads: the signed-payload forms to try (raw query, or its percent-decoded form; or the
    raw body). entry: the cached key for headers.api_key, None when unknown.
    Raises InvalidApiKeyError 10003, TimestampWindowError 10002, SignatureMismatchError 10004,
    AuthenticationFailedError 10007, ApiKeyExpiredError 33004, UnmatchedIpError 10010.
    """
    if entry is None or entry.key.status is KeyStatus.REVOKED:
        raise InvalidApiKeyError()
    check_timestamp(headers, now_ms)
    prefix = string_to_sign(headers.timestamp_text, headers.api_key, headers.recv_window_text, b"")
    verify, signature = entry.verifier.verify, headers.signature
    for payload in payloads:
        if verify(prefix + payload, signature):
            break
    else:
        raise SignatureMismatchError()
    return check_key_state(entry, client_ip=client_ip, now_ms=now_ms)


def check_key_state(entry: KeyEntry | None, *, client_ip: str, now_ms: int) -> AuthContext:
    """Steps 2 and 5-7 for an already verified caller: known, not revoked, not suspended, account
    not frozen, not expired, client_ip admitted. Shared by REST, WebSocket auth and the
    re-check of live WebSocket connections after a revocation broadcast. The context that
    passes is remembered per client IP on the entry (KeyEntry.admitted) and handed out again.

    now_ms: ms since epoch. Raises InvalidApiKeyError 10003, AuthenticationFailedError 10007,
    ApiKeyExpiredError 33004, UnmatchedIpError 10010.
    """
    if entry is None or entry.key.status is KeyStatus.REVOKED:
        raise InvalidApiKeyError()
    key = entry.key
    context = entry.admitted.get(client_ip)
    if context is not None:  # state and IP passed for this entry: only expiry can change
        if key.is_expired(now_ms):
            raise ApiKeyExpiredError()
        return context
    account = entry.account
    if key.status is KeyStatus.SUSPENDED or account.status is AccountStatus.FROZEN:
        raise AuthenticationFailedError()
    if key.is_expired(now_ms):
        raise ApiKeyExpiredError()
    if not key.ips.allows(client_ip):
        raise UnmatchedIpError()
    context = AuthContext(key=key, account=account, client_ip=client_ip)
    if len(entry.admitted) < _MAX_ADMITTED_IPS:  # client IPs are caller-chosen (proxies)
        entry.admitted[client_ip] = context
    return context


def authenticate_ws(
    expires: int,
    signature: str,
    entry: KeyEntry | None,
    *,
    client_ip: str,
    now_ms: int,
) -> AuthContext:
    """Verify a WebSocket auth frame {"op": "auth", "args": [apiKey, expires, signature]}.

    expires: int, ms since epoch, must be later than now_ms (Bybit rejects expired auth
    frames). signature: HMAC-SHA256 hex, or RSA PKCS#1 v1.5 SHA-256 base64, over
    "GET/realtime" + str(expires) (keyplane.signing.ws_string_to_sign), checked in constant
    time by the key's verifier. entry: the cached key for apiKey, None when unknown.
    Then the key-state checks of check_key_state. The signature is checked before anything
    that would reveal key state. rule: Bybit V5 "WebSocket Connect", authentication.
    Raises InvalidApiKeyError 10003, ParameterError 10001 (expired `expires`),
    SignatureMismatchError 10004, AuthenticationFailedError 10007, ApiKeyExpiredError 33004,
    UnmatchedIpError 10010.
    """
    if entry is None or entry.key.status is KeyStatus.REVOKED:
        raise InvalidApiKeyError()
    if expires <= now_ms:
        raise ParameterError(
            f"Params Error: auth expires {expires} is not after the server time {now_ms} (ms)"
        )
    if not entry.verifier.verify(ws_string_to_sign(expires), signature):
        raise SignatureMismatchError()
    return check_key_state(entry, client_ip=client_ip, now_ms=now_ms)


def authorize(context: AuthContext, policy: RoutePolicy, category: str | None) -> None:
    """Step 8: readOnly, master-only and permission checks for the route.

    category: the request's `category` parameter where the route has one, else None.
    Raises PermissionDeniedError (10005) with the reasons kept for the audit trail.
    """
    key = context.key
    if policy.write and key.read_only:
        raise PermissionDeniedError(reasons=("read-only key on a write route",))
    if policy.master_only and not context.is_master:
        raise PermissionDeniedError(reasons=("route is for master account keys",))
    required = policy.required_grants(category)
    if required and not key.permissions.has_any(required):
        names = " or ".join(f"{g}:{v}" for g, v in required)
        raise PermissionDeniedError(reasons=(f"missing permission {names}",))
