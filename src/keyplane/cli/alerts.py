"""`keyplane alerts`: the alert log (quota.75, rate.75, expiry alerts recorded by serving nodes).

    keyplane alerts list [--key APIKEY] [--since 1h|30m|2d] [--limit N] [--json] [--db URL]

Reads Store.list_alerts: one row per key per condition per window, exactly the alerts the
notifiers were given (each by the one node that recorded it first). Anomaly alerts live in the
audit trail (`keyplane audit list`, action anomaly.flag).
"""

from __future__ import annotations

from typing import Any

import typer

from keyplane.alerts import AlertRecord
from keyplane.cli.common import (
    DbOption,
    JsonOption,
    KeyFilterOption,
    LimitOption,
    SinceOption,
    plain_store,
    since_cutoff_ms,
)
from keyplane.cli.output import print_json, print_table
from keyplane.keys import iso_utc

__all__ = ["alerts_app"]

alerts_app = typer.Typer(
    help="Quota, rate-limit and expiry alerts recorded by the serving nodes.",
    no_args_is_help=True,
)


def _record_json(record: AlertRecord) -> dict[str, Any]:
    return {**record.to_json(), "at": iso_utc(record.at_ms)}


@alerts_app.command("list")
def list_(
    key: KeyFilterOption = None,
    since: SinceOption = None,
    limit: LimitOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """List recorded alerts, oldest first: time, kind, key, condition, summary."""
    since_ms = since_cutoff_ms(since)
    with plain_store(db) as store:  # no KEK needed: alert rows hold no secret
        records = store.list_alerts(api_key=key, since_ms=since_ms, limit=limit)
    if as_json:
        print_json([_record_json(r) for r in records])
        return
    print_table(
        "alerts" + (f" of {key}" if key else "") + (f" since {since}" if since else ""),
        ["time", "kind", "api key", "condition", "summary"],
        [(iso_utc(r.at_ms), r.kind.value, r.api_key, r.condition, r.summary) for r in records],
        wrap=("summary", "condition"),
    )
