"""The WebSocket hub: live connections, their keys and topics, pushes and revocation.

One hub per app (app.state.ws_hub). It
- authenticates auth frames through the key cache and keyplane.auth.pipeline.authenticate_ws,
  capping authenticated connections per api key (settings.ws_max_connections_per_key);
- delivers venue events (keyplane.venue.events, published on any thread) to the subscribed
  private connections of the account, on the event loop;
- re-checks every authenticated connection's key whenever the key cache is invalidated
  (revocation broadcast, revision poll, local write) and closes the ones whose key is revoked,
  suspended, expired, whose account is frozen or whose IP binding no longer admits the client.
  One re-check pass runs at a time; invalidations during a pass cause one more pass. When the
  store cannot be read, connections are kept and the next invalidation tries again.

Each connection writes through one queue drained by one sender task, so replies and pushes
keep their order and never interleave.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import uuid
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from starlette.websockets import WebSocket

from keyplane.auth.cache import KeyCache
from keyplane.auth.context import AuthContext
from keyplane.auth.pipeline import KeyEntry, authenticate_ws, check_key_state
from keyplane.clock import Clock
from keyplane.errors import KeyplaneError
from keyplane.http.middleware import client_ip_of
from keyplane.http.replay import ReplayGuard
from keyplane.replay import ws_ttl_ms
from keyplane.venue.events import VenueEvent
from keyplane.ws.protocol import ProtocolError, parse_auth_args, push

__all__ = ["CLOSE_POLICY", "Connection", "WsHub"]

log = structlog.get_logger("keyplane.ws")

#: WebSocket close code sent when a key stops being valid (RFC 6455: policy violation).
CLOSE_POLICY = 1008
#: messages queued for one connection before it is closed as too slow.
_QUEUE_SIZE = 1000


class Connection:
    """One WebSocket connection: its id, client IP, channel ("private" or "trade"), the
    verified caller once authenticated, and its topics (private channel)."""

    def __init__(self, conn_id: str, client_ip: str, channel: str) -> None:
        self.conn_id = conn_id
        self.client_ip = client_ip
        self.channel = channel
        self.context: AuthContext | None = None
        self.topics: dict[str, None] = {}
        self.closed_because: tuple[int, str] | None = None
        self.scope: anyio.CancelScope | None = None
        self._out: MemoryObjectSendStream[dict[str, Any] | None]
        self._in: MemoryObjectReceiveStream[dict[str, Any] | None]
        self._out, self._in = anyio.create_memory_object_stream[dict[str, Any] | None](_QUEUE_SIZE)

    def __repr__(self) -> str:
        return f"Connection({self.conn_id!r}, {self.channel!r}, authenticated={self.is_authed})"

    @property
    def is_authed(self) -> bool:
        """True once an auth frame was accepted."""
        return self.context is not None

    def send(self, message: dict[str, Any]) -> None:
        """Queue message (a JSON object) for the client; call on the event loop. A client that
        lets _QUEUE_SIZE messages pile up is closed."""
        if self.closed_because is not None:
            return
        try:
            self._out.send_nowait(message)
        except anyio.WouldBlock:
            self.close("too many messages queued: the client reads too slowly")
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass

    def close(self, reason: str, code: int = CLOSE_POLICY) -> None:
        """Close after the queued messages (call on the event loop); reason is sent in the
        close frame and must hold nothing secret."""
        if self.closed_because is not None:
            return
        self.closed_because = (code, reason[:120])
        try:
            self._out.send_nowait(None)
        except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
            if self.scope is not None:
                self.scope.cancel()

    async def run_sender(self, websocket: WebSocket) -> None:
        """Write queued messages in order; on close() send the close frame and stop the
        connection (cancels self.scope). A vanished client also stops it."""
        try:
            async with self._in:
                async for message in self._in:
                    if message is None:
                        break
                    await websocket.send_text(json.dumps(message, separators=(",", ":")))
            if self.closed_because is not None:
                code, reason = self.closed_because
                await websocket.close(code, reason)
        except Exception:  # the client went away mid-send: nothing more to write
            log.debug("websocket send failed", conn_id=self.conn_id, exc_info=True)
        if self.scope is not None:
            self.scope.cancel()


class WsHub:
    """Connections of one app. cache: the app's KeyCache; clock: its Clock;
    trusted_proxies: IPs/CIDRs whose X-Forwarded-For is believed (as for REST);
    max_connections_per_key: authenticated connections one api key may hold at once;
    replay: the app's ReplayGuard (keys with replay_guard on: a repeated auth signature before
    its `expires` is refused with 10014; in-memory when not given);
    auth_timeout_s: seconds a connection may stay open without a successful auth before it is
    told so and closed (settings.ws_auth_timeout_s; the endpoints in keyplane.ws.routes run
    the timer)."""

    def __init__(
        self,
        cache: KeyCache,
        clock: Clock,
        *,
        trusted_proxies: Sequence[str] = (),
        max_connections_per_key: int = 20,
        replay: ReplayGuard | None = None,
        auth_timeout_s: float = 30.0,
    ) -> None:
        self.cache = cache
        self.clock = clock
        self.trusted = tuple(ipaddress.ip_network(p, strict=False) for p in trusted_proxies)
        self.max_connections_per_key = max_connections_per_key
        self.replay = replay if replay is not None else ReplayGuard()
        self.auth_timeout_s = auth_timeout_s
        self._connections: dict[str, Connection] = {}
        self._by_uid: dict[int, set[Connection]] = defaultdict(set)
        self._by_key: dict[str, set[Connection]] = defaultdict(set)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._recheck_task: asyncio.Task[None] | None = None
        self._recheck_wanted = False
        self.rechecks = 0

    # -- connection lifecycle ----------------------------------------------------------------

    def count(self) -> int:
        """Open WebSocket connections (the keyplane_websocket_connections gauge)."""
        return len(self._connections)

    def open(self, websocket: WebSocket, channel: str) -> Connection:
        """Register a freshly accepted connection; call on the event loop."""
        self._loop = asyncio.get_running_loop()
        conn = Connection(
            uuid.uuid4().hex[:20], client_ip_of(websocket.scope, self.trusted), channel
        )
        self._connections[conn.conn_id] = conn
        return conn

    def discard(self, conn: Connection) -> None:
        """Forget a finished connection."""
        self._connections.pop(conn.conn_id, None)
        if conn.context is not None:
            self._by_uid[conn.context.uid].discard(conn)
            if not self._by_uid[conn.context.uid]:
                del self._by_uid[conn.context.uid]
            self._by_key[conn.context.key.api_key].discard(conn)
            if not self._by_key[conn.context.key.api_key]:
                del self._by_key[conn.context.key.api_key]

    async def authenticate(self, conn: Connection, args: list[Any]) -> AuthContext:
        """Verify an auth frame's args [apiKey, expires, signature] for conn and mark it
        authenticated. Raises ProtocolError (malformed args, repeat auth, per-key cap) or the
        pipeline's KeyplaneError (10003, 10001 expired, 10004, 10007, 33004, 10010), and with
        the key's replay guard DuplicateRequestError 10014 for an auth signature already used
        (the replay store down: the private channel fails open for reads, /v5/trade closed
        for writes, 10016, by the limiter's settings)."""
        if conn.is_authed:
            raise ProtocolError("error:repeat auth: this connection is already authenticated")
        api_key, expires, signature = parse_auth_args(args)
        found, entry = self.cache.peek(api_key)
        if not found:
            entry = await anyio.to_thread.run_sync(self.cache.load, api_key)
        now_ms = self.clock.now_ms()
        context = authenticate_ws(
            expires, signature, entry, client_ip=conn.client_ip, now_ms=now_ms
        )
        if context.key.replay_guard:
            ttl = ws_ttl_ms(expires, now_ms)
            request = f"ws {conn.channel}"
            await self.replay.check(
                context.key, request, signature, ttl, write=conn.channel == "trade"
            )
        if len(self._by_key.get(api_key, ())) >= self.max_connections_per_key:
            raise ProtocolError(
                f"error:too many connections: this api key already holds "
                f"{self.max_connections_per_key} authenticated WebSocket connections "
                f"(ws_max_connections_per_key)"
            )
        if conn.closed_because is not None or conn.conn_id not in self._connections:
            raise ProtocolError("error:connection is closing")
        conn.context = context
        self._by_uid[context.uid].add(conn)
        self._by_key[api_key].add(conn)
        return context

    # -- venue events ------------------------------------------------------------------------

    def on_venue_events(self, uid: int, events: Sequence[VenueEvent]) -> None:
        """keyplane.venue.events listener: hand uid's events to the event loop (any thread)."""
        loop = self._loop
        if loop is None or uid not in self._by_uid:
            return
        with contextlib.suppress(RuntimeError):  # a closed loop: the app has stopped
            loop.call_soon_threadsafe(self._deliver, uid, tuple(events))

    def _deliver(self, uid: int, events: tuple[VenueEvent, ...]) -> None:
        conns = [c for c in self._by_uid.get(uid, ()) if c.topics]
        if not conns:
            return
        by_topic: dict[str, list[dict[str, Any]]] = {}
        for event in events:
            item = event.to_wire()
            by_topic.setdefault(event.topic, []).append(item)
            if event.category:
                by_topic.setdefault(f"{event.topic}.{event.category}", []).append(item)
        now_ms = self.clock.now_ms()
        for topic, data in by_topic.items():
            message = push(topic, uuid.uuid4().hex, now_ms, data)
            for conn in conns:
                if topic in conn.topics:
                    conn.send(message)

    # -- revocation --------------------------------------------------------------------------

    def on_invalidated(self) -> None:
        """KeyCache invalidation listener: re-check the keys of live connections (any thread;
        never blocks). Coalesced: one pass at a time, at most one more queued."""
        loop = self._loop
        if loop is None or not self._by_key:
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._schedule_recheck)

    def _schedule_recheck(self) -> None:
        self._recheck_wanted = True
        if self._recheck_task is None or self._recheck_task.done():
            assert self._loop is not None
            self._recheck_task = self._loop.create_task(self._recheck_loop())

    async def _recheck_loop(self) -> None:
        while self._recheck_wanted:
            self._recheck_wanted = False
            self.rechecks += 1
            try:
                await self.recheck()
            except Exception:  # never let the re-check task die with a traceback
                log.warning("websocket key re-check failed", exc_info=True)

    async def recheck(self) -> None:
        """Load each connected api key through the cache and close the connections that fail
        check_key_state. A key whose record cannot be read keeps its connections (logged)."""
        for api_key in list(self._by_key):
            try:
                entry = await self.load_entry(api_key)
            except Exception:
                log.warning("websocket key re-check: store unreadable, keeping connections")
                continue
            for conn in list(self._by_key.get(api_key, ())):
                try:
                    check_key_state(entry, client_ip=conn.client_ip, now_ms=self.clock.now_ms())
                except KeyplaneError as exc:
                    log.info("websocket closed: key no longer valid", ret_code=exc.ret_code)
                    conn.close(exc.ret_msg)

    async def load_entry(self, api_key: str) -> KeyEntry | None:
        """The cached key for api_key, loaded in a thread on a miss (None when unknown)."""
        found, entry = self.cache.peek(api_key)
        if found:
            return entry
        return await anyio.to_thread.run_sync(self.cache.load, api_key)
