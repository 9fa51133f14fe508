"""One exception tree for keyplane; every class carries its Bybit V5 retCode.

    KeyplaneError                      retCode 10016  Server error.
    ├── ParameterError                 10001  Request parameter error.
    ├── TimestampWindowError           10002  The request time exceeds the time window range.
    ├── InvalidApiKeyError             10003  API key is invalid.
    ├── SignatureMismatchError         10004  Error sign, please check your signature ...
    ├── PermissionDeniedError          10005  Permission denied, please check your API key ...
    ├── RateLimitedError               10006  Too many visits. Exceeded the API Rate Limit.
    ├── AuthenticationFailedError      10007  User authentication failed.
    ├── UnmatchedIpError               10010  Unmatched IP, please check your API key's bound IP ...
    ├── DuplicateRequestError          10014  Invalid duplicate request.
    ├── RouteNotFoundError             10017  Route not found.
    ├── ApiKeyExpiredError             33004  Your api key has expired
    ├── NotFoundError                  (admin side: account/key missing; 10001 on the wire)
    └── InsufficientBalanceError       110007 (demo venue)

Source: Bybit V5 "Error codes" page. The mapping to HTTP status lives in keyplane.http.errors.
Messages never contain a secret: callers pass only public facts (key ids, timestamps).
"""

from __future__ import annotations

__all__ = [
    "ApiKeyExpiredError",
    "AuthenticationFailedError",
    "DuplicateRequestError",
    "InsufficientBalanceError",
    "InvalidApiKeyError",
    "KeyplaneError",
    "NotFoundError",
    "ParameterError",
    "PermissionDeniedError",
    "RateLimitedError",
    "RouteNotFoundError",
    "SignatureMismatchError",
    "TimestampWindowError",
    "UnmatchedIpError",
]


class KeyplaneError(Exception):
    """Root of every keyplane error; ret_code/ret_msg are what the client sees."""

    ret_code: int = 10016
    default_msg: str = "Server error."

    def __init__(self, ret_msg: str | None = None) -> None:
        self.ret_msg = ret_msg if ret_msg is not None else self.default_msg
        super().__init__(self.ret_msg)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(ret_code={self.ret_code}, ret_msg={self.ret_msg!r})"


class ParameterError(KeyplaneError):
    """Malformed parameters, bad JSON, non-numeric timestamp (retCode 10001)."""

    ret_code = 10001
    default_msg = "Request parameter error."


class TimestampWindowError(KeyplaneError):
    """Timestamp outside [server - recv_window, server + 1000) (retCode 10002).

    rule: Bybit V5 guide, "server_time - recv_window <= timestamp < server_time + 1000".
    """

    ret_code = 10002

    def __init__(self, *, req_timestamp_ms: int, server_time_ms: int, recv_window_ms: int) -> None:
        self.req_timestamp_ms = req_timestamp_ms
        self.server_time_ms = server_time_ms
        self.recv_window_ms = recv_window_ms
        super().__init__(
            "invalid request, please check your server timestamp or recv_window param. "
            f"req_timestamp[{req_timestamp_ms}],server_timestamp[{server_time_ms}],"
            f"recv_window[{recv_window_ms}]"
        )


class InvalidApiKeyError(KeyplaneError):
    """Unknown, deleted or revoked api key (retCode 10003)."""

    ret_code = 10003
    default_msg = "API key is invalid."


class SignatureMismatchError(KeyplaneError):
    """X-BAPI-SIGN does not match the string to sign (retCode 10004)."""

    ret_code = 10004
    default_msg = "Error sign, please check your signature generation algorithm."


class PermissionDeniedError(KeyplaneError):
    """Missing permission, or read-only key on a write route (retCode 10005).

    reasons: tuple[str, ...], kept for the audit trail; the client sees only ret_msg.
    """

    ret_code = 10005
    default_msg = "Permission denied, please check your API key permissions."

    def __init__(self, ret_msg: str | None = None, *, reasons: tuple[str, ...] = ()) -> None:
        self.reasons = reasons
        super().__init__(ret_msg)


class RateLimitedError(KeyplaneError):
    """Per-key rate limit exceeded (retCode 10006); reset_at_ms: int, ms since epoch."""

    ret_code = 10006
    default_msg = "Too many visits. Exceeded the API Rate Limit."

    def __init__(self, *, reset_at_ms: int, limit: int) -> None:
        self.reset_at_ms = reset_at_ms
        self.limit = limit
        super().__init__()


class AuthenticationFailedError(KeyplaneError):
    """Suspended key or frozen account (retCode 10007)."""

    ret_code = 10007
    default_msg = "User authentication failed."


class UnmatchedIpError(KeyplaneError):
    """Client IP not in the key's bound IP list (retCode 10010)."""

    ret_code = 10010
    default_msg = "Unmatched IP, please check your API key's bound IP addresses."


class DuplicateRequestError(KeyplaneError):
    """Replay of an already-seen signature (retCode 10014)."""

    ret_code = 10014
    default_msg = "Invalid duplicate request."


class RouteNotFoundError(KeyplaneError):
    """Unknown path (retCode 10017, HTTP 404)."""

    ret_code = 10017
    default_msg = "Route not found."


class ApiKeyExpiredError(KeyplaneError):
    """Key is past its expiredAt (retCode 33004)."""

    ret_code = 33004
    default_msg = "Your api key has expired"


class NotFoundError(ParameterError):
    """An account or key named by an operator or a request does not exist (retCode 10001)."""


class InsufficientBalanceError(KeyplaneError):
    """Demo venue: not enough available balance (retCode 110007, as Bybit's order API)."""

    ret_code = 110007
    default_msg = "Insufficient available balance."
