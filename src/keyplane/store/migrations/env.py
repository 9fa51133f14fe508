"""Alembic environment for the keyplane store.

keyplane runs migrations programmatically (keyplane.store.sql.upgrade_to_head): the caller passes
an open connection in config.attributes["connection"], so no alembic.ini is needed. Without one,
the URL comes from the "sqlalchemy.url" main option (e.g. `alembic -x` style use by developers).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from keyplane.store.schema import metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations on the given connection, or on a new engine for sqlalchemy.url."""
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("pass a connection in config.attributes or set sqlalchemy.url")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("offline (--sql) migrations are not supported; run them online")
run_migrations_online()
