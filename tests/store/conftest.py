"""Fixtures for the store contract suite: every test runs on memory, SQLite and PostgreSQL.

PostgreSQL tests get a fresh schema each (see tests/_services.py); they skip when no server
answers at KEYPLANE_TEST_POSTGRES_URL, and fail instead under CI=true.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from keyplane.store import MemoryStore, Store, open_store
from tests._services import fresh_postgres_schema, postgres_url_or_skip

BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]
SQL_BACKENDS = BACKENDS[1:]


@contextmanager
def empty_database(backend: str, tmp_path: Path) -> Iterator[str | None]:
    """The URL of an empty database of backend ("memory" gives None); dropped afterwards."""
    if backend == "memory":
        yield None
    elif backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'db' / 'keyplane.db'}"
    else:
        with fresh_postgres_schema(postgres_url_or_skip()) as url:
            yield url


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str | None]:
    """An empty database per backend: None (memory), a SQLite file URL, a PostgreSQL URL."""
    with empty_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture(params=SQL_BACKENDS)
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty SQL database URL (SQLite file, PostgreSQL fresh schema), not yet migrated."""
    with empty_database(request.param, tmp_path) as url:
        assert url is not None
        yield url


@pytest.fixture
def store(db_url: str | None) -> Iterator[Store]:
    """A migrated, empty store on each backend; closed after the test."""
    made: Store = MemoryStore() if db_url is None else open_store(db_url)
    yield made
    made.close()
