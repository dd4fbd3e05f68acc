"""The tests' own Postgres: a throwaway cluster starts, serves, and leaves nothing behind.

`tests/databases.py` starts one when nothing answers at the configured URL (a
machine without Postgres; checked by running `tests/store` in a network
namespace where nothing listens on 5432). Here one is started directly, used by
the installed `canaryctl` in an empty folder, and stopped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.cli.shell import canaryctl
from tests.postgres import LOOPBACK, ThrowawayPostgres, answers


@pytest.fixture(scope="module")
def throwaway() -> Iterator[ThrowawayPostgres]:
    server = ThrowawayPostgres().start()
    try:
        yield server
    finally:
        server.stop()


def test_it_serves_the_test_database_to_the_postgres_user(throwaway: ThrowawayPostgres) -> None:
    engine = create_engine(throwaway.url)
    try:
        with engine.connect() as connection:
            row = connection.execute(text("SELECT current_user, current_database()")).one()
            address = connection.execute(text("SELECT inet_server_addr()::text")).scalar_one()
    finally:
        engine.dispose()
    assert tuple(row) == ("postgres", "test")
    assert address.startswith(LOOPBACK)


def test_canaryctl_makes_and_reads_a_store_on_it(
    tmp_path: Path, throwaway: ThrowawayPostgres
) -> None:
    url = throwaway.url.removesuffix("/test") + "/postgres"
    missing = canaryctl("status", "--database", url, cwd=tmp_path)
    assert missing.returncode == 1
    assert "has no tables" in missing.stderr
    upgraded = canaryctl("db", "upgrade", cwd=tmp_path, env={"CANARY_DATABASE_URL": url})
    assert upgraded.returncode == 0, upgraded.stderr
    status = canaryctl("status", "--database", url, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert status.stdout.strip() == "no rollouts in the store yet"
    assert list(tmp_path.iterdir()) == []


def test_stopping_it_leaves_nothing_behind() -> None:
    server = ThrowawayPostgres().start()
    assert answers(LOOPBACK, server.port)
    server.stop()
    assert not answers(LOOPBACK, server.port)
    assert not server.directory.exists()
    assert server.process is not None and server.process.returncode is not None
