"""The Bybit V5 reply envelope: {"retCode", "retMsg", "result", "retExtInfo", "time"}."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.responses import Response

__all__ = ["envelope_bytes", "envelope_response", "reply"]

_JSON_HEADERS = {"content-type": "application/json"}


def envelope_bytes(
    result: Mapping[str, Any] | None, *, now_ms: int, ret_code: int = 0, ret_msg: str = "OK"
) -> bytes:
    """Serialise one envelope; result None -> {}; time is the server clock in ms."""
    body = {
        "retCode": ret_code,
        "retMsg": ret_msg,
        "result": dict(result) if result is not None else {},
        "retExtInfo": {},
        "time": now_ms,
    }
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def envelope_response(
    result: Mapping[str, Any] | None,
    *,
    now_ms: int,
    ret_code: int = 0,
    ret_msg: str = "OK",
    status_code: int = 200,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """A Starlette response holding one envelope."""
    merged = dict(_JSON_HEADERS)
    if headers:
        merged.update(headers)
    return Response(
        envelope_bytes(result, now_ms=now_ms, ret_code=ret_code, ret_msg=ret_msg),
        status_code=status_code,
        headers=merged,
    )


def reply(request: Any, result: Mapping[str, Any] | None) -> Response:
    """A success envelope (retCode 0, retMsg "OK") timed by the app's clock.

    request: starlette.requests.Request whose app.state.clock is a keyplane Clock.
    """
    return envelope_response(result, now_ms=request.app.state.clock.now_ms())
