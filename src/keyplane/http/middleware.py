"""The auth middleware: raw ASGI on the hot path.

For every HTTP request: route lookup (10017 / HTTP 404), method check (HTTP 400), for POST the
body read with a size cap (HTTP 413, before the body is read whole; a GET's parameters are its
query string and its body is never read), then for private routes the pipeline of
keyplane.auth (headers, key cache, timestamp, signature, state, expiry, IP), the replay guard
for keys that have it (10014, keyplane.http.replay), permission, then parameter parsing. The
verified AuthContext and the parsed params go into the ASGI scope for the route handlers. Every
failure leaves as the V5 envelope; no traceback leaves the process.

With a usage sink, every request that named an api key on a private route (passed or refused)
yields one usage row after its response is sent: the sink gets the UsageFields tuple (one
deque append, no I/O on the request path) and builds the UsageEvent off the request path.
"""

from __future__ import annotations

import ipaddress
import json
import time
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
from keyplane.http.replay import ReplayGuard
from keyplane.http.usage import LastUsedRecorder, UsageSink, ret_code_of
from keyplane.policy import find_route
from keyplane.ratelimit import Decision
from keyplane.replay import http_ttl_ms
from keyplane.store.memory import MAX_API_KEY_LENGTH

__all__ = ["AuthMiddleware", "client_ip_of"]

log = structlog.get_logger("keyplane.http")

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_PASS_THROUGH = frozenset({"/healthz", "/readyz", "/metrics"})
#: scope key of the _UsageFacts of a private request, filled by _admit while the pipeline runs.
_USAGE_SCOPE_KEY = "keyplane.usage"
#: retCodes of refusals at or before the signature check (the caller is not known to hold the
#: secret): usage rows with authenticated=False.
_UNVERIFIED = frozenset({10001, 10002, 10003, 10004})


