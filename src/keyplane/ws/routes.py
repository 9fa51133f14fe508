"""WebSocket endpoints: /v5/private (private topics) and /v5/trade (order entry).

Both expect app.state.ws_hub (WsHub), app.state.clock, and for /v5/trade also app.state.limits
(keyplane.http.limits.RequestLimits), app.state.cache and app.state.venue. Every client frame
gets a Bybit-shaped reply; a malformed frame or a fault answers a failure reply, never a
traceback, and the connection stays usable. A connection not authenticated within
hub.auth_timeout_s seconds of opening (settings.ws_auth_timeout_s) gets a failure reply for op
"auth" and is closed with code 1008. Source of shapes: keyplane.ws.protocol.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
import structlog
from starlette.requests import Request
from starlette.routing import WebSocketRoute
from starlette.types import Scope
from starlette.websockets import WebSocket

from keyplane.auth.context import AUTH_SCOPE_KEY, PARAMS_SCOPE_KEY
from keyplane.auth.headers import AuthHeaders
from keyplane.auth.pipeline import authorize, check_key_state, check_timestamp
from keyplane.errors import AuthenticationFailedError, KeyplaneError, ParameterError
from keyplane.policy import find_route
from keyplane.venue.routes import order_cancel, order_create
from keyplane.ws.hub import Connection, WsHub
from keyplane.ws.protocol import (
    MAX_TOPICS_PER_CONNECTION,
    Frame,
    ProtocolError,
    failure,
    parse_frame,
    parse_topics,
    pong,
    success,
    trade_reply,
)

__all__ = ["private_endpoint", "trade_endpoint", "ws_routes"]

log = structlog.get_logger("keyplane.ws")

_Handler = Callable[[WebSocket, WsHub, Connection, Frame], Awaitable[None]]
_NOT_AUTHED = 'Request not authorized: send {"op": "auth"} first'
_TRADE_OPS: dict[str, tuple[str, Callable[[Request], Awaitable[Any]]]] = {
    "order.create": ("/v5/order/create", order_create),
    "order.cancel": ("/v5/order/cancel", order_cancel),
}


async def private_endpoint(websocket: WebSocket) -> None:
    """WS /v5/private: ops auth, subscribe, unsubscribe, ping (Bybit V5 "WebSocket Connect")."""
    await _serve(websocket, "private", _private_frame, _private_failure)


async def trade_endpoint(websocket: WebSocket) -> None:
    """WS /v5/trade: ops auth, ping, order.create, order.cancel (Bybit V5 "Websocket Trade
    Guideline"); other order ops answer retCode 10001 "not supported"."""
    await _serve(websocket, "trade", _trade_frame, _trade_failure)


def ws_routes() -> list[WebSocketRoute]:
    """The WebSocket routes; mount them in an app that sets app.state.ws_hub."""
    return [
        WebSocketRoute("/v5/private", private_endpoint),
        WebSocketRoute("/v5/trade", trade_endpoint),
    ]


async def _serve(
    websocket: WebSocket,
    channel: str,
    handle: _Handler,
    fail: Callable[[WsHub, Connection, str, str, Any], dict[str, Any]],
) -> None:
    hub: WsHub = websocket.app.state.ws_hub
    await websocket.accept()
    conn = hub.open(websocket, channel)
    try:
        async with anyio.create_task_group() as tasks:
            conn.scope = tasks.cancel_scope
            tasks.start_soon(conn.run_sender, websocket)
            tasks.start_soon(_auth_deadline, hub, conn)
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                await _one_frame(websocket, hub, conn, message, handle, fail)
            tasks.cancel_scope.cancel()
    except Exception:  # a vanished client or a fault: log it, never leak it
        log.warning("websocket connection ended by an error", conn_id=conn.conn_id, exc_info=True)
    finally:
        hub.discard(conn)


async def _auth_deadline(hub: WsHub, conn: Connection) -> None:
    """After hub.auth_timeout_s seconds, close conn unless it has authenticated, first sending
    the channel's failure reply for op "auth": /v5/private {"success": false, "ret_msg":
    "error:auth timeout: ...", "op": "auth", "conn_id": ...}; /v5/trade {"retCode": 10007,
    "retMsg": "error:auth timeout: ...", "op": "auth", "connId": ...}. Cancelled with the
    connection. An auth still in flight at the deadline then fails as "connection is closing"."""
    await anyio.sleep(hub.auth_timeout_s)
    if conn.is_authed or conn.closed_because is not None:
        return
    ret_msg = (
        f"error:auth timeout: no successful auth within {hub.auth_timeout_s:g} s of "
        f"connecting; connection closed"
    )
    if conn.channel == "trade":
        reply = _trade_failure(hub, conn, "auth", ret_msg, None, AuthenticationFailedError.ret_code)
    else:
        reply = failure("auth", conn.conn_id, ret_msg)
    log.info("websocket closed: no auth in time", conn_id=conn.conn_id, channel=conn.channel)
    conn.send(reply)
    conn.close(f"auth timeout: not authenticated within {hub.auth_timeout_s:g} s")


async def _one_frame(
    websocket: WebSocket,
    hub: WsHub,
    conn: Connection,
    message: Mapping[str, Any],
    handle: _Handler,
    fail: Callable[[WsHub, Connection, str, str, Any], dict[str, Any]],
) -> None:
    frame: Frame | None = None
    try:
        text = message.get("text")
        if text is None:
            try:
                text = (message.get("bytes") or b"").decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ProtocolError("error:request is not valid UTF-8") from exc
        frame = parse_frame(text)
        await handle(websocket, hub, conn, frame)
    except ProtocolError as exc:
        conn.send(fail(hub, conn, exc.op, exc.ret_msg, frame.req_id if frame else None))
    except KeyplaneError as exc:
        op = frame.op if frame else ""
        conn.send(fail(hub, conn, op, exc.ret_msg, frame.req_id if frame else None))
    except Exception:
        log.exception("websocket frame failed", conn_id=conn.conn_id)
        op = frame.op if frame else ""
        conn.send(fail(hub, conn, op, "Server error.", frame.req_id if frame else None))


# -- /v5/private -------------------------------------------------------------------------------


def _private_failure(
    _hub: WsHub, conn: Connection, op: str, ret_msg: str, req_id: Any
) -> dict[str, Any]:
    return failure(op, conn.conn_id, ret_msg, req_id)


async def _private_frame(_websocket: WebSocket, hub: WsHub, conn: Connection, frame: Frame) -> None:
    op, req_id = frame.op, frame.req_id
    try:
        if op == "ping":
            conn.send(pong(conn.conn_id, hub.clock.now_ms(), req_id))
        elif op == "auth":
            await hub.authenticate(conn, frame.args)
            conn.send(success("auth", conn.conn_id, req_id))
        elif op in ("subscribe", "unsubscribe"):
            _subscribe(conn, frame)
            conn.send(success(op, conn.conn_id, req_id))
        else:
            raise ProtocolError(f"error:unknown op: {op[:50]}")
    except ProtocolError as exc:
        conn.send(failure(op, conn.conn_id, exc.ret_msg, req_id))


def _subscribe(conn: Connection, frame: Frame) -> None:
    """Apply a subscribe/unsubscribe frame to conn.topics (all or nothing)."""
    if not conn.is_authed:
        raise ProtocolError(_NOT_AUTHED)
    if frame.op == "subscribe" and len(frame.args) > MAX_TOPICS_PER_CONNECTION:
        raise ProtocolError(
            f"error:too many topics: a connection may hold at most {MAX_TOPICS_PER_CONNECTION}; "
            f"this request asks for {len(frame.args)}"
        )
    topics = parse_topics(frame.args, frame.op)
    if frame.op == "unsubscribe":
        for topic in topics:
            conn.topics.pop(topic, None)
        return
    new = [t for t in topics if t not in conn.topics]
    if len(conn.topics) + len(new) > MAX_TOPICS_PER_CONNECTION:
        raise ProtocolError(
            f"error:too many topics: a connection may hold at most {MAX_TOPICS_PER_CONNECTION}; "
            f"it holds {len(conn.topics)} and asked for {len(new)} more"
        )
    for topic in new:
        conn.topics[topic] = None


# -- /v5/trade ---------------------------------------------------------------------------------


def _trade_failure(
    hub: WsHub, conn: Connection, op: str, ret_msg: str, req_id: Any, ret_code: int = 10001
) -> dict[str, Any]:
    now_ms = hub.clock.now_ms()
    return trade_reply(op, conn.conn_id, now_ms, req_id=req_id, ret_code=ret_code, ret_msg=ret_msg)


async def _trade_frame(websocket: WebSocket, hub: WsHub, conn: Connection, frame: Frame) -> None:
    op, req_id, now_ms = frame.op, frame.req_id, hub.clock.now_ms()
    try:
        if op == "ping":
            conn.send(pong(conn.conn_id, now_ms, req_id))
        elif op == "auth":
            await hub.authenticate(conn, frame.args)
            conn.send(trade_reply("auth", conn.conn_id, now_ms, req_id=req_id))
        elif op in _TRADE_OPS:
            data = await _trade_order(websocket, hub, conn, frame)
            conn.send(trade_reply(op, conn.conn_id, hub.clock.now_ms(), req_id=req_id, data=data))
        elif op.startswith("order."):
            raise ParameterError(f"error:op {op[:50]} is not supported by keyplane")
        else:
            raise ParameterError(f"error:unknown op: {op[:50]}")
    except ProtocolError as exc:
        conn.send(_trade_failure(hub, conn, op, exc.ret_msg, req_id))
    except KeyplaneError as exc:
        conn.send(_trade_failure(hub, conn, op, exc.ret_msg, req_id, exc.ret_code))


def _header_number(header: dict[str, Any], name: str, default: int | None) -> tuple[str, int]:
    value = header.get(name)
    if value is None and default is not None:
        return "", default
    text = str(value) if isinstance(value, str | int) and not isinstance(value, bool) else ""
    if not (text.isascii() and text.isdigit() and len(text) < 20):
        raise ParameterError(f"header {name} must be an integer (ms)")
    return text, int(text)


async def _trade_order(
    websocket: WebSocket, hub: WsHub, conn: Connection, frame: Frame
) -> dict[str, Any]:
    """Run one order op like its REST twin: timestamp window, key state, permission, rate
    limit, then the venue handler. Returns the result object ({"orderId", "orderLinkId"})."""
    context = conn.context
    if context is None:
        raise AuthenticationFailedError(_NOT_AUTHED)
    header = frame.raw.get("header")
    if not isinstance(header, dict):
        raise ParameterError("header with X-BAPI-TIMESTAMP is required")
    ts_text, ts = _header_number(header, "X-BAPI-TIMESTAMP", None)
    rw_text, rw = _header_number(header, "X-BAPI-RECV-WINDOW", 5000)
    now_ms = hub.clock.now_ms()
    check_timestamp(AuthHeaders(context.key.api_key, ts_text, ts, "", rw_text, rw), now_ms)
    if len(frame.args) != 1 or not isinstance(frame.args[0], dict):
        raise ParameterError("args must hold exactly one order object")
    params: dict[str, Any] = frame.args[0]
    path, handler = _TRADE_OPS[frame.op]
    entry = await hub.load_entry(context.key.api_key)  # the key may have changed since auth
    context = check_key_state(entry, client_ip=conn.client_ip, now_ms=now_ms)
    policy = find_route("POST", path)
    assert policy is not None
    raw_category = params.get("category")
    category = raw_category if isinstance(raw_category, str) else None
    authorize(context, policy, category)
    app = websocket.app
    await app.state.limits.check_key(context, policy, category, now_ms)
    scope: Scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": [],
        "query_string": b"",
        "app": app,
        PARAMS_SCOPE_KEY: params,
        AUTH_SCOPE_KEY: context,
    }
    response = await handler(Request(scope))
    result: dict[str, Any] = json.loads(response.body)["result"]
    return result
