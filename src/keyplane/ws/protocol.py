"""Bybit V5 WebSocket message shapes: parsing client frames and building replies and pushes.

Pure functions, no I/O. Sources: Bybit V5 "WebSocket Connect" (auth, subscribe, heartbeat),
"Websocket Trade Guideline" (/v5/trade), the private topic pages (order, execution, wallet,
position), and pybit's `_websocket_stream.py` / `_websocket_trading.py` (what a client reads).

Private channel (/v5/private) replies:
    auth:        {"success": true, "ret_msg": "", "op": "auth", "conn_id": "<id>"}
    subscribe:   {"success": true, "ret_msg": "", "op": "subscribe", "conn_id": "<id>",
                  "req_id": "<echoed when given>"}
    ping:        {"req_id": "<echoed>", "op": "pong", "args": ["<server ms>"], "conn_id": "<id>"}
    failures:    {"success": false, "ret_msg": "<reason>", "op": "<op>", "conn_id": "<id>", ...}
    push:        {"id": "<id>", "topic": "order", "creationTime": <ms int>, "data": [...]}
Trade channel (/v5/trade) replies:
    auth:        {"retCode": 0, "retMsg": "OK", "op": "auth", "connId": "<id>"}
    order ops:   {"reqId": "<echoed>", "retCode": int, "retMsg": str, "op": "order.create",
                  "data": {...}, "retExtInfo": {}, "header": {"Timenow": "<ms>", ...},
                  "connId": "<id>"}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MAX_FRAME_CHARS",
    "MAX_TOPICS_PER_CONNECTION",
    "PRIVATE_TOPICS",
    "Frame",
    "ProtocolError",
    "failure",
    "parse_auth_args",
    "parse_frame",
    "parse_topics",
    "pong",
    "push",
    "success",
    "trade_reply",
]

#: Bybit V5 private topics: the all-in-one forms and the per-category forms.
PRIVATE_TOPICS = frozenset(
    {"order", "execution", "position", "wallet", "greeks", "execution.fast", "dcp"}
    | {f"{t}.{c}" for t in ("order", "execution") for c in ("spot", "linear", "inverse", "option")}
    | {f"execution.fast.{c}" for c in ("spot", "linear", "inverse", "option")}
    | {f"position.{c}" for c in ("linear", "inverse", "option")}
)
#: topics one connection may hold at once; more get a failure reply (keyplane's cap).
MAX_TOPICS_PER_CONNECTION = 100
#: longest client frame read, in characters; longer ones get a failure reply.
MAX_FRAME_CHARS = 65_536


class ProtocolError(Exception):
    """A client frame that cannot be served; ret_msg is what the failure reply says."""

    def __init__(self, ret_msg: str, op: str = "") -> None:
        super().__init__(ret_msg)
        self.ret_msg = ret_msg
        self.op = op


@dataclass(frozen=True, slots=True)
class Frame:
    """One parsed client frame: op, args (list), req_id (str | None, echoed back as given:
    `req_id` on /v5/private, `reqId` on /v5/trade) and the whole object (raw)."""

    op: str
    args: list[Any]
    req_id: Any
    raw: dict[str, Any]


def parse_frame(text: str) -> Frame:
    """Parse a client text frame into a Frame.

    Raises ProtocolError (never anything else) when the frame is longer than
    MAX_FRAME_CHARS, not JSON, not an object, or has no string `op` or a non-list `args`.
    """
    if len(text) > MAX_FRAME_CHARS:
        raise ProtocolError(f"error:frame longer than {MAX_FRAME_CHARS} characters")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("error:request is not valid JSON") from exc
    if not isinstance(data, dict):
        raise ProtocolError("error:request must be a JSON object with an op")
    op = data.get("op")
    if not isinstance(op, str) or not op:
        raise ProtocolError("error:request has no op")
    args = data.get("args", [])
    if not isinstance(args, list):
        raise ProtocolError("error:args must be a list", op)
    req_id = data.get("req_id", data.get("reqId"))
    if req_id is not None and not isinstance(req_id, str | int):
        raise ProtocolError("error:req_id must be a string", op)
    return Frame(op=op, args=args, req_id=req_id, raw=data)


def parse_auth_args(args: list[Any]) -> tuple[str, int, str]:
    """[apiKey, expires, signature] -> (api_key, expires in ms since epoch, signature).

    expires may be an int (pybit) or a digit string (ccxt). Raises ProtocolError
    ("Params Error: ...") on any other shape. rule: Bybit V5 "WebSocket Connect".
    """
    if len(args) != 3:
        raise ProtocolError("Params Error: auth args must be [apiKey, expires, signature]", "auth")
    api_key, expires, signature = args
    if not isinstance(api_key, str) or not api_key or not isinstance(signature, str):
        raise ProtocolError("Params Error: apiKey and signature must be strings", "auth")
    if isinstance(expires, bool):
        raise ProtocolError("Params Error: expires must be ms since epoch", "auth")
    if isinstance(expires, str) and expires.isascii() and expires.isdigit() and len(expires) < 20:
        expires = int(expires)
    if not isinstance(expires, int) or not 0 < expires < 2**63:
        raise ProtocolError("Params Error: expires must be ms since epoch", "auth")
    return api_key, expires, signature


def parse_topics(args: list[Any], op: str) -> list[str]:
    """The topics of a subscribe/unsubscribe frame, duplicates dropped, order kept.

    Raises ProtocolError when args is empty or holds a non-string, and Bybit's
    "error:handler not found,topic:<t>" for a topic that is not a private topic.
    """
    if not args:
        raise ProtocolError("error:args must list at least one topic", op)
    topics: list[str] = []
    for topic in args:
        if not isinstance(topic, str):
            raise ProtocolError("error:topics must be strings", op)
        if topic not in PRIVATE_TOPICS:
            raise ProtocolError(f"error:handler not found,topic:{topic[:100]}", op)
        if topic not in topics:
            topics.append(topic)
    return topics


def _with_req_id(reply: dict[str, Any], req_id: Any) -> dict[str, Any]:
    if req_id is not None:
        reply["req_id"] = req_id
    return reply


def success(op: str, conn_id: str, req_id: Any = None) -> dict[str, Any]:
    """A /v5/private success reply to auth, subscribe or unsubscribe."""
    reply = {"success": True, "ret_msg": "", "op": op, "conn_id": conn_id}
    return _with_req_id(reply, req_id)


def failure(op: str, conn_id: str, ret_msg: str, req_id: Any = None) -> dict[str, Any]:
    """A /v5/private failure reply: success false and the reason in ret_msg."""
    reply = {"success": False, "ret_msg": ret_msg, "op": op, "conn_id": conn_id}
    return _with_req_id(reply, req_id)


def pong(conn_id: str, now_ms: int, req_id: Any = None) -> dict[str, Any]:
    """The private-channel heartbeat reply; args holds the server time, ms as a string."""
    reply: dict[str, Any] = {}
    if req_id is not None:
        reply["req_id"] = req_id
    reply.update(op="pong", args=[str(now_ms)], conn_id=conn_id)
    return reply


def push(topic: str, push_id: str, now_ms: int, data: list[dict[str, Any]]) -> dict[str, Any]:
    """A private topic push; creationTime is ms since epoch (int), data a list of items."""
    return {"id": push_id, "topic": topic, "creationTime": now_ms, "data": data}


def trade_reply(
    op: str,
    conn_id: str,
    now_ms: int,
    *,
    req_id: Any = None,
    ret_code: int = 0,
    ret_msg: str = "OK",
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A /v5/trade reply. auth: {reqId?, retCode, retMsg, op, connId}; order ops add data,
    retExtInfo and header (Timenow: server ms as a string)."""
    reply: dict[str, Any] = {}
    if req_id is not None:
        reply["reqId"] = req_id
    reply.update(retCode=ret_code, retMsg=ret_msg, op=op)
    if op != "auth":
        reply.update(
            data=data if data is not None else {},
            retExtInfo={},
            header={"Timenow": str(now_ms)},
        )
    reply["connId"] = conn_id
    return reply
