"""The Alembic migrations build exactly the schema in keyplane.store.schema."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select

from keyplane.store import open_store
from keyplane.store.schema import metadata, store_meta
from keyplane.store.sql import MIGRATIONS_DIR, make_engine, upgrade_to_head

#: the newest migration; bump together with each new file in migrations/versions
HEAD = "0009"


class TestMigrations:
    def test_models_and_migrations_agree(self, sql_url: str) -> None:
        """After upgrading to head, autogenerate finds no difference from schema.metadata."""
        store = open_store(sql_url)
        try:
            with store.engine.connect() as conn:
                context = MigrationContext.configure(conn, opts={"compare_type": True})
                assert compare_metadata(context, metadata) == []
        finally:
            store.close()

    def test_head_is_recorded_and_revision_row_starts_at_zero(self, sql_url: str) -> None:
        """The database is stamped at head and store_meta holds revision=0."""
        engine = make_engine(sql_url)
        try:
            upgrade_to_head(engine)
            upgrade_to_head(engine)  # idempotent
            with engine.connect() as conn:
                assert MigrationContext.configure(conn).get_current_revision() == HEAD
                rows = conn.execute(select(store_meta.c.name, store_meta.c.value)).all()
                assert [tuple(r) for r in rows] == [("revision", 0)]
                names = set(inspect(conn).get_table_names())
            assert {"accounts", "api_keys", "store_meta", "alembic_version"} <= names
        finally:
            engine.dispose()

    def test_migrations_ship_inside_the_package(self) -> None:
        """env.py, the script template and the versions live in the installed package."""
        assert (MIGRATIONS_DIR / "env.py").is_file()
        assert (MIGRATIONS_DIR / "script.py.mako").is_file()
        assert list((MIGRATIONS_DIR / "versions").glob("0001_*.py"))
        assert list((MIGRATIONS_DIR / "versions").glob(f"{HEAD}_*.py"))
