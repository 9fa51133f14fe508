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


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A table with a header row."""
    table = Table(title=title)
    for i, column in enumerate(columns):
        # the first column is the identifier (apiKey, uid): never wrapped, so it can be copied
        table.add_column(column, overflow="fold", no_wrap=i == 0, min_width=None)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)
