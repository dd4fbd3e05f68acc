"""Real databases for tests: a fresh Postgres database per test session, or SQLite.

`CANARY_TEST_DATABASE_URL` names the Postgres server to use (default: the
development machines' 127.0.0.1:5432, database `test`, user `postgres`); the
fixture creates a database of its own there and drops it afterwards. An
unreachable server fails the tests, it does not skip them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, make_url, text

DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def admin_url() -> str:
    return os.environ.get("CANARY_TEST_DATABASE_URL", DEFAULT_ADMIN_URL)


@contextmanager
def fresh_database() -> Iterator[str]:
    """A URL of a new, empty Postgres database, dropped when the block ends."""
    admin = make_url(admin_url())
    name = f"canary_test_{uuid.uuid4().hex[:12]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        engine.dispose()
        pytest.fail(f"Postgres at {admin.render_as_string()} is needed for store tests: {exc}")
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A URL of a fresh, empty Postgres database, dropped at the end of the session."""
    with fresh_database() as url:
        yield url


@pytest.fixture
def postgres_test_url() -> Iterator[str]:
    """A Postgres database of this test's own, for tests that read every row of a table
    (a delivery worker takes whatever the outbox holds, not only its test's rollout)."""
    with fresh_database() as url:
        yield url
