"""Printing for the CLI: Rich tables for people, one JSON document on stdout for machines."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["console", "err_console", "print_json", "print_kv", "print_table"]

#: line width for output written to a pipe or file, where Rich would assume 80 columns and
#: squeeze table cells (COLUMNS, when set, still wins)
_PIPED_WIDTH = 200
console = Console()
if not console.is_terminal and "COLUMNS" not in os.environ:
    console = Console(width=_PIPED_WIDTH)
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
    """A table with a header row; only the `wrap` columns fold, the rest (ids, dates) never do.
    Piped or redirected (no terminal), rows are not squeezed into 80 columns (see console)."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold", no_wrap=column not in wrap)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)
