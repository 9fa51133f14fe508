"""`keyplane` commands: init, serve, accounts, keys, kek, upstream, audit, maintenance, usage,
alerts.

Every command takes `--db URL` (else KEYPLANE_DATABASE_URL, else sqlite:///./keyplane.db);
commands that print data take `--json` (stdout then holds exactly one JSON document).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from keyplane.cli.alerts import alerts_app
from keyplane.cli.audit import audit_app, maintenance_app
from keyplane.cli.common import (
    DbOption,
    JsonOption,
    admin_actor,
    fail,
    service_for,
    settings_for,
)
from keyplane.cli.output import console, err_console, print_json, print_kv, print_table
from keyplane.cli.upstream import upstream_app
from keyplane.cli.usage import usage
from keyplane.keys import (
    ApiKey,
    IpAllowlist,
    KeyEncryptionKey,
    Permissions,
    RateOverrides,
    iso_utc,
)
from keyplane.service import InitResult, IssuedKey, KeyService
from keyplane.settings import Settings

__all__ = ["app", "main"]

app = typer.Typer(
    name="keyplane",
    help="Self-hosted API-key control plane that speaks the Bybit V5 wire protocol.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
accounts_app = typer.Typer(help="Master and sub accounts.", no_args_is_help=True)
keys_app = typer.Typer(
    help="API keys: create, list, show, update, rotate, suspend, resume, revoke.",
    no_args_is_help=True,
)
kek_app = typer.Typer(
    help="The key-encryption key that protects stored secrets.", no_args_is_help=True
)
app.add_typer(accounts_app, name="accounts")
app.add_typer(keys_app, name="keys")
app.add_typer(kek_app, name="kek")
app.add_typer(upstream_app, name="upstream")
app.add_typer(audit_app, name="audit")
app.add_typer(maintenance_app, name="maintenance")
app.add_typer(alerts_app, name="alerts")
app.command("usage")(usage)

LimitOption = Annotated[
    list[str] | None,
    typer.Option(
        "--limit",
        help='Rate-limit override ROUTE=N, e.g. "order/create:spot=50" (N per the route\'s '
        "window); repeatable.",
    ),
]
ClearLimitsOption = Annotated[
    bool, typer.Option("--clear-limits", help="Drop existing overrides first.")
]
DailyQuotaOption = Annotated[
    int | None,
    typer.Option(
        "--daily-quota",
        min=0,
        help="Requests per UTC day; retCode 10006 once spent, an alert at 75%. 0 = no quota.",
    ),
]
ReplayGuardOption = Annotated[
    bool | None,
    typer.Option(
        "--replay-guard/--no-replay-guard",
        help="Refuse a signature seen before inside its time window (retCode 10014).",
    ),
]


def _issued_json(issued: IssuedKey) -> dict[str, Any]:
    return {
        "id": str(issued.key.id),
        "apiKey": issued.key.api_key,
        "secret": issued.secret.reveal() if issued.secret is not None else "",
    }


def _key_json(key: ApiKey) -> dict[str, Any]:
    return {
        "id": str(key.id),
        "apiKey": key.api_key,
        "uid": key.uid,
        "type": key.key_type.value,
        "note": key.note,
        "status": key.status.value,
        "readOnly": int(key.read_only),
        "permissions": key.permissions.to_wire(),
        "ips": key.ips.to_list(),
        "createdAt": iso_utc(key.created_at_ms),
        "expiredAt": iso_utc(key.expires_at_ms),
        "revokedAt": iso_utc(key.revoked_at_ms),
        "lastUsedAt": iso_utc(key.last_used_at_ms),
        "rateLimits": dict(key.rate_limits.limits),
        "dailyQuota": key.daily_quota,
        "replayGuard": key.replay_guard,
    }


def _print_init(result: InitResult, *, as_json: bool, url: str | None = None) -> None:
    secret = result.issued.secret.reveal() if result.issued.secret else ""
    api_key = result.issued.key.api_key
    if as_json:
        print_json({"uid": result.account.uid, "apiKey": api_key, "secret": secret})
        return
    console.print("[bold green]Created the first master account and master key.[/bold green]")
    print_kv(
        "master key (the secret is shown only now)",
        {
            "uid": result.account.uid,
            "apiKey": api_key,
            "secret": secret,
        },
    )
    if url:
        console.print("pybit:", style="bold")
        console.print(
            "from pybit.unified_trading import HTTP\n"
            f'session = HTTP(api_key="{api_key}", api_secret="{secret}")\n'
            f'session.endpoint = "{url}"\n'
            'print(session.get_wallet_balance(accountType="UNIFIED"))',
            highlight=False,
            markup=False,
            soft_wrap=True,
        )


@app.command()
def init(db: DbOption = None, as_json: JsonOption = False) -> None:
    """Create the store and, if it is empty, the first master account and master key."""
    with service_for(db) as service:
        result = service.initialize()
    if result is None:
        if as_json:
            print_json({})
        err_console.print("The store already has accounts; nothing created.")
        return
    _print_init(result, as_json=as_json)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
    trusted_proxies: Annotated[
        str | None,
        typer.Option(
            "--trusted-proxies",
            help="IPs/CIDRs whose X-Forwarded-For is believed (KEYPLANE_TRUSTED_PROXIES).",
        ),
    ] = None,
    redis: Annotated[
        str | None,
        typer.Option(
            "--redis",
            help="Redis URL for rate limits shared by every node, e.g. redis://127.0.0.1:6379/0 "
            "(KEYPLANE_REDIS_URL); unset: limits in this process.",
        ),
    ] = None,
    ip_limit: Annotated[
        str | None,
        typer.Option(
            "--ip-limit", help='Per-IP budget like "600/5s", or "off" (KEYPLANE_IP_LIMIT).'
        ),
    ] = None,
    ip_ban_seconds: Annotated[
        float | None,
        typer.Option(
            "--ip-ban-seconds",
            help="Seconds an IP stays refused after going over --ip-limit "
            "(KEYPLANE_IP_BAN_SECONDS).",
        ),
    ] = None,
    ws_auth_timeout: Annotated[
        float | None,
        typer.Option(
            "--ws-auth-timeout",
            help="Seconds a /v5/private or /v5/trade connection may stay open without a "
            "successful auth before it is closed (KEYPLANE_WS_AUTH_TIMEOUT_S; default 30).",
        ),
    ] = None,
    upstream: Annotated[
        str | None,
        typer.Option(
            "--upstream",
            help="Gateway mode: forward every route but /v5/user/* to this base URL after "
            "keyplane's checks (KEYPLANE_UPSTREAM_URL); unset: the demo venue answers.",
        ),
    ] = None,
    upstream_kind: Annotated[
        str | None,
        typer.Option(
            "--upstream-kind",
            help='"generic" (trusted X-Keyplane-* identity headers) or "bybit" (re-signed with '
            "the credentials of `keyplane upstream set-credentials`) (KEYPLANE_UPSTREAM_KIND).",
        ),
    ] = None,
    upstream_timeout: Annotated[
        float | None,
        typer.Option(
            "--upstream-timeout",
            help="Seconds for each of connect/read to the upstream (KEYPLANE_UPSTREAM_TIMEOUT_S).",
        ),
    ] = None,
    gateway_max_response_bytes: Annotated[
        int | None,
        typer.Option(
            "--gateway-max-response-bytes",
            help="Longest upstream body the gateway reads; longer ones answer retCode 10016 "
            "(KEYPLANE_GATEWAY_MAX_RESPONSE_BYTES; default 16 MiB).",
        ),
    ] = None,
    usage_log: Annotated[
        bool | None,
        typer.Option(
            "--usage-log/--no-usage-log",
            help="One usage row per request naming an api key (KEYPLANE_USAGE_LOG; default on).",
        ),
    ] = None,
    usage_spill_path: Annotated[
        Path | None,
        typer.Option(
            "--usage-spill-path",
            help="File usage rows spill to while the database is down "
            "(KEYPLANE_USAGE_SPILL_PATH; default beside a SQLite database, else ./).",
        ),
    ] = None,
    anomaly_detection: Annotated[
        bool | None,
        typer.Option(
            "--anomaly-detection/--no-anomaly-detection",
            help="Run the anomaly rules over the usage stream: audit, alert, suspend "
            "(KEYPLANE_ANOMALY_DETECTION; default on).",
        ),
    ] = None,
    anomaly_responses: Annotated[
        str | None,
        typer.Option(
            "--anomaly-responses",
            help='Per-rule responses like "new_network=suspend,rate_spike=record" '
            "(KEYPLANE_ANOMALY_RESPONSES).",
        ),
    ] = None,
    webhook_url: Annotated[
        str | None,
        typer.Option(
            "--webhook-url",
            help="POST signed alerts here (KEYPLANE_WEBHOOK_URL; the secret comes from "
            "KEYPLANE_WEBHOOK_SECRET).",
        ),
    ] = None,
    smtp_url: Annotated[
        str | None,
        typer.Option(
            "--smtp-url",
            help="Email alerts via smtp://user:pass@host:port or smtp+starttls://... "
            "(KEYPLANE_SMTP_URL; prefer the env var, it holds a password).",
        ),
    ] = None,
    alert_email_from: Annotated[
        str | None,
        typer.Option("--alert-email-from", help="From address (KEYPLANE_ALERT_EMAIL_FROM)."),
    ] = None,
    alert_email_to: Annotated[
        str | None,
        typer.Option(
            "--alert-email-to", help="Comma-separated To addresses (KEYPLANE_ALERT_EMAIL_TO)."
        ),
    ] = None,
    quota_alert_fraction: Annotated[
        float | None,
        typer.Option(
            "--quota-alert-fraction",
            help="Alert once per key per UTC day at this share of its daily quota "
            "(KEYPLANE_QUOTA_ALERT_FRACTION; default 0.75).",
        ),
    ] = None,
    rate_alert_fraction: Annotated[
        float | None,
        typer.Option(
            "--rate-alert-fraction",
            help="Share of a rate budget that counts as running hot "
            "(KEYPLANE_RATE_ALERT_FRACTION; default 0.75).",
        ),
    ] = None,
    rate_alert_sustain_seconds: Annotated[
        int | None,
        typer.Option(
            "--rate-alert-sustain-seconds",
            help="Consecutive hot seconds of one key and route before a rate.75 alert "
            "(KEYPLANE_RATE_ALERT_SUSTAIN_S; default 60).",
        ),
    ] = None,
    expiry_alert_days: Annotated[
        str | None,
        typer.Option(
            "--expiry-alert-days",
            help='Days before an unbound key expires to alert, "14,7,1" by default; "" none '
            "(KEYPLANE_EXPIRY_ALERT_DAYS).",
        ),
    ] = None,
    alert_sweep_seconds: Annotated[
        float | None,
        typer.Option(
            "--alert-sweep-seconds",
            help="Seconds between expiry sweeps (KEYPLANE_ALERT_SWEEP_S; default 600).",
        ),
    ] = None,
    db: DbOption = None,
) -> None:
    """Serve the V5 API (initialising an empty store first), or with --upstream be a gateway.
    Ctrl-C or SIGTERM finishes in-flight requests, then exits 0.

    Several identical nodes: give each the same --db postgresql+psycopg://..., --redis and
    KEYPLANE_KEK; a key change on any node (or by the CLI) reaches every node within a second.
    """
    import uvicorn

    from keyplane.anomaly import notifiers_from_settings
    from keyplane.http.app import create_app
    from keyplane.http.server import uvicorn_config

    overrides: dict[str, Any] = {"host": host, "port": port}
    for name, value in (
        ("trusted_proxies", trusted_proxies),  # "a,b" is split by Settings
        ("redis_url", redis),
        ("ip_limit", ip_limit),
        ("ip_ban_seconds", ip_ban_seconds),
        ("ws_auth_timeout_s", ws_auth_timeout),
        ("upstream_url", upstream),
        ("upstream_kind", upstream_kind),
        ("upstream_timeout_s", upstream_timeout),
        ("gateway_max_response_bytes", gateway_max_response_bytes),
        ("usage_log", usage_log),
        ("usage_spill_path", usage_spill_path),
        ("anomaly_detection", anomaly_detection),
        ("anomaly_responses", anomaly_responses),
        ("webhook_url", webhook_url),
        ("smtp_url", smtp_url),
        ("alert_email_from", alert_email_from),
        ("alert_email_to", alert_email_to),
        ("quota_alert_fraction", quota_alert_fraction),
        ("rate_alert_fraction", rate_alert_fraction),
        ("rate_alert_sustain_s", rate_alert_sustain_seconds),
        ("expiry_alert_days", expiry_alert_days),
        ("alert_sweep_s", alert_sweep_seconds),
    ):
        if value is not None:
            overrides[name] = value
    try:
        settings = Settings.model_validate({**settings_for(db).model_dump(), **overrides})
        notifiers_from_settings(settings)  # a half-configured notifier fails here, not later
    except ValueError as exc:
        fail(f"invalid setting: {exc}")
    with service_for(settings.database_url) as service:
        gateway_to = _check_gateway(settings, service)  # before init: never lose its output
        result = service.initialize()
    if result is not None:
        _print_init(result, as_json=False, url=f"http://{host}:{port}")
    limits_at = "redis" if settings.redis_url else "memory"
    err_console.print(
        f"keyplane serving on http://{host}:{port} "
        f"(database {_display_db(settings)}, rate limits in {limits_at})"
    )
    if gateway_to:
        err_console.print(f"gateway mode: forwarding to {gateway_to}; /v5/user/* stays local")
    server = uvicorn.Server(uvicorn_config(create_app(settings), host=host, port=port))
    # uvicorn finishes in-flight requests on SIGINT/SIGTERM, then re-raises the signal: make
    # that a clean exit 0 (a graceful stop), not death by signal.
    signal.signal(signal.SIGTERM, lambda *_: None)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    err_console.print("keyplane stopped")


def _check_gateway(settings: Settings, service: KeyService) -> str:
    """ "" without --upstream; else "<url> (kind K, timeout T s)". Exits 1 on a bad URL or when
    kind bybit has no stored (decryptable) upstream credentials."""
    if not settings.upstream_url:
        return ""
    from keyplane.gateway import display_upstream, load_upstream_credentials, parse_upstream_url

    try:
        url = display_upstream(parse_upstream_url(settings.upstream_url))
    except ValueError as exc:
        fail(f"invalid --upstream: {exc}")
    if (
        settings.upstream_kind == "bybit"
        and load_upstream_credentials(service.store, service.kek) is None
    ):
        fail(
            "--upstream-kind bybit needs the exchange credentials first: "
            "keyplane upstream set-credentials --api-key KEY --db DATABASE"
        )
    return f"{url} (kind {settings.upstream_kind}, timeout {settings.upstream_timeout_s:g} s)"


def _display_db(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    return make_url(settings.database_url).render_as_string(hide_password=True)


@accounts_app.command("create")
def accounts_create(
    parent: Annotated[
        int | None, typer.Option("--parent", help="Master uid: make a sub account.")
    ] = None,
    username: Annotated[str, typer.Option(help="Account name.")] = "",
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a master account, or a sub account with --parent UID."""
    with service_for(db) as service:
        account = service.create_account(parent_uid=parent, username=username, actor=admin_actor())
    if as_json:
        print_json({"uid": account.uid})
    else:
        kind = "sub account" if parent else "master account"
        console.print(f"Created {kind} uid [bold]{account.uid}[/bold]")


