"""`keyplane audit` and `keyplane maintenance`: the tamper-evident audit trail.

    keyplane audit verify [--json]                 exit 0 intact, 1 naming the first broken row
    keyplane audit list [--key APIKEY] [--since 1h|30m|2d] [--limit N] [--json]
    keyplane audit export --format jsonl [--output FILE]
    keyplane maintenance purge [--retention-days 90] [--usage-retention-days 30] [--yes] [--json]

The chain and its checkpoint are checked by keyplane.audit.verify_chain; purge keeps it
verifiable with a checkpoint signed under a key derived from the KEK.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from keyplane.audit import AuditRecord
from keyplane.cli.common import (
    DbOption,
    JsonOption,
    KeyFilterOption,
    LimitOption,
    SinceOption,
    admin_actor,
    fail,
    opened,
    since_cutoff_ms,
)
from keyplane.cli.output import console, err_console, print_json, print_table
from keyplane.clock import SystemClock
from keyplane.keys import iso_utc
from keyplane.service import MIN_ALERT_RETENTION_DAYS, KeyService
from keyplane.settings import Settings

__all__ = ["audit_app", "maintenance_app"]

audit_app = typer.Typer(
    help="The hash-chained audit trail: verify, list, export.", no_args_is_help=True
)
maintenance_app = typer.Typer(
    help="Housekeeping: purge old audit rows and keys.", no_args_is_help=True
)


@contextmanager
def _service_and_settings(db: str | None) -> Iterator[tuple[KeyService, Settings]]:
    with opened(db) as (store, kek, settings):
        yield KeyService(store, kek, SystemClock()), settings


def _record_json(record: AuditRecord) -> dict[str, Any]:
    return {**record.to_json(), "at": iso_utc(record.event.at_ms)}


def _changes(record: AuditRecord) -> str:
    before, after = record.event.before, record.event.after
    names = list(dict.fromkeys([*before, *after]))
    parts = []
    for name in names:
        old = json.dumps(before[name], ensure_ascii=False) if name in before else ""
        new = json.dumps(after[name], ensure_ascii=False) if name in after else ""
        parts.append(f"{name}: {old} -> {new}" if old else f"{name}: {new}")
    return "\n".join(parts)


@audit_app.command("verify")
def verify(db: DbOption = None, as_json: JsonOption = False) -> None:
    """Walk the hash chain; exit 1 naming the first broken (edited, deleted) row."""
    with _service_and_settings(db) as (service, _):
        report = service.verify_audit()
    document: dict[str, Any] = {
        "intact": report.intact,
        "rows": report.rows,
        "checkpoint": report.checkpoint_id,
        "headHash": report.head_hash,
    }
    if report.broken is not None:
        document["brokenRow"] = report.broken.row_id
        document["reason"] = report.broken.reason
    if as_json:
        print_json(document)
    if report.broken is not None:
        err_console.print(
            f"[red]chain broken at row {report.broken.row_id}:[/red] {report.broken.reason}",
            highlight=False,
        )
        raise typer.Exit(1)
    if not as_json:
        since = f" (checkpoint at row {report.checkpoint_id})" if report.checkpoint_id else ""
        console.print(f"chain intact: {report.rows} rows{since}", highlight=False)
        console.print(f"head hash: {report.head_hash}", highlight=False)


@audit_app.command("list")
def list_(
    key: KeyFilterOption = None,
    since: SinceOption = None,
    limit: LimitOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """List audit events (oldest first): time, actor, action, target, changed fields, IP."""
    since_ms = since_cutoff_ms(since)
    with _service_and_settings(db) as (service, _):
        records = service.store.list_audit(
            target=None if key is None else f"key:{key}", since_ms=since_ms, limit=limit
        )
    if as_json:
        print_json([_record_json(r) for r in records])
        return
    print_table(
        "audit trail",
        ["id", "time", "actor", "action", "target", "changes", "ip"],
        [
            (
                r.id,
                iso_utc(r.event.at_ms),
                r.event.actor,
                r.event.action,
                r.event.target,
                _changes(r),
                r.event.source_ip or "",
            )
            for r in records
        ],
        wrap=("changes", "target", "actor"),
    )


@audit_app.command("export")
def export(
    fmt: Annotated[str, typer.Option("--format", help="Output format: jsonl.")] = "jsonl",
    output: Annotated[
        Path | None, typer.Option("--output", help="Write to FILE instead of stdout.")
    ] = None,
    db: DbOption = None,
) -> None:
    """Export every audit row, one JSON object per line, with prevHash and rowHash."""
    if fmt != "jsonl":
        fail(f"unknown --format {fmt!r}; supported: jsonl")
    with _service_and_settings(db) as (service, _):
        out = sys.stdout if output is None else output.open("w", encoding="utf-8")
        try:
            count = 0
            for record in service.store.iter_audit():
                out.write(json.dumps(_record_json(record), ensure_ascii=False) + "\n")
                count += 1
        finally:
            if output is not None:
                out.close()
    if output is not None:
        err_console.print(f"exported {count} audit rows to {output}", highlight=False)


@maintenance_app.command("purge")
def purge(
    retention_days: Annotated[
        int | None,
        typer.Option(
            "--retention-days",
            help="Keep this many days (default KEYPLANE_AUDIT_RETENTION_DAYS, 90).",
            min=1,
        ),
    ] = None,
    usage_retention_days: Annotated[
        int | None,
        typer.Option(
            "--usage-retention-days",
            help="Keep this many days of usage rows (default KEYPLANE_USAGE_RETENTION_DAYS, 30).",
            min=1,
        ),
    ] = None,
    alert_retention_days: Annotated[
        int | None,
        typer.Option(
            "--alert-retention-days",
            help=f"Keep this many days of alert rows, at least {MIN_ALERT_RETENTION_DAYS} "
            "(default KEYPLANE_ALERT_RETENTION_DAYS, 90).",
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete audit rows and revoked keys older than the retention, usage rows older than
    the usage retention and alert rows older than the alert retention; the audit chain stays
    verifiable (a signed checkpoint replaces the purged rows). An expiry alert's row stays
    until its key's expiry is older than the alert retention, so no alert is sent twice."""
    if alert_retention_days is not None and alert_retention_days < MIN_ALERT_RETENTION_DAYS:
        fail(
            f"--alert-retention-days must be at least {MIN_ALERT_RETENTION_DAYS}: a quota or "
            f"rate alert is sent once per UTC day, and purging its row before that day is over "
            f"would send it again (got {alert_retention_days})"
        )
    with _service_and_settings(db) as (service, settings):
        days = retention_days or settings.audit_retention_days
        usage_days = usage_retention_days or settings.usage_retention_days
        alert_days = alert_retention_days or settings.alert_retention_days
        if (
            not yes
            and sys.stdin.isatty()
            and not typer.confirm(
                f"Purge audit rows and revoked keys older than {days} days, "
                f"usage rows older than {usage_days} days, "
                f"alert rows older than {alert_days} days?"
            )
        ):
            raise typer.Exit(1)
        result = service.purge(
            retention_days=days,
            usage_retention_days=usage_days,
            alert_retention_days=alert_days,
            actor=admin_actor(),
        )
    through = 0 if result.checkpoint is None else result.checkpoint.through_id
    if as_json:
        print_json(
            {
                "auditRows": result.audit_rows,
                "throughRow": through,
                "keys": list(result.keys),
                "usageRows": result.usage_rows,
                "alertRows": result.alert_rows,
            }
        )
        return
    console.print(
        f"Purged {result.audit_rows} audit rows"
        + (f" (through row {through})" if through else "")
        + f" and {len(result.keys)} revoked keys older than {days} days, "
        + f"{result.usage_rows} usage rows older than {usage_days} days, "
        + f"{result.alert_rows} alert rows older than {alert_days} days.",
        highlight=False,
    )
    for api_key in result.keys:
        console.print(f"  {api_key}", highlight=False)
