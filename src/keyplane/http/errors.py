"""The one table that maps keyplane errors to (HTTP status, retCode, retMsg).

HTTP 200 for every retCode reply (pybit fails at once on any non-200 and retries 10002/10006 only
inside a 200); 404 for unknown routes; 400 for methods other than GET/POST; 413 for a body over
the size limit. Source: DESIGN.md §3 "Envelope and errors".
"""

from __future__ import annotations

from keyplane.errors import KeyplaneError, ParameterError, RateLimitedError, RouteNotFoundError

__all__ = [
    "BodyTooLargeError",
    "IpRateLimitedError",
    "MethodNotAllowedError",
    "http_status_for",
]


class MethodNotAllowedError(ParameterError):
    """A method other than GET or POST (retCode 10001, HTTP 400)."""

    default_msg = "Request method not supported; use GET or POST."


class BodyTooLargeError(ParameterError):
    """A request body over the configured limit (retCode 10001, HTTP 413)."""

    default_msg = "Request body too large."


class IpRateLimitedError(RateLimitedError):
    """Too many requests from one client IP (retCode 10006, HTTP 403, like Bybit's IP guard)."""

    default_msg = "Too many visits from this IP. Access denied temporarily."


_STATUS: dict[type[KeyplaneError], int] = {
    RouteNotFoundError: 404,
    MethodNotAllowedError: 400,
    BodyTooLargeError: 413,
    IpRateLimitedError: 403,
}


def http_status_for(error: KeyplaneError) -> int:
    """The HTTP status carrying this error's envelope (200 unless listed above)."""
    for cls in type(error).__mro__:
        status = _STATUS.get(cls)
        if status is not None:
            return status
    return 200