@accounts_app.command("update")
def accounts_update(
    uid: int,
    limit: LimitOption = None,
    clear_limits: ClearLimitsOption = False,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Set rate-limit overrides for every key of an account (a key's own override wins)."""
    with service_for(db) as service:
        account = service.update_account_limits(
            uid, RateOverrides.parse(limit or []), clear=clear_limits, actor=admin_actor()
        )
    if as_json:
        print_json({"uid": account.uid, "rateLimits": dict(account.rate_limits.limits)})
    else:
        console.print(f"Updated account {uid}: {account.rate_limits.to_text() or 'defaults'}")


@accounts_app.command("freeze")
def accounts_freeze(uid: int, db: DbOption = None, as_json: JsonOption = False) -> None:
    """Freeze an account: every key of it gets retCode 10007 until unfrozen."""
    _set_frozen(uid, frozen=True, db=db, as_json=as_json)


@accounts_app.command("unfreeze")
def accounts_unfreeze(uid: int, db: DbOption = None, as_json: JsonOption = False) -> None:
    """Unfreeze an account: its keys work again."""
    _set_frozen(uid, frozen=False, db=db, as_json=as_json)


def _set_frozen(uid: int, *, frozen: bool, db: str | None, as_json: bool) -> None:
    with service_for(db) as service:
        account = service.set_account_frozen(uid, frozen, actor=admin_actor())
    if as_json:
        print_json({"uid": account.uid, "status": account.status.value})
    else:
        console.print(f"Account {uid} is {account.status.value}")


@accounts_app.command("list")
def accounts_list(db: DbOption = None, as_json: JsonOption = False) -> None:
    """List accounts."""
    with service_for(db) as service:
        accounts = service.store.list_accounts()
    if as_json:
        print_json(
            [
                {
                    "uid": a.uid,
                    "parentUid": a.parent_uid,
                    "username": a.username,
                    "status": a.status.value,
                    "createdAt": iso_utc(a.created_at_ms),
                }
                for a in accounts
            ]
        )
        return
    print_table(
        "accounts",
        ["uid", "parent", "username", "status", "created"],
        [
            (a.uid, a.parent_uid or "", a.username, a.status.value, iso_utc(a.created_at_ms))
            for a in accounts
        ],
    )


def _parse_permissions(text: str | None) -> Permissions | None:
    return None if text is None else Permissions.parse(text)


def _parse_ips(text: str | None) -> IpAllowlist | None:
    return None if text is None else IpAllowlist.parse(text)


@keys_app.command("create")
def keys_create(
    uid: Annotated[int, typer.Option(help="Account that owns the key.")],
    label: Annotated[str, typer.Option(help="Note shown with the key.")] = "",
    permissions: Annotated[
        str, typer.Option(help='e.g. "Spot:SpotTrade,ContractTrade:Order".')
    ] = "",
    read_only: Annotated[bool, typer.Option("--read-only", help="Read-only key.")] = False,
    ips: Annotated[
        str, typer.Option(help='Bound IPs/CIDRs, e.g. "127.0.0.1,10.0.0.0/8"; "*" = unbound.')
    ] = "*",
    rsa_public_key: Annotated[
        Path | None,
        typer.Option(
            "--rsa-public-key", help="PEM file: make an RSA key.", exists=True, dir_okay=False
        ),
    ] = None,
    daily_quota: DailyQuotaOption = None,
    replay_guard: ReplayGuardOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Issue a key; the HMAC secret is printed once and never again."""
    with service_for(db) as service:
        issued = service.create_key(
            uid,
            note=label,
            read_only=read_only,
            permissions=Permissions.parse(permissions),
            ips=IpAllowlist.parse(ips),
            rsa_public_key=rsa_public_key.read_text() if rsa_public_key else None,
            daily_quota=daily_quota,
            replay_guard=bool(replay_guard),
            actor=admin_actor(),
        )
    if as_json:
        print_json(_issued_json(issued))
        return
    print_kv("new key (the secret is shown only now)", {**_issued_json(issued), "uid": uid})


@keys_app.command("list")
def keys_list(
    uid: Annotated[int | None, typer.Option(help="Only keys of this account.")] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """List keys (revoked keys included, with their status); never secrets."""
    with service_for(db) as service:
        keys = service.store.list_keys(uid=uid)
    if as_json:
        print_json([_key_json(k) for k in keys])
        return
    print_table(
        "api keys",
        ["apiKey", "uid", "type", "status", "access", "expires", "ips", "note"],
        [
            (
                k.api_key,
                k.uid,
                k.key_type.value,
                k.status.value,
                "read" if k.read_only else "write",
                iso_utc(k.expires_at_ms)[:10] or "never",
                k.ips.to_text(),
                k.note,
            )
            for k in keys
        ],
    )


@keys_app.command("show")
def keys_show(api_key: str, db: DbOption = None, as_json: JsonOption = False) -> None:
    """Show one key's settings (never its secret)."""
    with service_for(db) as service:
        key = service.get_key(api_key)
    document = _key_json(key)
    if as_json:
        print_json(document)
        return
    document["permissions"] = key.permissions.to_text().replace(",", "\n") or "(none)"
    document["ips"] = key.ips.to_text()
    print_kv(f"api key {api_key}", document)


@keys_app.command("update")
def keys_update(
    api_key: str,
    permissions: Annotated[str | None, typer.Option(help="Replace all permissions.")] = None,
    ips: Annotated[
        str | None, typer.Option(help='Replace bound IPs; "*" = unbound (90-day expiry).')
    ] = None,
    read_only: Annotated[
        bool | None, typer.Option("--read-only/--read-write", help="Access mode.")
    ] = None,
    label: Annotated[str | None, typer.Option(help="New note.")] = None,
    limit: LimitOption = None,
    clear_limits: ClearLimitsOption = False,
    daily_quota: DailyQuotaOption = None,
    replay_guard: ReplayGuardOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Change a key's permissions, IPs, access mode, note, rate limits, daily quota or replay
    guard (live on every node within 1 s)."""
    with service_for(db) as service:
        key = service.update_key(
            api_key,
            read_only=read_only,
            permissions=_parse_permissions(permissions),
            ips=_parse_ips(ips),
            note=label,
            rate_limits=RateOverrides.parse(limit) if limit else None,
            clear_rate_limits=clear_limits,
            daily_quota=daily_quota,
            replay_guard=replay_guard,
            actor=admin_actor(),
        )
    if as_json:
        print_json(_key_json(key))
    else:
        console.print(f"Updated {api_key}")


@keys_app.command("rotate")
def keys_rotate(api_key: str, db: DbOption = None, as_json: JsonOption = False) -> None:
    """Issue a new key with the same settings; the old key works until you revoke it."""
    with service_for(db) as service:
        issued = service.rotate_key(api_key, actor=admin_actor())
    if as_json:
        print_json(_issued_json(issued))
        return
    print_kv("rotated key (the secret is shown only now)", _issued_json(issued))
    console.print(f"The old key {api_key} stays valid until: keyplane keys revoke {api_key}")


@keys_app.command("revoke")
def keys_revoke(api_key: str, db: DbOption = None, as_json: JsonOption = False) -> None:
    """Revoke a key for good: running servers refuse it within 1 s (retCode 10003)."""
    _change_status(api_key, "Revoked", KeyService.revoke_key, db=db, as_json=as_json)


@keys_app.command("suspend")
def keys_suspend(api_key: str, db: DbOption = None, as_json: JsonOption = False) -> None:
    """Suspend a key: running servers refuse it within 1 s (retCode 10007) until resumed."""
    _change_status(api_key, "Suspended", KeyService.suspend_key, db=db, as_json=as_json)


@keys_app.command("resume")
def keys_resume(api_key: str, db: DbOption = None, as_json: JsonOption = False) -> None:
    """Lift a suspension: the key works again on running servers within 1 s."""
    _change_status(api_key, "Resumed", KeyService.resume_key, db=db, as_json=as_json)


def _change_status(
    api_key: str,
    done: str,
    change: Callable[..., ApiKey],
    *,
    db: str | None,
    as_json: bool,
) -> None:
    with service_for(db) as service:
        key = change(service, api_key, actor=admin_actor())
    if as_json:
        print_json(_key_json(key))
    else:
        console.print(f"{done} {api_key}")


@kek_app.command("generate")
def kek_generate() -> None:
    """Print a new key-encryption key for KEYPLANE_KEK (base64 of 32 bytes)."""
    print(KeyEncryptionKey.generate().to_base64().reveal())


def main() -> None:
    """Console entry point."""
    app(prog_name="keyplane")


if __name__ == "__main__":  # pragma: no cover
    main()
