"""Which headers cross the gateway, in each direction (pure functions, no I/O).

Inbound (client -> upstream) keyplane drops every header that claims an identity or belongs to
one connection: all X-BAPI-* (the client's key and signature are keyplane's business only), any
X-Keyplane-* (only keyplane may set those), Authorization, Proxy-Authorization, Cookie,
X-Forwarded-For, X-Real-IP, Forwarded, the hop-by-hop headers of RFC 9110 §7.6.1 (and any header
named in Connection), plus Host, Content-Length and Accept-Encoding, which httpx sets itself.

Generic upstreams then get trusted identity headers (identity_headers):

    X-Keyplane-Uid           the caller's account uid, decimal ("100001")
    X-Keyplane-Key-Id        the caller's api key (the 18-character public key id, as in
                             `keyplane keys list` and audit rows; never the secret)
    X-Keyplane-Permissions   compact JSON in Bybit's permission-groups form, every group present,
                             as GET /v5/user/query-api answers it:
                             {"ContractTrade":["Order","Position"],"Spot":["SpotTrade"],...}
    X-Keyplane-Read-Only     "0" read-write, "1" read-only (Bybit's readOnly)
    X-Keyplane-Client-Ip     the client IP keyplane verified (socket peer or trusted proxy hop)

Public routes carry none of them. An upstream must accept X-Keyplane-* only from keyplane
(bind it to a private network or loopback). Outbound (upstream -> client) keyplane drops the
hop-by-hop headers, Content-Length and Content-Encoding (the body is re-framed, already decoded),
Date and Server (set by keyplane's own server) and Set-Cookie (cookies never cross the gateway).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from keyplane.auth.context import AuthContext

__all__ = [
    "DEFAULT_RECV_WINDOW",
    "client_recv_window",
    "identity_headers",
    "inbound_headers",
    "outbound_headers",
]

#: X-BAPI-RECV-WINDOW sent upstream when the client sent none (Bybit V5 guide default, ms).
DEFAULT_RECV_WINDOW = "5000"

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_INBOUND_DROP = _HOP_BY_HOP | {
    "authorization",
    "cookie",
    "host",
    "content-length",
    "accept-encoding",
    "expect",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
    "forwarded",
}
_INBOUND_DROP_PREFIXES = ("x-bapi-", "x-keyplane-")
_OUTBOUND_DROP = _HOP_BY_HOP | {
    "content-length",
    "content-encoding",
    "date",
    "server",
    "set-cookie",
}


def _connection_tokens(headers: Iterable[tuple[str, str]]) -> set[str]:
    """Header names listed in Connection (they are hop-by-hop too, RFC 9110 §7.6.1)."""
    tokens: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
    return tokens


def inbound_headers(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """The client's ASGI headers (lowercase bytes pairs) that may reach the upstream.

    Returns (name, value) str pairs (latin-1 decoded, order kept) without identity,
    hop-by-hop and framing headers (see the module docstring).
    """
    decoded = [(n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in raw]
    drop = _INBOUND_DROP | _connection_tokens(decoded)
    return [
        (name, value)
        for name, value in decoded
        if name not in drop and not name.startswith(_INBOUND_DROP_PREFIXES)
    ]


def identity_headers(context: AuthContext) -> list[tuple[str, str]]:
    """The trusted X-Keyplane-* headers describing a verified caller (generic upstreams)."""
    key = context.key
    permissions = json.dumps(key.permissions.to_wire(), separators=(",", ":"))
    return [
        ("x-keyplane-uid", str(key.uid)),
        ("x-keyplane-key-id", key.api_key),
        ("x-keyplane-permissions", permissions),
        ("x-keyplane-read-only", "1" if key.read_only else "0"),
        ("x-keyplane-client-ip", context.client_ip),
    ]


def client_recv_window(raw: Iterable[tuple[bytes, bytes]]) -> str:
    """The client's X-BAPI-RECV-WINDOW (decimal ms, 1..6 digits), else "5000"."""
    for name, value in raw:
        if name.lower() == b"x-bapi-recv-window":
            text = value.decode("latin-1").strip()
            if text.isascii() and text.isdigit() and 0 < len(text) <= 6 and int(text) > 0:
                return text
    return DEFAULT_RECV_WINDOW


def outbound_headers(upstream: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """The upstream's response headers that go back to the client, as ASGI (bytes) pairs.

    Keeps everything but hop-by-hop, framing, Date, Server and Set-Cookie; in particular the
    upstream's X-Bapi-Limit* rate-limit headers pass back unchanged.
    """
    pairs = [(n.lower(), v) for n, v in upstream]
    drop = _OUTBOUND_DROP | _connection_tokens(pairs)
    return [
        (name.encode("latin-1"), value.encode("latin-1"))
        for name, value in pairs
        if name not in drop
    ]
