"""Gateway mode: forward checked requests to the upstream over one pooled httpx client.

keyplane's own pipeline (auth, IP guard, rate limits, permissions) has already run in the auth
middleware; a request reaching `Gateway.forward` is allowed. It goes upstream with the same
method, path (appended to the upstream URL's path), query string and body bytes:

- kind "generic": identity headers stripped, trusted X-Keyplane-* added (keyplane.gateway.headers).
- kind "bybit": identity headers stripped, private routes re-signed with the stored exchange
  credentials (keyplane.gateway.credentials); the timestamp comes from the gateway's own clock
  (ms), the recv_window is the client's or 5000, the signed payload is the query string exactly as
  httpx puts it on the wire (GET) or the body bytes (POST). Public routes go without credentials.

The upstream's status, body and headers come back (minus hop-by-hop; keyplane.gateway.headers),
including its retCodes and X-Bapi-Limit* headers. Failures become a V5 envelope with retCode
10016 (HTTP 200, keyplane.http.errors): upstream unreachable, timed out, answering a body that is
not a JSON object with a 2xx/5xx status or a body (any status, counted after content decoding)
longer than max_response_bytes (settings.gateway_max_response_bytes; the body is read as a
stream and reading stops at the cap), or (bybit) no stored credentials. A 4xx answer passes
through as it is (Bybit's 403 IP ban is understood by clients from its status). Logs name the
upstream's host and the failure's type, never a URL's userinfo, a header or a secret.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Literal

import anyio
import httpx
import structlog
from starlette.responses import Response
from starlette.types import Scope

from keyplane.auth.context import AUTH_SCOPE_KEY, AuthContext
from keyplane.clock import Clock, SystemClock
from keyplane.errors import KeyplaneError
from keyplane.gateway.credentials import UpstreamSigner, load_upstream_credentials
from keyplane.gateway.headers import (
    client_recv_window,
    identity_headers,
    inbound_headers,
    outbound_headers,
)
from keyplane.keys.encryption import KeyEncryptionKey
from keyplane.settings import Settings
from keyplane.store.protocol import Store

__all__ = [
    "Gateway",
    "UpstreamError",
    "UpstreamKind",
    "display_upstream",
    "gateway_from_settings",
    "parse_upstream_url",
]

log = structlog.get_logger("keyplane.gateway")

UpstreamKind = Literal["generic", "bybit"]

#: connection pool of the one client per app (httpx "Resource Limits"); idle sockets live 30 s.
_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=30.0)
_NON_ASCII = {b: f"%{b:02X}" for b in range(0x80, 0x100)}


class UpstreamError(KeyplaneError):
    """The upstream could not answer usefully (retCode 10016, HTTP 200; keyplane keeps serving)."""

    default_msg = "Server error: upstream unavailable."


def parse_upstream_url(url: str) -> httpx.URL:
    """The upstream base URL; raises ValueError unless it is http(s)://host, optional port, path.

    A query string or fragment is refused (they would be ambiguous with the forwarded ones).
    """
    try:
        parsed = httpx.URL(url.strip())
    except (httpx.InvalidURL, TypeError) as exc:
        raise ValueError("the upstream URL is not a valid URL") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError("the upstream URL must look like http://host:port or https://host/path")
    if parsed.query or parsed.fragment:
        raise ValueError("the upstream URL must not have a query string or fragment")
    return parsed


def display_upstream(url: httpx.URL) -> str:
    """scheme://host:port/path of the upstream, without userinfo: safe to log and print."""
    port = f":{url.port}" if url.port else ""
    return f"{url.scheme}://{url.host}{port}{url.path.rstrip('/')}"


def _ascii_query(raw: bytes) -> str:
    """The raw query string as ASCII text; stray non-ASCII bytes become %XX (as a browser does)."""
    if raw.isascii():
        return raw.decode("ascii")
    return "".join(chr(b) if b < 0x80 else _NON_ASCII[b] for b in raw)


