"""Every wait on Postgres is bounded: a stopped, slow or black-holed database fails a
call within the configured timeouts (as a TransientError) instead of freezing it."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import make_url, text
from sqlalchemy.exc import OperationalError

from controller.errors import TransientError
from controller.settings import Settings
from controller.store.sql import DatabaseTimeouts, SqlStore, migrate
from tests.databases import postgres_test_url  # noqa: F401  (fixture)
from tests.metrics.servers import free_port
from tests.outage import BlackHoleProxy

SHORT = DatabaseTimeouts(connect_seconds=2, statement_seconds=0.5, pool_seconds=1)


@pytest.fixture
def proxied(postgres_test_url: str) -> Iterator[tuple[SqlStore, BlackHoleProxy]]:  # noqa: F811
    migrate(postgres_test_url)
    url = make_url(postgres_test_url)
    proxy = BlackHoleProxy(url.port or 5432)
    store = SqlStore(
        url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False),
        timeouts=SHORT,
    )
    try:
        yield store, proxy
    finally:
        proxy.restore()
        store.close()
        proxy.close()


def test_a_black_holed_database_fails_calls_within_the_timeouts(
    proxied: tuple[SqlStore, BlackHoleProxy],
) -> None:
    store, proxy = proxied
    assert store.rollouts() == []  # a pooled connection, open and answering
    proxy.black_hole()
    for _ in range(2):  # the open connection first, then a new one
        began = time.monotonic()
        with pytest.raises(TransientError):
            store.rollouts()
        # at most an answer (statement timeout + 1 s) and a connect (2 s), with slack
        assert time.monotonic() - began < SHORT.answer_seconds + SHORT.connect_seconds + 1.5
    proxy.restore()
    assert store.rollouts() == []  # and it recovers by itself


def test_a_connection_the_server_closed_is_replaced_at_checkout(
    postgres_test_url: str,  # noqa: F811
) -> None:
    """No ping at checkout: a pooled connection the server terminated (a restart, an
    administrator, an idle timeout) is seen closed on its socket and replaced, and the
    call succeeds on a new one instead of failing."""
    migrate(postgres_test_url)
    store = SqlStore(postgres_test_url, timeouts=SHORT)
    admin = SqlStore(postgres_test_url, timeouts=SHORT)
    try:
        with store.engine.connect() as c:
            first = c.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with admin.engine.begin() as c:
            # (with a timeout, it returns once the backend has gone)
            terminate = text("SELECT pg_terminate_backend(:p, 5000)")
            assert c.execute(terminate, {"p": first}).scalar()
        assert store.rollouts() is not None  # no TransientError
        with store.engine.connect() as c:
            assert c.execute(text("SELECT pg_backend_pid()")).scalar_one() != first
    finally:
        store.close()
        admin.close()


def test_migrating_a_black_holed_database_fails_instead_of_hanging(
    postgres_test_url: str,  # noqa: F811
) -> None:
    """`canaryctl run` migrates before anything else: a database that takes the
    connection and never answers must fail that step within the connect timeout."""
    url = make_url(postgres_test_url)
    proxy = BlackHoleProxy(url.port or 5432)
    proxy.black_hole()
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    try:
        began = time.monotonic()
        with pytest.raises(TransientError, match="unreachable"):
            migrate(proxied, timeouts=SHORT)
        assert time.monotonic() - began < SHORT.connect_seconds + 1.5
    finally:
        proxy.restore()
        proxy.close()
    migrate(postgres_test_url, timeouts=SHORT)  # the same timeouts let a real one through


def test_a_slow_statement_is_cancelled_by_the_server(
    proxied: tuple[SqlStore, BlackHoleProxy],
) -> None:
    store, _ = proxied
    began = time.monotonic()
    with (
        pytest.raises(OperationalError, match="statement timeout"),
        store.engine.connect() as connection,
    ):
        connection.execute(text("SELECT pg_sleep(5)"))
    assert time.monotonic() - began < 3


def test_a_stopped_database_fails_at_once() -> None:
    store = SqlStore(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/x", timeouts=SHORT)
    began = time.monotonic()
    with pytest.raises(TransientError, match=r"127\.0\.0\.1"):
        store.get("llm/bot")
    assert time.monotonic() - began < 1.5
    store.close()


def test_the_timeouts_come_from_settings_and_keep_the_urls_own_options() -> None:
    settings = Settings(
        database_connect_timeout_seconds=3,
        database_statement_timeout_seconds=1.5,
        database_keepalive_seconds=9,
        database_pool_timeout_seconds=2,
    )
    timeouts = DatabaseTimeouts.from_settings(settings)
    url = make_url("postgresql+psycopg://u@db/canary?options=-c%20search_path%3Daudit")
    assert timeouts.connect_args(url) == {
        "connect_timeout": 3,
        "keepalives": 1,
        "keepalives_idle": 9,
        "keepalives_interval": 3,
        "keepalives_count": 3,
        "tcp_user_timeout": 9000,
        "options": "-c search_path=audit -c statement_timeout=1500",
    }
    assert timeouts.pool_seconds == 2 and timeouts.answer_seconds == 2.5
