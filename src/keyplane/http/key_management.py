"""V5 key-management routes (/v5/user/*), with Bybit's field names and types.

Source: Bybit V5 API "User" section: Get API Key Information, Create Sub UID API Key, Modify
Master/Sub API Key, Delete Master/Sub API Key, Get Sub Account All API Keys, Create Sub UID,
Get Sub UID List. Permission and master-only checks happen in the auth middleware
(keyplane.policy); these handlers check ownership (a master may act only on its own subs).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keyplane.auth.context import AUTH_SCOPE_KEY, PARAMS_SCOPE_KEY, AuthContext
from keyplane.errors import NotFoundError, ParameterError, PermissionDeniedError
from keyplane.http.envelope import reply
from keyplane.keys import Account, ApiKey, IpAllowlist, KeyStatus, KeyType, Permissions, iso_utc
from keyplane.service import KeyService

__all__ = ["key_management_routes", "key_wire"]

T = TypeVar("T")
_SUB_KEYS_PAGE_MAX = 20


def key_wire(key: ApiKey, account: Account, now_ms: int) -> dict[str, Any]:
    """GET /v5/user/query-api result for a key (secret always "")."""
    return {
        **_change_wire(key),
        "type": 1,
        "deadlineDay": key.deadline_days(now_ms),
        "expiredAt": iso_utc(key.expires_at_ms),
        "createdAt": iso_utc(key.created_at_ms),
        "unified": 0,
        "uta": 1,
        "userID": key.uid,
        "inviterID": 0,
        "vipLevel": "No VIP",
        "mktMakerLevel": "0",
        "affiliateID": 0,
        "rsaPublicKey": key.rsa_public_key or "",
        "isMaster": account.is_master,
        "parentUid": str(account.parent_uid or 0),
        "kycLevel": "LEVEL_DEFAULT",
        "kycRegion": "",
    }


def _sub_key_status(key: ApiKey, now_ms: int) -> int:
    """Bybit's sub-apikeys status: 1 permanent, 2 expired, 3 valid, 4 expires in < 7 days."""
    if key.expires_at_ms is None:
        return 1
    if key.is_expired(now_ms):
        return 2
    return 4 if key.deadline_days(now_ms) < 7 else 3


def _ctx(request: Request) -> tuple[AuthContext, Mapping[str, Any]]:
    return request.scope[AUTH_SCOPE_KEY], request.scope[PARAMS_SCOPE_KEY]


def _who(ctx: AuthContext) -> dict[str, Any]:
    """Audit actor and source IP of a request: the calling key and the client IP."""
    return {"actor": f"key:{ctx.key.api_key}", "source_ip": ctx.client_ip}


def _service(request: Request) -> KeyService:
    service: KeyService = request.app.state.service
    return service


async def _run(request: Request, fn: Callable[[], T], *, changes_keys: bool = False) -> T:
    """Run a blocking service call off the event loop; clear the key cache after writes."""
    result = await anyio.to_thread.run_sync(fn)
    if changes_keys:
        request.app.state.cache.clear()
    return result


