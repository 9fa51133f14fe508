"""The revocation broadcast on PostgreSQL: LISTEN keyplane_revision.

Every SqlStore write on PostgreSQL queues NOTIFY keyplane_revision '<schema>:<revision>:<ms>'
inside its transaction, so the notice reaches every listening node the moment the write commits,
whichever process made it (a node, or `keyplane keys revoke` on another machine). A node listens
on one dedicated autocommit connection and drops its key cache on each notice for its schema;
the revision poll keeps running underneath as the safety net, so a lost connection costs at most
one poll interval.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio
import psycopg
import structlog
from sqlalchemy.engine import URL

from keyplane.store.sql import REVISION_CHANNEL

__all__ = ["RevisionNotice", "lag_ms", "listen_for_revisions", "parse_notice", "psycopg_conninfo"]

log = structlog.get_logger("keyplane.store")

#: seconds between reconnection attempts while PostgreSQL is unreachable.
_RECONNECT_S = 0.5


class RevisionNotice:
    """One notice: revision (int) and sent_ms (int, writer's wall clock, ms since epoch)."""

    __slots__ = ("revision", "sent_ms")

    def __init__(self, revision: int, sent_ms: int) -> None:
        self.revision = revision
        self.sent_ms = sent_ms


def parse_notice(payload: str, schema: str) -> RevisionNotice | None:
    """Parse "<schema>:<revision>:<ms>"; None when it is about another schema's store, or
    malformed (never raises)."""
    head, _, sent = payload.rpartition(":")
    origin, _, revision = head.rpartition(":")
    if origin != schema:
        return None
    try:
        return RevisionNotice(int(revision), int(sent))
    except ValueError:
        return None


def psycopg_conninfo(url: URL) -> str:
    """A libpq connection string for a postgresql+psycopg:// SQLAlchemy URL (password kept)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


async def listen_for_revisions(
    url: URL,
    on_notice: Callable[[RevisionNotice], None],
    on_disconnect: Callable[[], None],
) -> None:
    """Run forever: LISTEN on REVISION_CHANNEL and call on_notice for each notice.

    on_disconnect() is called whenever the listening connection is lost (notices may have been
    missed, so the caller should drop its cache); the listener reconnects every 0.5 s.
    Cancel the surrounding task to stop it.
    """
    conninfo = psycopg_conninfo(url)
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                cursor = await conn.execute("SELECT current_schema()")
                row = await cursor.fetchone()
                schema = str(row[0]) if row else ""
                await conn.execute(f"LISTEN {REVISION_CHANNEL}")
                log.info("listening for revocations", channel=REVISION_CHANNEL, schema=schema)
                on_disconnect()  # notices may have been missed while (re)connecting
                async for notify in conn.notifies():
                    notice = parse_notice(notify.payload, schema)
                    if notice is not None:
                        on_notice(notice)
        except psycopg.Error as exc:
            log.warning("revocation listener lost its connection", error=type(exc).__name__)
            on_disconnect()
        await anyio.sleep(_RECONNECT_S)


def lag_ms(notice: RevisionNotice) -> int:
    """ms between the write's commit-time stamp and now (wall clocks; for the lag metric)."""
    return time.time_ns() // 1_000_000 - notice.sent_ms
