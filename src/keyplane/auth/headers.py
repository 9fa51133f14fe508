"""Parsing of the X-BAPI-* authentication headers, and of the raw query string.

Rules (Bybit V5 guide, "Authentication for HTTP requests"): X-BAPI-API-KEY, X-BAPI-TIMESTAMP
(ms), X-BAPI-SIGN are required on private routes; X-BAPI-RECV-WINDOW is optional (default
5000 ms). X-BAPI-SIGN-TYPE is ignored: the algorithm comes from the stored key type.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, NoReturn
from urllib.parse import unquote

from keyplane.errors import InvalidApiKeyError, ParameterError

__all__ = [
    "DEFAULT_RECV_WINDOW_MS",
    "AuthHeaders",
    "parse_auth_headers",
    "parse_query",
    "query_sign_candidates",
]

DEFAULT_RECV_WINDOW_MS = 5000

_API_KEY = b"x-bapi-api-key"
_TIMESTAMP = b"x-bapi-timestamp"
_SIGN = b"x-bapi-sign"
_RECV_WINDOW = b"x-bapi-recv-window"
#: the auth headers, in the order parse_auth_headers reads them
_WANTED = (_API_KEY, _TIMESTAMP, _SIGN, _RECV_WINDOW)
_MAX_HEADER_CHARS = 1024


class AuthHeaders(NamedTuple):
    """The auth headers as sent (text), plus their parsed numbers.

    timestamp_ms: int, ms since epoch. recv_window_ms: int, ms (5000 when absent).
    recv_window_text: the header as sent, "" when absent (it is part of the string to sign).
    """

    api_key: str
    timestamp_text: str
    timestamp_ms: int
    signature: str
    recv_window_text: str
    recv_window_ms: int


def _as_int(name: str, text: str) -> int:
    """text (ASCII, stripped) as a non-negative int; raises ParameterError (10001) otherwise."""
    if not text.isdigit() or len(text) > 16:  # decoded as ASCII: isdigit means 0-9 here
        raise ParameterError(f"{name} must be a non-negative integer, got {text[:32]!r}")
    return int(text)


def parse_auth_headers(raw_headers: Sequence[tuple[bytes, bytes]]) -> AuthHeaders:
    """Pick and check the X-BAPI-* headers from ASGI (lowercase name, value) pairs.

    Raises InvalidApiKeyError (10003) when X-BAPI-API-KEY is missing or empty;
    ParameterError (10001) when a header is duplicated, non-ASCII, over 1024 bytes, missing
    (timestamp, sign) or not a number (timestamp, recv_window).
    """
    found = dict(raw_headers)  # one pass in C; a repeated name keeps its last value
    if len(found) < len(raw_headers):  # some name repeats: refused if it is an X-BAPI one
        _refuse_repeated(raw_headers)
    try:
        api_key = found.get(_API_KEY, b"").decode("ascii").strip()
        timestamp_text = found.get(_TIMESTAMP, b"").decode("ascii").strip()
        signature = found.get(_SIGN, b"").decode("ascii").strip()
        recv_window_text = found.get(_RECV_WINDOW, b"").decode("ascii").strip()
    except UnicodeDecodeError:
        _refuse_malformed(found)
    if len(api_key) > _MAX_HEADER_CHARS or len(signature) > _MAX_HEADER_CHARS:
        _refuse_malformed(found)  # (timestamp and recv_window: at most 16 digits, _as_int)
    if not api_key:
        raise InvalidApiKeyError("API key is invalid. (missing X-BAPI-API-KEY header)")
    if not timestamp_text:
        raise ParameterError("missing X-BAPI-TIMESTAMP header")
    if not signature:
        raise ParameterError("missing X-BAPI-SIGN header")
    return AuthHeaders(
        api_key,
        timestamp_text,
        _as_int("X-BAPI-TIMESTAMP", timestamp_text),
        signature,
        recv_window_text,
        _as_int("X-BAPI-RECV-WINDOW", recv_window_text)
        if recv_window_text
        else DEFAULT_RECV_WINDOW_MS,
    )


def _refuse_malformed(found: dict[bytes, bytes]) -> NoReturn:
    """Raise ParameterError (10001) naming the first auth header that is not ASCII or over 1024
    bytes: the careful path, taken when parse_auth_headers' fast one found something wrong."""
    for name in _WANTED:
        value = found.get(name, b"")
        if not value.isascii():
            raise ParameterError(f"{name.decode()} header must be ASCII")
        if len(value) > _MAX_HEADER_CHARS:
            raise ParameterError(f"{name.decode()} header is too long")
    raise ParameterError("malformed X-BAPI header")


def _refuse_repeated(raw_headers: Sequence[tuple[bytes, bytes]]) -> None:
    """Raise ParameterError (10001) when an X-BAPI auth header appears more than once."""
    seen: set[bytes] = set()
    for name, _ in raw_headers:
        if name in _WANTED:
            if name in seen:
                raise ParameterError(f"duplicated header {name.decode()}")
            seen.add(name)


def query_sign_candidates(raw_query: bytes) -> tuple[bytes, ...]:
    """The forms of a GET query string a client may have signed, most likely first.

    pybit and ccxt sign the unencoded "k=v&..." and `requests` then percent-encodes spaces and
    non-ASCII on the wire. So we accept the raw bytes, or their percent-decoded form ("+" stays
    a literal plus, as the clients never encode a space as "+"). Raises ParameterError (10001)
    when the decoded form is not UTF-8.
    """
    if b"%" not in raw_query:
        return (raw_query,)
    try:
        decoded = unquote(raw_query.decode("ascii"), errors="strict").encode("utf-8")
    except UnicodeError as exc:
        raise ParameterError("query string is not valid percent-encoded UTF-8") from exc
    return (raw_query, decoded)


def parse_query(raw_query: bytes) -> dict[str, str]:
    """Parse "a=1&b=x%20y" into {"a": "1", "b": "x y"}; "+" stays literal.

    Raises ParameterError (10001) on a duplicated parameter or non-UTF-8 bytes.
    """
    params: dict[str, str] = {}
    if not raw_query:
        return params
    try:
        text = raw_query.decode("ascii")
    except UnicodeDecodeError:
        try:
            text = raw_query.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ParameterError("query string is not valid UTF-8") from exc
    for part in text.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        try:
            key = unquote(name, errors="strict")
            val = unquote(value, errors="strict")
        except UnicodeError as exc:
            raise ParameterError("query string is not valid percent-encoded UTF-8") from exc
        if key in params:
            raise ParameterError(f"duplicated parameter {key}")
        params[key] = val
    return params
