"""Serving the dashboard: the store opened read-only, and a server in the background.

`canaryctl dashboard` opens the store named on its command line with
`open_store`; the controller serves the same pages on CANARY_DASHBOARD_PORT over
its own store. A SQLite file is opened read-only through a `file:` URI, which
never creates a missing file; whether the store is there and has its tables is
asked again on every page, so a store that appears (a demo run later) or goes
away is shown as it is, as a page or as a 503 with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import inspect, make_url
from sqlalchemy.exc import ArgumentError

from controller.api.server import BackgroundServer
from controller.dashboard.web import DEFAULT_PORT, REFRESH_SECONDS, create_app
from controller.errors import PermanentError
from controller.settings import redact_url
from controller.store.sql import SqlStore


@dataclass(frozen=True)
class OpenedStore:
    """A store for the dashboard: how to name it, and what to say when it is missing."""

    store: SqlStore
    source: str  # the URL without its password
    hint: str
    path: Path | None = None  # a SQLite file's

    def problem(self) -> str | None:
        """Why the store cannot be shown now, or None; the database's own errors are raised."""
        if self.path is not None and not self.path.is_file():
            return f"no store at {self.path}"
        with self.store.engine.connect() as connection:
            if not inspect(connection).has_table("rollouts"):
                return f"{self.source} is not a canary-controller store (it has no tables)"
        return None


def open_store(database: str) -> OpenedStore:
    """The store at `database` (a SQLAlchemy URL or a SQLite file), never created or
    changed by opening it; PermanentError for what can never be a store."""
    url = database if "://" in database else f"sqlite:///{database}"
    shown = redact_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise PermanentError(f"{shown} is not a database URL or a SQLite file: {exc}") from exc
    upgrade = f"`CANARY_DATABASE_URL={shown} canaryctl db upgrade`"
    if parsed.get_backend_name() != "sqlite":
        return OpenedStore(SqlStore(url), shown, f"Create its tables with {upgrade}.")
    if parsed.database in (None, "", ":memory:"):
        raise PermanentError(f"{shown} is an in-memory database, which holds no store")
    path = Path(parsed.database).resolve()
    # SQLite creates a missing file on connect; a `file:` URI with a mode never does
    read_only = parsed.set(
        database=f"file:{quote(str(path))}", query={**parsed.query, "mode": "ro", "uri": "true"}
    )
    return OpenedStore(
        SqlStore(read_only.render_as_string(hide_password=False)),
        shown,
        f"Run `canaryctl demo` for a demo store, or create an empty one with {upgrade}.",
        path,
    )


class DashboardServer(BackgroundServer):
    """The dashboard's pages from a background thread until `stop()`.

    The default host is loopback: the pages have no authentication (they show
    the audit, PromQL included), so serving them further is asked for explicitly.
    """

    def __init__(
        self,
        opened: OpenedStore,
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        refresh_seconds: int = REFRESH_SECONDS,
    ) -> None:
        super().__init__(
            create_app(
                opened.store,
                source=opened.source,
                hint=opened.hint,
                problem=opened.problem,
                clock=clock,
                refresh_seconds=refresh_seconds,
            ),
            host=host,
            port=port,
            name="dashboard",
            serves="the dashboard",
        )
