"""Real databases for tests: a fresh Postgres database per test session, or SQLite.

The Postgres server is, in order: the one `CANARY_TEST_DATABASE_URL` names (an
admin URL such as `postgresql+psycopg://postgres@127.0.0.1:5432/test`; when it
is set and does not answer, the tests fail, they do not skip); the one at
127.0.0.1:5432 (user `postgres`, database `test`) when something answers there;
otherwise a throwaway cluster of the tests' own on a free loopback port
(`tests/postgres.py`), started on first use and stopped at the end of the
session (`tests/conftest.py`). The fixtures create a database of their own on
that server and drop it afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, make_url, text

from tests.postgres import ThrowawayPostgres, answers

DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


class _Server:
    """Which server this session uses, decided on first use."""

    url: str | None = None
    throwaway: ThrowawayPostgres | None = None


def admin_url() -> str:
    """The admin URL of the tests' Postgres server, starting a throwaway one if needed."""
    configured = os.environ.get("CANARY_TEST_DATABASE_URL")
    if configured:
        return configured
    if _Server.url is None:
        if answers("127.0.0.1", 5432):
            _Server.url = DEFAULT_ADMIN_URL
        else:
            _Server.throwaway = ThrowawayPostgres().start()
            _Server.url = _Server.throwaway.url
    return _Server.url


def stop_throwaway() -> None:
    """Stop the throwaway server, if one was started (at the end of the session)."""
    if _Server.throwaway is not None:
        _Server.throwaway.stop()
    _Server.url = _Server.throwaway = None


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