class Gateway:
    """Forwards requests to one upstream. Use `async with gateway.running():` around serving.

    url: upstream base URL (parse_upstream_url rules). kind: "generic" | "bybit".
    timeout_s: float, seconds, for each of connect, read, write and pool acquisition.
    max_response_bytes: int, bytes; a longer upstream body (after content decoding) is not
    read further and answers 10016 (16 MiB by default, settings.gateway_max_response_bytes).
    store, kek: where the bybit credentials are read from (at start, and again after every
    store revision change: call mark_stale() from the key-cache invalidation listener).
    clock: the upstream-facing clock for X-BAPI-TIMESTAMP (ms); SystemClock by default.
    transport: an httpx transport for tests (None: real network).
    """

    def __init__(
        self,
        *,
        url: str,
        kind: UpstreamKind,
        timeout_s: float,
        max_response_bytes: int = 16 * 1024 * 1024,
        store: Store,
        kek: KeyEncryptionKey,
        clock: Clock | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base = parse_upstream_url(url)
        self.kind = kind
        self.timeout = httpx.Timeout(timeout_s)
        if max_response_bytes < 1:
            raise ValueError("max_response_bytes must be at least 1")
        self.max_response_bytes = max_response_bytes
        self.store = store
        self.kek = kek
        self.clock: Clock = clock or SystemClock()
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._signer: UpstreamSigner | None = None
        self._stale = True
        self._reload_lock = anyio.Lock()
        self.display = display_upstream(self.base)
        self.requests = 0
        self.failures = 0

    def __repr__(self) -> str:
        return f"Gateway({self.display!r}, kind={self.kind!r})"

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Open the pooled client (and, for bybit, read the credentials); close it on exit."""
        async with httpx.AsyncClient(
            timeout=self.timeout,
            limits=_LIMITS,
            transport=self._transport,
            follow_redirects=False,
            trust_env=False,
        ) as client:
            self._client = client
            if self.kind == "bybit":
                with contextlib.suppress(UpstreamError):
                    await self._current_signer()
            try:
                yield
            finally:
                self._client = None

    def mark_stale(self) -> None:
        """Re-read the upstream credentials before the next signed request (store changed)."""
        self._stale = True

    async def _current_signer(self) -> UpstreamSigner:
        """The signer for the stored credentials, re-read when stale.

        Raises UpstreamError (10016) when none are stored or they cannot be read; a failed
        re-read keeps the previous signer (and retries on the next request).
        """
        if self._stale:
            async with self._reload_lock:
                if self._stale:
                    self._stale = False
                    try:
                        self._signer = await anyio.to_thread.run_sync(self._load_signer)
                    except Exception as exc:
                        self._stale = True
                        log.warning("upstream credentials unreadable", error=type(exc).__name__)
                        if self._signer is None:
                            raise UpstreamError(
                                "Server error: upstream credentials unreadable."
                            ) from None
        if self._signer is None:
            raise UpstreamError("Server error: upstream credentials not set.")
        return self._signer

    def _load_signer(self) -> UpstreamSigner | None:
        credentials = load_upstream_credentials(self.store, self.kek)
        return None if credentials is None else UpstreamSigner(credentials)

    def _url(self, path: str, raw_query: bytes) -> httpx.URL:
        base_path = self.base.path.rstrip("/")
        query = _ascii_query(raw_query)
        return self.base.copy_with(path=base_path + path, query=query.encode() or None)

    async def forward(self, scope: Scope, body: bytes) -> Response:
        """Send the request in scope (body: its raw bytes) upstream; return the upstream's reply.

        Raises UpstreamError (10016) as described in the module docstring.
        """
        client = self._client
        if client is None:
            raise UpstreamError()
        method: str = scope["method"]
        url = self._url(scope["path"], scope.get("query_string", b""))
        headers = inbound_headers(scope["headers"])
        context: AuthContext | None = scope.get(AUTH_SCOPE_KEY)
        if context is not None:
            if self.kind == "generic":
                headers += identity_headers(context)
            else:
                signer = await self._current_signer()
                payload = url.query if method == "GET" else body
                signed = signer.headers(
                    timestamp_ms=self.clock.now_ms(),
                    recv_window=client_recv_window(scope["headers"]),
                    payload=payload,
                )
                headers += [(k.lower(), v) for k, v in signed.items()]
        request = client.build_request(method, url, headers=headers, content=body or None)
        self.requests += 1
        try:
            upstream = await client.send(request, stream=True)
            try:
                content = await self._read_body(upstream)
            finally:
                await upstream.aclose()
        except httpx.TimeoutException as exc:
            raise self._failed("Server error: upstream timed out.", exc) from None
        except httpx.HTTPError as exc:
            raise self._failed(UpstreamError.default_msg, exc) from None
        return self._reply(upstream, content)

    async def _read_body(self, upstream: httpx.Response) -> bytes:
        """The upstream's body (content-decoded), read as a stream up to max_response_bytes.

        Raises UpstreamError (10016) as soon as the body is known to be longer: from an
        uncompressed response's Content-Length before reading, else when the bytes read pass
        the cap (reading stops there; the connection is then closed, not reused).
        """
        cap = self.max_response_bytes
        encoding = upstream.headers.get("content-encoding", "identity").strip().lower()
        declared = upstream.headers.get("content-length", "").strip()
        if encoding == "identity" and declared.isdigit() and int(declared) > cap:
            raise self._too_large(upstream.status_code)
        chunks: list[bytes] = []
        size = 0
        async for chunk in upstream.aiter_bytes():
            size += len(chunk)
            if size > cap:
                raise self._too_large(upstream.status_code)
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self, status: int) -> UpstreamError:
        self.failures += 1
        log.warning(
            "upstream answer too large",
            upstream=self.display,
            status=status,
            max_response_bytes=self.max_response_bytes,
        )
        return UpstreamError(
            f"Server error: upstream answer larger than {self.max_response_bytes} bytes "
            f"(gateway_max_response_bytes)."
        )

    def _failed(self, message: str, exc: Exception) -> UpstreamError:
        self.failures += 1
        log.warning("upstream request failed", upstream=self.display, error=type(exc).__name__)
        return UpstreamError(message)

    def _reply(self, upstream: httpx.Response, content: bytes) -> Response:
        status = upstream.status_code
        if not 400 <= status < 500 and not _is_json_object(content):
            self.failures += 1
            log.warning("upstream answered garbage", upstream=self.display, status=status)
            raise UpstreamError("Server error: upstream answered garbage.")
        response = Response(content, status_code=status)
        response.raw_headers.extend(outbound_headers(upstream.headers.multi_items()))
        return response


def _is_json_object(content: bytes) -> bool:
    try:
        return isinstance(json.loads(content), dict)
    except (ValueError, UnicodeDecodeError):
        return False


def gateway_from_settings(
    settings: Settings, store: Store, kek: KeyEncryptionKey
) -> Gateway | None:
    """The Gateway for settings.upstream_url (kind, timeout, response cap from settings), None
    when unset.

    Raises ValueError for a malformed upstream URL.
    """
    if not settings.upstream_url:
        return None
    return Gateway(
        url=settings.upstream_url,
        kind=settings.upstream_kind,
        timeout_s=settings.upstream_timeout_s,
        max_response_bytes=settings.gateway_max_response_bytes,
        store=store,
        kek=kek,
    )
