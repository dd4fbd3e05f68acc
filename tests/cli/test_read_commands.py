"""Commands that read the store never create or change one.

`status` and `history` (and the manual commands, which add a row to an existing
store only) are run in an empty folder against every form of store URL that
names nothing: the default, a relative or absolute SQLite path, `sqlite:///`
URLs, an in-memory database, an empty file and a Postgres database that does not
exist. Each says in one line how to make a store, exits 1, and leaves the folder
(and the Postgres server) as it was. Reading a real store leaves its file
byte-for-byte unchanged.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

from tests.cli.shell import canaryctl
from tests.databases import admin_url

pytestmark = pytest.mark.long(seconds=50)

KEY = "llm/support-bot-v7"

# every command goes through the same opening of the store; these cover each kind
COMMANDS = [
    pytest.param(["status"], id="status"),
    pytest.param(["status", KEY, "--output", "json"], id="status-name-json"),
    pytest.param(["history", KEY], id="history"),
    pytest.param(["pause", KEY], id="pause"),
]

# (how the store is named, in the folder `d`) -> (arguments, environment)
SQLITE_FORMS = {
    "default": lambda d: ([], {}),
    "env-url": lambda d: ([], {"CANARY_DATABASE_URL": "sqlite:///from-env.db"}),
    "relative-path": lambda d: (["--database", "audit.db"], {}),
    "absolute-path": lambda d: (["--database", str(d / "audit.db")], {}),
    "sqlite-relative-url": lambda d: (["--database", "sqlite:///audit.db"], {}),
    "sqlite-absolute-url": lambda d: (["--database", f"sqlite:///{d / 'audit.db'}"], {}),
    "sqlite-driver-url": lambda d: (["--database", "sqlite+pysqlite:///audit.db"], {}),
    "nested-missing-dir": lambda d: (["--database", "no/such/dir/audit.db"], {}),
}


def _check_refused(done_stderr: str, returncode: int, *, sqlite: bool) -> None:
    assert returncode == 1, done_stderr
    assert "Traceback" not in done_stderr
    [line] = done_stderr.strip().splitlines()
    assert line.startswith("error: ")
    assert "canaryctl db upgrade" in line
    if sqlite:
        assert "canaryctl demo" in line


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("form", sorted(SQLITE_FORMS))
def test_no_sqlite_store_is_created(tmp_path: Path, command: list[str], form: str) -> None:
    args, env = SQLITE_FORMS[form](tmp_path)
    done = canaryctl(*command, *args, cwd=tmp_path, env=env)
    _check_refused(done.stderr, done.returncode, sqlite=True)
    assert "no store at" in done.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", COMMANDS)
def test_an_in_memory_database_is_refused(tmp_path: Path, command: list[str]) -> None:
    done = canaryctl(*command, "--database", "sqlite://", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip() == "error: sqlite:// is an in-memory database, which holds no store"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", COMMANDS)
def test_an_empty_file_is_left_as_it_is(tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "empty.db").touch()
    done = canaryctl(*command, "--database", "empty.db", cwd=tmp_path)
    _check_refused(done.stderr, done.returncode, sqlite=True)
    assert "has no tables" in done.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["empty.db"]
    assert (tmp_path / "empty.db").stat().st_size == 0


@pytest.mark.parametrize("command", COMMANDS)
def test_a_missing_postgres_database_is_not_created(tmp_path: Path, command: list[str]) -> None:
    server = make_url(admin_url())
    missing = server.set(database="canary_never_created").render_as_string(hide_password=False)
    done = canaryctl(*command, "--database", missing, cwd=tmp_path)
    _check_refused(done.stderr, done.returncode, sqlite=False)
    assert 'database "canary_never_created" does not exist' in done.stderr
    assert "create the database" in done.stderr
    engine = create_engine(server)
    try:
        with engine.connect() as connection:
            found = connection.execute(
                text("SELECT 1 FROM pg_database WHERE datname = 'canary_never_created'")
            ).all()
    finally:
        engine.dispose()
    assert found == []
    assert list(tmp_path.iterdir()) == []


def test_reading_a_store_changes_nothing(tmp_path: Path) -> None:
    done = canaryctl("demo", "--database", "demo.db", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    before = hashlib.sha256((tmp_path / "demo.db").read_bytes()).hexdigest()
    for command in (["status"], ["status", KEY], ["history", KEY], ["history", KEY, "-o", "json"]):
        read = canaryctl(*command, "--database", "demo.db", cwd=tmp_path)
        assert read.returncode == 0, read.stderr
        assert KEY in read.stdout
    assert hashlib.sha256((tmp_path / "demo.db").read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.db"]
