"""`keyplane alerts`: the alert log (quota.75, rate.75, expiry alerts recorded by serving nodes).

    keyplane alerts list [--key APIKEY] [--since 1h|30m|2d] [--limit N] [--json] [--db URL]

Reads Store.list_alerts: one row per key per condition per window, exactly the alerts the
notifiers were given (each by the one node that recorded it first). Anomaly alerts live in the
audit trail (`keyplane audit list`, action anomaly.flag).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from keyplane.alerts import AlertRecord
from keyplane.cli.common import DbOption, JsonOption, fail, parse_since, settings_for
from keyplane.cli.output import print_json, print_table
from keyplane.clock import SystemClock
from keyplane.keys import iso_utc
from keyplane.store import open_store

__all__ = ["alerts_app"]

alerts_app = typer.Typer(
    help="Quota, rate-limit and expiry alerts recorded by the serving nodes.",
    no_args_is_help=True,
)


def _record_json(record: AlertRecord) -> dict[str, Any]:
    return {**record.to_json(), "at": iso_utc(record.at_ms)}


@alerts_app.command("list")
def list_(
    key: Annotated[
        str | None, typer.Option("--key", help="Only the alerts of this api key.")
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Only the last 30m, 1h, 2d, ...")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Only the newest N.", min=1)] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """List recorded alerts, oldest first: time, kind, key, condition, summary."""
    try:
        since_ms = None if since is None else SystemClock().now_ms() - parse_since(since)
    except ValueError as exc:
        fail(str(exc))
    settings = settings_for(db)  # no KEK needed: alert rows hold no secret
    try:
        store = open_store(settings.database_url)
    except Exception as exc:
        fail(f"cannot open the database: {type(exc).__name__}")
    try:
        records = store.list_alerts(api_key=key, since_ms=since_ms, limit=limit)
    finally:
        store.close()
    if as_json:
        print_json([_record_json(r) for r in records])
        return
    print_table(
        "alerts" + (f" of {key}" if key else "") + (f" since {since}" if since else ""),
        ["time", "kind", "api key", "condition", "summary"],
        [(iso_utc(r.at_ms), r.kind.value, r.api_key, r.condition, r.summary) for r in records],
        wrap=("summary", "condition"),
    )