def _int_param(params: Mapping[str, Any], name: str, *, default: int | None = None) -> int:
    value = params.get(name)
    if value is None or value == "":
        if default is None:
            raise ParameterError(f"missing parameter {name}")
        return default
    if isinstance(value, bool):
        raise ParameterError(f"{name} must be an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise ParameterError(f"{name} must be an integer")


def _read_only_param(params: Mapping[str, Any]) -> bool | None:
    if params.get("readOnly") is None:
        return None
    value = _int_param(params, "readOnly")
    if value not in (0, 1):
        raise ParameterError("readOnly must be 0 (read-write) or 1 (read-only)")
    return value == 1


def _permissions_param(params: Mapping[str, Any]) -> Permissions | None:
    value = params.get("permissions")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ParameterError('permissions must be an object like {"Spot": ["SpotTrade"]}')
    return Permissions.from_mapping(value)


def _ips_param(params: Mapping[str, Any]) -> IpAllowlist | None:
    value = params.get("ips")
    if value is None:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return IpAllowlist.parse([p for item in value for p in item.split(",")])
    if isinstance(value, str):
        return IpAllowlist.parse(value)
    raise ParameterError('ips must be a comma-separated string, e.g. "1.2.3.4,10.0.0.0/8"')


def _note_param(params: Mapping[str, Any]) -> str | None:
    value = params.get("note")
    if value is None:
        return None
    if not isinstance(value, str):
        raise ParameterError("note must be a string")
    return value


def _change_wire(key: ApiKey) -> dict[str, Any]:
    """The fields every key reply shares (update-api/update-sub-api result shape)."""
    return {
        "id": str(key.id),
        "note": key.note,
        "apiKey": key.api_key,
        "readOnly": int(key.read_only),
        "secret": "",
        "permissions": key.permissions.to_wire(),
        "ips": key.ips.to_list(),
    }


def _owned_sub_key(service: KeyService, ctx: AuthContext, api_key: str | None) -> ApiKey:
    """The sub key a request acts on: the caller itself, or (master) the named sub key."""
    if api_key is None or api_key == ctx.key.api_key:
        if ctx.is_master:
            raise ParameterError("apikey of a sub account key is required for a master key")
        return ctx.key
    if not ctx.is_master:
        raise PermissionDeniedError(reasons=("sub key may act only on itself",))
    target = service.find_key(api_key)
    if target is None or target.status is KeyStatus.REVOKED:
        raise NotFoundError(f"api key {api_key} does not exist")
    owner = service.get_account(target.uid)
    if owner.parent_uid != ctx.uid:
        raise PermissionDeniedError(reasons=("key does not belong to a sub account of the caller",))
    return target


def _owned_sub_account(service: KeyService, ctx: AuthContext, uid: int) -> Account:
    account = service.store.find_account(uid)
    if account is None or account.parent_uid != ctx.uid:
        raise NotFoundError(f"sub account {uid} does not exist under uid {ctx.uid}")
    return account


async def query_api(request: Request) -> Response:
    """GET /v5/user/query-api: describe the calling key."""
    ctx, _ = _ctx(request)
    return reply(request, key_wire(ctx.key, ctx.account, request.app.state.clock.now_ms()))


async def create_sub_api(request: Request) -> Response:
    """POST /v5/user/create-sub-api: issue an HMAC key for one of the caller's sub accounts."""
    ctx, params = _ctx(request)
    service = _service(request)
    subuid = _int_param(params, "subuid")
    read_only = _read_only_param(params)
    if read_only is None:
        raise ParameterError("missing parameter readOnly")
    permissions = _permissions_param(params)
    if permissions is None:
        raise ParameterError("missing parameter permissions")
    ips = _ips_param(params) or IpAllowlist()
    note = _note_param(params) or ""

    def create() -> dict[str, Any]:
        _owned_sub_account(service, ctx, subuid)
        issued = service.create_key(
            subuid, note=note, read_only=read_only, permissions=permissions, ips=ips, **_who(ctx)
        )
        assert issued.secret is not None
        wire = _change_wire(issued.key)
        del wire["ips"]
        wire["secret"] = issued.secret.reveal()
        return wire

    return reply(request, await _run(request, create, changes_keys=True))


async def update_api(request: Request) -> Response:
    """POST /v5/user/update-api: a master key changes its own readOnly, ips, permissions."""
    ctx, params = _ctx(request)
    service = _service(request)
    changes = _update_changes(params)

    def update() -> dict[str, Any]:
        return _change_wire(service.update_key(ctx.key.api_key, **changes, **_who(ctx)))

    return reply(request, await _run(request, update, changes_keys=True))


async def update_sub_api(request: Request) -> Response:
    """POST /v5/user/update-sub-api: a sub key itself, or a master naming `apikey`."""
    ctx, params = _ctx(request)
    service = _service(request)
    changes = _update_changes(params)
    target_name = params.get("apikey")

    def update() -> dict[str, Any]:
        target = _owned_sub_key(service, ctx, target_name if isinstance(target_name, str) else None)
        return _change_wire(service.update_key(target.api_key, **changes, **_who(ctx)))

    return reply(request, await _run(request, update, changes_keys=True))


def _update_changes(params: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "read_only": _read_only_param(params),
        "permissions": _permissions_param(params),
        "ips": _ips_param(params),
        "note": _note_param(params),
    }


async def delete_api(request: Request) -> Response:
    """POST /v5/user/delete-api: a master key revokes itself."""
    ctx, _ = _ctx(request)
    service = _service(request)
    await _run(
        request,
        lambda: service.revoke_key(ctx.key.api_key, deleted=True, **_who(ctx)),
        changes_keys=True,
    )
    return reply(request, {})


async def delete_sub_api(request: Request) -> Response:
    """POST /v5/user/delete-sub-api: revoke a sub key (itself, or a master naming `apikey`)."""
    ctx, params = _ctx(request)
    service = _service(request)
    target_name = params.get("apikey")

    def delete() -> None:
        target = _owned_sub_key(service, ctx, target_name if isinstance(target_name, str) else None)
        service.revoke_key(target.api_key, deleted=True, **_who(ctx))

    await _run(request, delete, changes_keys=True)
    return reply(request, {})


async def sub_apikeys(request: Request) -> Response:
    """GET /v5/user/sub-apikeys?subMemberId=&limit=1..20&cursor=: a sub account's live keys."""
    ctx, params = _ctx(request)
    service = _service(request)
    sub_uid = _int_param(params, "subMemberId")
    limit = _int_param(params, "limit", default=_SUB_KEYS_PAGE_MAX)
    if not 1 <= limit <= _SUB_KEYS_PAGE_MAX:
        raise ParameterError(f"limit must be between 1 and {_SUB_KEYS_PAGE_MAX}")
    cursor = _int_param(params, "cursor", default=0)
    now = request.app.state.clock.now_ms()

    def page() -> dict[str, Any]:
        _owned_sub_account(service, ctx, sub_uid)
        keys = service.store.list_keys(
            uid=sub_uid, include_revoked=False, after_id=cursor, limit=limit + 1
        )
        items = [_sub_key_item(k, now) for k in keys[:limit]]
        next_cursor = str(keys[limit - 1].id) if len(keys) > limit else ""
        return {"result": items, "nextPageCursor": next_cursor}

    return reply(request, await _run(request, page))


def _sub_key_item(key: ApiKey, now_ms: int) -> dict[str, Any]:
    return {
        "id": str(key.id),
        "ips": key.ips.to_list(),
        "apiKey": key.api_key,
        "note": key.note,
        "status": _sub_key_status(key, now_ms),
        "expiredAt": iso_utc(key.expires_at_ms),
        "createdAt": iso_utc(key.created_at_ms),
        "type": 1,
        "permissions": key.permissions.to_wire(),
        "secret": "******",
        "readOnly": key.read_only,
        "deadlineDay": key.deadline_days(now_ms),
        "flag": "rsa" if key.key_type is KeyType.RSA else "hmac",
    }


def _member_wire(account: Account) -> dict[str, Any]:
    return {
        "uid": str(account.uid),
        "username": account.username,
        "memberType": 1,
        "status": 1,
        "accountMode": 3,
        "remark": account.note,
    }


async def create_sub_member(request: Request) -> Response:
    """POST /v5/user/create-sub-member: create a sub account under the caller's master."""
    ctx, params = _ctx(request)
    service = _service(request)
    username = params.get("username")
    if not isinstance(username, str) or not 6 <= len(username) <= 16 or not username.isalnum():
        raise ParameterError("username must be 6-16 letters or digits")
    member_type = _int_param(params, "memberType", default=1)
    if member_type != 1:
        raise ParameterError("memberType: only 1 (normal sub account) is supported")
    note = _note_param(params) or ""

    def create() -> dict[str, Any]:
        account = service.create_account(
            parent_uid=ctx.uid, username=username, note=note, **_who(ctx)
        )
        return _member_wire(account)

    return reply(request, await _run(request, create, changes_keys=True))


async def query_sub_members(request: Request) -> Response:
    """GET /v5/user/query-sub-members: the caller's sub accounts."""
    ctx, _ = _ctx(request)
    service = _service(request)

    def members() -> dict[str, Any]:
        subs = service.store.list_accounts(parent_uid=ctx.uid)
        return {"subMembers": [_member_wire(a) for a in subs]}

    return reply(request, await _run(request, members))


def key_management_routes() -> list[Route]:
    """The /v5/user/* routes."""
    return [
        Route("/v5/user/query-api", query_api, methods=["GET"]),
        Route("/v5/user/create-sub-api", create_sub_api, methods=["POST"]),
        Route("/v5/user/update-api", update_api, methods=["POST"]),
        Route("/v5/user/update-sub-api", update_sub_api, methods=["POST"]),
        Route("/v5/user/delete-api", delete_api, methods=["POST"]),
        Route("/v5/user/delete-sub-api", delete_sub_api, methods=["POST"]),
        Route("/v5/user/sub-apikeys", sub_apikeys, methods=["GET"]),
        Route("/v5/user/create-sub-member", create_sub_member, methods=["POST"]),
        Route("/v5/user/query-sub-members", query_sub_members, methods=["GET"]),
    ]
