"""The auth middleware: raw ASGI on the hot path.

For every HTTP request: route lookup (10017 / HTTP 404), method check (HTTP 400), body read with
a size cap (HTTP 413, before the body is read whole), then for private routes the pipeline of
keyplane.auth (headers, key cache, timestamp, signature, state, expiry, IP, permission), then
parameter parsing. The verified AuthContext and the parsed params go into the ASGI scope for the
route handlers. Every failure leaves as the V5 envelope; no traceback leaves the process.
"""

from __future__ import annotations

import ipaddress
import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

import anyio
import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyplane.auth.cache import KeyCache
from keyplane.auth.context import AUTH_SCOPE_KEY, PARAMS_SCOPE_KEY
from keyplane.auth.headers import parse_auth_headers, parse_query, query_sign_candidates
from keyplane.auth.pipeline import authenticate, authorize
from keyplane.clock import Clock
from keyplane.errors import KeyplaneError, ParameterError, RateLimitedError, RouteNotFoundError
from keyplane.http.envelope import envelope_bytes
from keyplane.http.errors import BodyTooLargeError, MethodNotAllowedError, http_status_for
from keyplane.http.limits import RequestLimits, limit_headers
from keyplane.http.usage import LastUsedRecorder
from keyplane.policy import find_route
from keyplane.ratelimit import Decision

__all__ = ["AuthMiddleware", "client_ip_of"]

log = structlog.get_logger("keyplane.http")

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_PASS_THROUGH = frozenset({"/healthz", "/readyz", "/metrics"})


def client_ip_of(scope: Scope, trusted: Sequence[_Network]) -> str:
    """The client IP: the socket peer, or (only when the peer is a trusted proxy) the right-most
    X-Forwarded-For entry that is not itself a trusted proxy."""
    client = scope.get("client")
    peer = client[0] if client else ""
    if not trusted or not _in(peer, trusted):
        return str(peer)
    forwarded: list[str] = []
    for name, value in scope["headers"]:
        if name == b"x-forwarded-for":
            forwarded.extend(p.strip() for p in value.decode("latin-1").split(","))
    for hop in reversed(forwarded):
        if hop and not _in(hop, trusted):
            return hop
    return str(peer)


def _in(ip: str, networks: Sequence[_Network]) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr.version == n.version and addr in n for n in networks)