class _UsageFacts:
    """What a usage row needs from admission; at_ms is 0 until the clock was read."""

    __slots__ = ("api_key", "at_ms", "authenticated", "client_ip", "key_id", "request_bytes", "uid")

    def __init__(self, api_key: str, request_bytes: int, client_ip: str) -> None:
        self.api_key = api_key[:MAX_API_KEY_LENGTH]
        self.request_bytes = request_bytes
        self.client_ip = client_ip
        self.key_id: int | None = None
        self.uid: int | None = None
        self.authenticated = False
        self.at_ms = 0


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
        last_used: LastUsedRecorder | None,
        limits: RequestLimits,
        max_body_bytes: int,
        trusted_proxies: Sequence[str] = (),
        auth_outcomes: Counter[int] | None = None,
        upstream_limit_headers: bool = False,
        usage: UsageSink | None = None,
        replay: ReplayGuard | None = None,
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
        # None: no usage log. last_used None: the usage writer sets lastUsedAt from the stream
        self.usage = usage
        # keys with replay_guard on: 10014 for a signature seen before (in-memory by default)
        self.replay = replay if replay is not None else ReplayGuard()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _PASS_THROUGH:
            await self.app(scope, receive, send)
            return
        usage = self.usage
        started_ns = time.perf_counter_ns() if usage is not None else 0
        started = False
        decision: Decision | None = None
        # what was answered (read only with the usage log): HTTP status, body bytes, retCode
        status = sent_bytes = 0
        ret_code = -1

        async def tracking_send(message: Message) -> None:
            nonlocal started, status, sent_bytes, ret_code
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                # the app's own X-Bapi-Limit* win (gateway mode, kind bybit: the upstream's)
                if decision is not None and not (
                    self.upstream_limit_headers and _has_limit_headers(message["headers"])
                ):  # a new list: the app's own header list is left as it was
                    message["headers"] = [*message["headers"], *limit_headers(decision)]
            elif usage is not None:
                body = message.get("body", b"")
                if not sent_bytes and body:
                    ret_code = ret_code_of(body)
                sent_bytes += len(body)
            await send(message)

        try:
            replay, decision = await self._admit(scope, receive)
            await self.app(scope, replay, tracking_send)
        except KeyplaneError as exc:
            if not started:
                status, sent_bytes = await self._send_error(send, exc, decision)
                ret_code = exc.ret_code
        except Exception:  # the last guard: log it, answer 10016, keep serving
            log.exception("unhandled error", path=scope.get("path"))
            if not started:
                fault = KeyplaneError()
                status, sent_bytes = await self._send_error(send, fault, decision)
                ret_code = fault.ret_code
        finally:
            facts: _UsageFacts | None = scope.get(_USAGE_SCOPE_KEY) if usage is not None else None
            if facts is not None and usage is not None:
                # UsageFields order (keyplane.usage.model); the writer builds the UsageEvent
                usage.emit(
                    (
                        facts.at_ms or self.clock.now_ms(),
                        facts.api_key,
                        facts.key_id,
                        facts.uid,
                        scope["method"],
                        scope["path"],
                        status,
                        ret_code,
                        facts.request_bytes,
                        sent_bytes,
                        (time.perf_counter_ns() - started_ns) // 1000,
                        facts.client_ip,
                        facts.authenticated,
                    )
                )

    async def _admit(self, scope: Scope, receive: Receive) -> tuple[Receive, Decision | None]:
        """Check the request; returns the receive() for the app and the key's limit decision."""
        method = scope["method"]
        client_ip = client_ip_of(scope, self.trusted)
        limits = self.limits
        if limits.ip_rate is not None:
            if limits.in_process:
                limits.check_ip_now(client_ip, self.clock.now_ms())
            else:
                await limits.check_ip(client_ip, self.clock.now_ms())
        if method not in ("GET", "POST"):
            raise MethodNotAllowedError()
        policy = find_route(method, scope["path"])
        if policy is None:
            raise RouteNotFoundError()
        # V5 GET parameters are the query string (the signed payload): a GET body is never read
        read = await self._read_body(scope, receive) if method == "POST" else None
        body = read or b""
        raw_query: bytes = scope.get("query_string", b"")
        decision: Decision | None = None
        if policy.public:
            params = parse_query(raw_query) if method == "GET" else _parse_json_body(body)
        else:
            facts: _UsageFacts | None = None
            try:
                headers = parse_auth_headers(scope["headers"])
                if self.usage is not None:
                    facts = _UsageFacts(headers.api_key, len(body), client_ip)
                    scope[_USAGE_SCOPE_KEY] = facts
                found, entry = self.cache.peek(headers.api_key)
                if not found:
                    entry = await anyio.to_thread.run_sync(self.cache.load, headers.api_key)
                get = method == "GET"
                payloads = query_sign_candidates(raw_query) if get else (body,)
                now = self.clock.now_ms()
                if facts is not None:
                    facts.at_ms = now
                    if entry is not None:
                        facts.key_id, facts.uid = entry.key.id, entry.key.uid
                context = authenticate(headers, payloads, entry, client_ip=client_ip, now_ms=now)
                if facts is not None:
                    facts.authenticated = True  # the signature verified
                if context.key.replay_guard:  # 10014 for a signature seen inside its window
                    ttl = http_ttl_ms(headers.timestamp_ms, headers.recv_window_ms, now)
                    request = f"{method} {scope['path']}"
                    await self.replay.check(
                        context.key, request, headers.signature, ttl, write=policy.write
                    )
                params = parse_query(raw_query) if get else _parse_json_body(body)
                raw_category = params.get("category")
                category = raw_category if isinstance(raw_category, str) else None
                authorize(context, policy, category)
                if limits.in_process:
                    decision = limits.check_key_now(context, policy, category, now)
                else:
                    decision = await limits.check_key(context, policy, category, now)
                if context.key.daily_quota is not None:  # keys without a quota: this check only
                    await limits.check_quota(context, policy, now)
            except KeyplaneError as exc:
                self.auth_outcomes[exc.ret_code] += 1
                if facts is not None and facts.key_id is not None:
                    # refused inside authenticate() after the signature verified (10007, ...)
                    facts.authenticated = facts.authenticated or exc.ret_code not in _UNVERIFIED
                raise
            self.auth_outcomes[0] += 1
            if self.last_used is not None:
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
    ) -> tuple[int, int]:
        """Answer exc as a V5 envelope; returns (HTTP status, body bytes) for the usage log."""
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
        status = http_status_for(exc)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return status, len(body)


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
