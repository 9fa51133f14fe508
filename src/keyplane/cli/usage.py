"""`keyplane usage`: a summary of the usage log (one row per request that named an api key).

    keyplane usage [--key APIKEY] [--since 1h] [--by endpoint|status] [--json] [--db URL]

Reads Store.usage_summary (one GROUP BY in the database). Rows still queued in a running node's
memory (up to usage_flush_ms, 1 s by default) or spilled during a database outage show up once
the node writes or replays them.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from keyplane.cli.common import (
    DbOption,
    JsonOption,
    KeyFilterOption,
    SinceOption,
    fail,
    plain_store,
    since_cutoff_ms,
)
from keyplane.cli.output import console, print_json, print_table
from keyplane.keys import iso_utc
from keyplane.usage import UsageSummaryRow

__all__ = ["usage"]


def _group_json(row: UsageSummaryRow) -> dict[str, Any]:
    return {
        "group": row.group,
        "requests": row.requests,
        "errors": row.errors,
        "avgLatencyUs": row.avg_latency_us,
        "p50LatencyUs": row.p50_latency_us,
        "p99LatencyUs": row.p99_latency_us,
        "maxLatencyUs": row.max_latency_us,
    }


def usage(
    key: KeyFilterOption = None,
    since: SinceOption = None,
    by: Annotated[
        str, typer.Option("--by", help="Group by endpoint (METHOD /path) or status (HTTP/retCode).")
    ] = "endpoint",
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Summarise the usage log: requests, errors and latency (µs: average, p50, p99, max) per
    endpoint or status."""
    if by not in ("endpoint", "status"):
        fail(f"--by must be endpoint or status, not {by!r}")
    since_ms = since_cutoff_ms(since)
    with plain_store(db) as store:  # no KEK needed: usage rows hold no secret
        rows = store.usage_summary(
            api_key=key, since_ms=since_ms, by="endpoint" if by == "endpoint" else "status"
        )
    requests = sum(r.requests for r in rows)
    errors = sum(r.errors for r in rows)
    if as_json:
        print_json(
            {
                "by": by,
                "apiKey": key,
                "since": None if since_ms is None else iso_utc(since_ms),
                "requests": requests,
                "errors": errors,
                "groups": [_group_json(r) for r in rows],
            }
        )
        return
    title = f"usage by {by}" + (f" of {key}" if key else "") + (f" since {since}" if since else "")
    print_table(
        title,
        [by, "requests", "errors", "avg µs", "p50 µs", "p99 µs", "max µs"],
        [
            (
                r.group,
                r.requests,
                r.errors,
                r.avg_latency_us,
                r.p50_latency_us,
                r.p99_latency_us,
                r.max_latency_us,
            )
            for r in rows
        ],
    )
    console.print(f"{requests} requests, {errors} errors", highlight=False)
