"""Usage rows as PostgreSQL COPY text, built on the caller's thread before any I/O.

Why not psycopg's Copy.write_row: it formats each row while the COPY is open, in the worker
thread that talks to PostgreSQL, so that thread needs the GIL for every row while the event
loop serves requests. Measured (bench/usage_overhead.py, 2 CPUs): the GIL hand-offs alone cost
the node about 10 µs of CPU per request and put the usage-log-on throughput at 0.78-0.85 of
usage-log-off. The usage writer instead calls Store.prepare_usage on the event loop (one
f-string per row, ~1 µs), and the worker thread only sends bytes (psycopg's Copy.write, which
waits on the socket with the GIL released). SQLite keeps sqlite3's executemany: the database
runs inside the node's process, so its insert work is node CPU whichever thread does it; a
single INSERT ... SELECT FROM json_each(<batch as JSON>) was tried and measured the same
(0.889 vs 0.879 on/off, 10 rounds each) for twice the insert CPU.

rule: PostgreSQL docs, COPY, "Text Format": one line per row, columns separated by a tab, NULL
written as \\N, and backslash, newline, carriage return and tab inside a value written as \\\\,
\\n, \\r and \\t. A NUL character cannot be stored in a PostgreSQL text value at all: it is
dropped here, so one odd header can never make a whole batch fail again and again.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from keyplane.store.memory import MAX_API_KEY_LENGTH
from keyplane.usage.model import UsageEvent

__all__ = [
    "MAX_CLIENT_IP_LENGTH",
    "MAX_METHOD_LENGTH",
    "MAX_PATH_LENGTH",
    "PreparedUsage",
    "fit_usage_row",
    "usage_copy_text",
]

#: usage_log column widths (characters) besides api_key (MAX_API_KEY_LENGTH).
MAX_METHOD_LENGTH = 8
MAX_PATH_LENGTH = 255
MAX_CLIENT_IP_LENGTH = 64

_SPECIAL = re.compile("[\\\\\t\n\r\x00]")
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\x00": None})


class PreparedUsage(list[UsageEvent]):
    """Usage rows (a list, in order) plus their COPY text: chunks of UTF-8 bytes, one line per
    row in UsageEvent field order. Made and extended by SqlStore.prepare_usage; append_usage
    sends the chunks as they are instead of encoding the rows again."""

    def __init__(self) -> None:
        super().__init__()
        self.copy_chunks: list[bytes] = []

    def add(self, rows: Sequence[UsageEvent]) -> None:
        """Append rows and their COPY text (usage_copy_text)."""
        self.extend(rows)
        self.copy_chunks.append(usage_copy_text(rows))


def _text(value: str, width: int) -> str:
    """value cut to width characters, COPY-escaped when it holds a special character."""
    return _escaped(value[:width])


def _escaped(value: str) -> str:
    return value if _SPECIAL.search(value) is None else value.translate(_ESCAPES)


def _nullable(value: int | None) -> str:
    return "\\N" if value is None else str(value)


def usage_copy_text(rows: Sequence[UsageEvent]) -> bytes:
    """The rows as COPY text (UTF-8) for `COPY usage_log (<UsageEvent fields>) FROM STDIN`.

    Texts are cut to their column widths (api_key 64, method 8, path 255, client_ip 64
    characters; never row_id, which must stay unique) and escaped; key_id / uid None become
    NULL; authenticated is t / f. Fast path: the batch is formatted without escaping and then
    checked as a whole (13 tabs and 1 newline per row, no backslash but those of the NULL
    markers, no CR or NUL); only a batch that fails the check is formatted again field by field
    with escapes.
    """
    text = _plain(rows)
    n = len(rows)
    nulls = sum([(r.key_id is None) + (r.uid is None) for r in rows])
    if (
        text.count("\t") != _TABS_PER_ROW * n
        or text.count("\n") != n
        or text.count("\\") != nulls  # only the NULL markers' backslashes
        or _UNSAFE.search(text)
    ):
        text = _escaped_rows(rows)
    return text.encode("utf-8")


_NULL = "\\N"
_TABS_PER_ROW = len(UsageEvent._fields) - 1
_UNSAFE = re.compile("[\r\x00]")


def _plain(rows: Sequence[UsageEvent]) -> str:
    key_width, null = MAX_API_KEY_LENGTH, _NULL
    return "".join(
        [
            f"{r.at_ms}\t{r.api_key[:key_width]}\t{null if r.key_id is None else r.key_id}\t"
            f"{null if r.uid is None else r.uid}\t{r.method[:MAX_METHOD_LENGTH]}\t"
            f"{r.path[:MAX_PATH_LENGTH]}\t{r.http_status}\t{r.ret_code}\t"
            f"{r.request_bytes}\t{r.response_bytes}\t{r.latency_us}\t"
            f"{r.client_ip[:MAX_CLIENT_IP_LENGTH]}\t{'t' if r.authenticated else 'f'}\t"
            f"{r.row_id}\n"
            for r in rows
        ]
    )


def _escaped_rows(rows: Sequence[UsageEvent]) -> str:
    key_width = MAX_API_KEY_LENGTH
    return "".join(
        [
            f"{r.at_ms}\t{_text(r.api_key, key_width)}\t{_nullable(r.key_id)}\t"
            f"{_nullable(r.uid)}\t{_text(r.method, MAX_METHOD_LENGTH)}\t"
            f"{_text(r.path, MAX_PATH_LENGTH)}\t{r.http_status}\t{r.ret_code}\t"
            f"{r.request_bytes}\t{r.response_bytes}\t{r.latency_us}\t"
            f"{_text(r.client_ip, MAX_CLIENT_IP_LENGTH)}\t{'t' if r.authenticated else 'f'}\t"
            f"{_escaped(r.row_id)}\n"
            for r in rows
        ]
    )


def fit_usage_row(row: UsageEvent) -> UsageEvent:
    """The row with its texts cut to their column widths (itself when they fit): the
    parameters of an INSERT (SQLite)."""
    if (
        len(row.api_key) <= MAX_API_KEY_LENGTH
        and len(row.client_ip) <= MAX_CLIENT_IP_LENGTH
        and len(row.path) <= MAX_PATH_LENGTH
        and len(row.method) <= MAX_METHOD_LENGTH
    ):
        return row
    return row._replace(
        api_key=row.api_key[:MAX_API_KEY_LENGTH],
        method=row.method[:MAX_METHOD_LENGTH],
        path=row.path[:MAX_PATH_LENGTH],
        client_ip=row.client_ip[:MAX_CLIENT_IP_LENGTH],
    )
