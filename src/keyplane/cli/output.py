"""Printing for the CLI: Rich tables for people, one JSON document on stdout for machines."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["console", "err_console", "print_json", "print_kv", "print_table"]

console = Console()
err_console = Console(stderr=True)


def print_json(document: Any) -> None:
    """Write exactly one JSON document to stdout."""
    print(json.dumps(document, indent=2, ensure_ascii=False))


def print_kv(title: str, rows: Mapping[str, Any]) -> None:
    """A two-column table of field -> value."""
    table = Table(title=title, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for name, value in rows.items():
        table.add_row(name, "" if value is None else str(value))
    console.print(table)


def print_table(
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    wrap: Sequence[str] = ("ips", "note", "username"),
) -> None:
    """A table with a header row; only the `wrap` columns fold, the rest (ids, dates) never do."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold", no_wrap=column not in wrap)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)