def _parse_json_body(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ParameterError("request body is not valid UTF-8") from exc
    except json.JSONDecodeError as exc:
        raise ParameterError(f"request body is not valid JSON: {exc.msg}") from exc
    if not isinstance(data, dict):
        raise ParameterError("request body must be a JSON object")
    return data


class AuthMiddleware:
    """Raw ASGI middleware that authenticates and authorises every V5 request."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        cache: KeyCache,
        clock: Clock,
        last_used: LastUsedRecorder,
        limits: RequestLimits,
        max_body_bytes: int,
        trusted_proxies: Sequence[str] = (),
        auth_outcomes: Counter[int] | None = None,
        upstream_limit_headers: bool = False,
    ) -> None:
        self.app = app
        self.cache = cache
        self.clock = clock
        self.last_used = last_used
        self.limits = limits
        self.max_body_bytes = max_body_bytes
        self.trusted = tuple(ipaddress.ip_network(p, strict=False) for p in trusted_proxies)
        self.auth_outcomes: Counter[int] = Counter() if auth_outcomes is None else auth_outcomes
        # gateway mode: a response may already carry the upstream's X-Bapi-Limit* (they win)
        self.upstream_limit_headers = upstream_limit_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _PASS_THROUGH:
            await self.app(scope, receive, send)
            return
        started = False
        decision: Decision | None = None

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                # the app's own X-Bapi-Limit* win (gateway mode, kind bybit: the upstream's)
                if decision is not None and not (
                    self.upstream_limit_headers and _has_limit_headers(message["headers"])
                ):
                    message = {
                        **message,
                        "headers": [*message["headers"], *limit_headers(decision)],
                    }
            await send(message)

        try:
            replay, decision = await self._admit(scope, receive)
            await self.app(scope, replay, tracking_send)
        except KeyplaneError as exc:
            if not started:
                await self._send_error(send, exc, decision)
        except Exception:  # the last guard: log it, answer 10016, keep serving
            log.exception("unhandled error", path=scope.get("path"))
            if not started:
                await self._send_error(send, KeyplaneError(), decision)

    async def _admit(self, scope: Scope, receive: Receive) -> tuple[Receive, Decision | None]:
        """Check the request; returns the receive() for the app and the key's limit decision."""
        method = scope["method"]
        client_ip = client_ip_of(scope, self.trusted)
        limits = self.limits
        if limits.ip_rate is not None:
            await limits.check_ip(client_ip, self.clock.now_ms())
        if method not in ("GET", "POST"):
            raise MethodNotAllowedError()
        policy = find_route(method, scope["path"])
        if policy is None:
            raise RouteNotFoundError()
        read = await self._read_body(scope, receive)
        body = read or b""
        raw_query: bytes = scope.get("query_string", b"")
        decision: Decision | None = None
        if policy.public:
            params = parse_query(raw_query) if method == "GET" else _parse_json_body(body)
        else:
            try:
                headers = parse_auth_headers(scope["headers"])
                found, entry = self.cache.peek(headers.api_key)
                if not found:
                    entry = await anyio.to_thread.run_sync(self.cache.load, headers.api_key)
                get = method == "GET"
                payloads = query_sign_candidates(raw_query) if get else (body,)
                now = self.clock.now_ms()
                context = authenticate(headers, payloads, entry, client_ip=client_ip, now_ms=now)
                params = parse_query(raw_query) if get else _parse_json_body(body)
                raw_category = params.get("category")
                category = raw_category if isinstance(raw_category, str) else None
                authorize(context, policy, category)
                if limits.in_process:
                    decision = limits.check_key_now(context, policy, category, now)
                else:
                    decision = await limits.check_key(context, policy, category, now)
            except KeyplaneError as exc:
                self.auth_outcomes[exc.ret_code] += 1
                raise
            self.auth_outcomes[0] += 1
            self.last_used.mark(context.key.id, now)
            scope[AUTH_SCOPE_KEY] = context
        scope[PARAMS_SCOPE_KEY] = params
        return (receive if read is None else _replay(read, receive)), decision

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The whole body, capped at max_body_bytes; None when the request declares none.

        A request without Content-Length or Transfer-Encoding has no body (RFC 9112 §6.3), so
        the common GET costs no receive() round trip.
        """
        declared: int | None = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError as exc:
                    raise ParameterError("invalid Content-Length header") from exc
                if declared > self.max_body_bytes:
                    raise BodyTooLargeError()
            elif name == b"transfer-encoding":
                chunked = True
        if not chunked and not declared:
            return None
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ParameterError("client disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise BodyTooLargeError()
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)

    async def _send_error(
        self, send: Send, exc: KeyplaneError, decision: Decision | None = None
    ) -> None:
        body = envelope_bytes(
            None, now_ms=self.clock.now_ms(), ret_code=exc.ret_code, ret_msg=exc.ret_msg
        )
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        if isinstance(exc, RateLimitedError):
            decision = Decision(False, exc.limit, 0, exc.reset_at_ms)
        if decision is not None:
            headers += limit_headers(decision)
        await send(
            {"type": "http.response.start", "status": http_status_for(exc), "headers": headers}
        )
        await send({"type": "http.response.body", "body": body})


def _has_limit_headers(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    """True when a response already carries an X-Bapi-Limit* header (then keyplane adds none)."""
    return any(name.lower().startswith(b"x-bapi-limit") for name, _ in headers)


def _replay(body: bytes, upstream: Receive) -> Receive:
    """A receive() that hands the already-read body over once, then defers to the server."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await upstream()

    return receive
