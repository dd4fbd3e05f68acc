"""The dashboard's WSGI application: two read-only pages, their static files, errors.

    GET /                          the rollouts (?namespace=&phase= filter them)
    GET /rollouts/NAMESPACE/NAME   one rollout (?look=TICK: its grid at an earlier look)
    GET /static/FILE               the stylesheet and the refresh script, from the package

Read-only by construction: any other method is answered 405, and nothing here
holds a writing handle on anything but the response. An unknown rollout or look is
a 404 page, a malformed query a 400, and a store that cannot be read a 503 that
says why; no traceback reaches the browser. Templates are Jinja2 with autoescaping
on for every template, so whatever a policy or a person wrote (a cohort, a reason)
is shown as text. Nothing is loaded from elsewhere: the Content-Security-Policy
allows this origin only, and the pages work offline.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import parse_qs
from wsgiref.types import StartResponse, WSGIEnvironment

from jinja2 import Environment, PackageLoader, StrictUndefined
from sqlalchemy.exc import SQLAlchemyError

from controller.dashboard import formats
from controller.dashboard.pages import rollout_list, rollout_page
from controller.errors import CanaryError
from controller.store.base import RolloutStore

log = logging.getLogger(__name__)

#: the port `canaryctl dashboard` and the chart's dashboard Service use by default
DEFAULT_PORT = 8090
#: how often a page polls for a new version of itself while a rollout on it is live
REFRESH_SECONDS = 5

WsgiApp = Callable[[WSGIEnvironment, StartResponse], Iterable[bytes]]

_STATIC = {"dashboard.css": "text/css; charset=utf-8", "dashboard.js": "text/javascript"}

#: this origin only: no CDN, no inline script, no inline style
SECURITY_HEADERS = [
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self';"
        " connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
]


class _Unreadable(Exception):
    """The store is not there to be read (no file, no tables)."""


class _HttpError(Exception):
    def __init__(self, status: str, title: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.title, self.reason = status, title, reason


def templates() -> Environment:
    """The Jinja2 environment: autoescaping on for every template, whatever its name."""
    env = Environment(
        loader=PackageLoader("controller.dashboard", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        value=formats.value, count=formats.count, offset=formats.offset, age=formats.age
    )
    return env


@dataclass(frozen=True)
class _Static:
    body: bytes
    kind: str


def _static_files() -> dict[str, _Static]:
    folder = resources.files("controller.dashboard") / "static"
    return {
        name: _Static(folder.joinpath(name).read_bytes(), kind) for name, kind in _STATIC.items()
    }


def create_app(
    store: RolloutStore,
    *,
    source: str,
    hint: str = "",
    problem: Callable[[], str | None] = lambda: None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    refresh_seconds: int = REFRESH_SECONDS,
) -> WsgiApp:
    """The dashboard over `store`, which the pages call `source` (a URL without its
    password). `problem` is asked before every page why the store cannot be shown
    (None: it can); its answer, or the database's own error, is a 503, followed by
    `hint` (how to make a store, say)."""
    env = templates()
    static = _static_files()

    def render(name: str, **context: Any) -> bytes:
        return env.get_template(name).render(source=source, **context).encode()

    def page(environ: WSGIEnvironment) -> tuple[str, bytes]:
        path = environ.get("PATH_INFO", "/")
        missing = problem()
        if missing is not None:
            raise _Unreadable(missing)
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        if path == "/":
            listing = rollout_list(
                store, clock(), namespace=_one(query, "namespace"), phase=_one(query, "phase")
            )
            refresh = refresh_seconds if listing.live else 0
            return "200 OK", render("rollouts.html", listing=listing, refresh=refresh)
        parts = path.split("/")
        if len(parts) == 4 and parts[1] == "rollouts" and parts[2] and parts[3]:
            key = f"{parts[2]}/{parts[3]}"
            row = store.get(key)
            if row is None:
                raise _HttpError(
                    "404 Not Found", "No such rollout", f"no rollout {key} in the store"
                )
            tick = _tick(query)
            shown = rollout_page(
                store,
                row,
                clock(),
                tick=tick,
            )
            if tick is not None and (shown.look is None or shown.look.tick != tick):
                known = (
                    f"looks {shown.looks[0].tick} to {shown.looks[-1].tick}"
                    if shown.looks
                    else "no looks yet"
                )
                raise _HttpError(
                    "404 Not Found", "No such look", f"{key} has no look {tick} ({known})"
                )
            refresh = refresh_seconds if shown.row.live and shown.latest else 0
            return "200 OK", render("rollout.html", page=shown, refresh=refresh)
        raise _HttpError("404 Not Found", "Not found", f"nothing at {path}")

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "/")
        if method not in {"GET", "HEAD"}:
            body = b"the dashboard is read-only: act with canaryctl or Slack\n"
            return _answer(
                start_response,
                method,
                "405 Method Not Allowed",
                body,
                "text/plain; charset=utf-8",
                [("Allow", "GET, HEAD")],
            )
        if path.startswith("/static/"):
            found = static.get(path.removeprefix("/static/"))
            if found is not None:
                return _answer(
                    start_response,
                    method,
                    "200 OK",
                    found.body,
                    found.kind,
                    [("Cache-Control", "max-age=300")],
                )
        try:
            status, body = page(environ)
        except _HttpError as exc:
            status = exc.status
            body = render(
                "error.html",
                status=exc.status,
                title=exc.title,
                reason=exc.reason,
                hint="",
                refresh=0,
            )
        except (_Unreadable, CanaryError, SQLAlchemyError) as exc:
            reason = _reason(exc)
            log.warning("dashboard: the store cannot be read: %s", reason)
            status = "503 Service Unavailable"
            body = render(
                "error.html",
                status=status,
                title="The store cannot be read",
                reason=reason,
                hint=hint,
                refresh=0,
            )
        except Exception:
            # a bug, or a record no version of this code wrote: logged here, and a page
            # (never a traceback) for the browser
            log.exception("dashboard: %s failed", path)
            status = "500 Internal Server Error"
            body = render(
                "error.html",
                status=status,
                title="The dashboard failed",
                reason=f"showing {path} failed; the dashboard's log has the details",
                hint="",
                refresh=0,
            )
        return _answer(
            start_response,
            method,
            status,
            body,
            "text/html; charset=utf-8",
            [("Cache-Control", "no-store")],
        )

    return app


def _reason(exc: Exception) -> str:
    if isinstance(exc, SQLAlchemyError):
        return str(getattr(exc, "orig", None) or exc).strip()
    return str(exc)


def _one(query: dict[str, list[str]], name: str) -> str:
    values = query.get(name) or [""]
    return values[-1].strip()


def _tick(query: dict[str, list[str]]) -> int | None:
    given = _one(query, "look")
    if not given:
        return None
    try:
        return int(given)
    except ValueError:
        raise _HttpError(
            "400 Bad Request", "Bad request", f"look={given!r}: a look is a whole number"
        ) from None


def _answer(
    start_response: StartResponse,
    method: str,
    status: str,
    body: bytes,
    kind: str,
    headers: list[tuple[str, str]],
) -> list[bytes]:
    start_response(
        status,
        [
            ("Content-Type", kind),
            ("Content-Length", str(len(body))),
            *SECURITY_HEADERS,
            *headers,
        ],
    )
    return [] if method == "HEAD" else [body]
