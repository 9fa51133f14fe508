"""keyplane.store.usage_copy: the unescaped fast path is taken only when it gives the same COPY
text as escaping every field (the contract suite proves PostgreSQL reads that text back)."""

from __future__ import annotations

import random

from keyplane.store.usage_copy import _escaped_rows, usage_copy_text
from keyplane.usage import UsageEvent

#: characters COPY text treats specially, and a few ordinary ones
_ALPHABET = ["a", "Z", "9", "-", "\t", "\n", "\r", "\\", "N", "\x00", "é", "€"]


def _text(rng: random.Random, special: bool) -> str:
    pool = _ALPHABET if special else _ALPHABET[:4]
    return "".join(rng.choice(pool) for _ in range(rng.randint(1, 12)))


def _row(rng: random.Random, i: int, special: bool) -> UsageEvent:
    known = rng.random() < 0.7
    return UsageEvent(
        at_ms=1_700_000_000_000 + i,
        api_key=_text(rng, special),
        key_id=i if known else None,
        uid=100000 + i if known else None,
        method="GET",
        path="/v5/" + _text(rng, special),
        http_status=200,
        ret_code=0 if known else 10003,
        request_bytes=rng.randint(0, 999),
        response_bytes=rng.randint(0, 999),
        latency_us=rng.randint(1, 99999),
        client_ip=_text(rng, special),
        authenticated=known,
        row_id=f"node-{i}",
    )


def test_fast_path_matches_the_escaped_text() -> None:
    """500 random batches, clean or with one odd text somewhere: same bytes either way, one
    line per row."""
    rng = random.Random(7)
    for trial in range(500):
        special = trial % 2 == 1
        rows = [_row(rng, i, special and rng.random() < 0.2) for i in range(rng.randint(1, 20))]
        text = usage_copy_text(rows)
        assert text == _escaped_rows(rows).encode("utf-8")
        assert text.count(b"\n") == len(rows)


def test_overlong_texts_are_cut_to_their_columns() -> None:
    """api_key 64, method 8, path 255 and client_ip 64 characters; row_id is never cut."""
    row = _row(random.Random(1), 1, False)._replace(
        api_key="k" * 70,
        method="M" * 9,
        path="/" + "p" * 300,
        client_ip="1" * 70,
        row_id="r" * 80,
    )
    fields = usage_copy_text([row]).decode().rstrip("\n").split("\t")
    assert [len(fields[i]) for i in (1, 4, 5, 11, 13)] == [64, 8, 255, 64, 80]
