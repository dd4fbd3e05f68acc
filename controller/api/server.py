"""The controller's HTTP endpoints: `/healthz`, `/readyz`, `/metrics`, `/slack/actions`.

A deliberately small WSGI application on the standard library's `wsgiref`
server, with one thread per request, run in a background thread. It has three
read-only endpoints and no state of its own, so a web framework would add
nothing but weight; `/metrics` is prometheus-client's own WSGI app (content
negotiation, OpenMetrics, gzip), mounted as it is. One server can serve the
health endpoints and another `/metrics` (`health=False` / `metrics=False`), so
each can be bound to the address of those who need it; `POST /slack/actions`
(`slack_actions`, the only endpoint that changes anything, and only with Slack's
signature) can be served with them or on its own port, behind its own Ingress.

    server = ApiServer(metrics.registry, readiness, host="127.0.0.1", port=8080)
    server.start()
    ...
    readiness.mark_stopping()   # on SIGTERM: unready first,
    controller.stop()           # finish ticks, release leases,
    server.stop()               # then stop answering.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from types import TracebackType
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIEnvironment

from prometheus_client import CollectorRegistry, make_wsgi_app

from controller.api.health import Readiness

log = logging.getLogger(__name__)

#: The port the chart's probes, Service and ServiceMonitor use (tests/chart checks it).
DEFAULT_PORT = 8080
#: Slack's interactivity requests (buttons, modals), when the controller takes them
SLACK_ACTIONS_PATH = "/slack/actions"

WsgiApp = Callable[[WSGIEnvironment, StartResponse], Iterable[bytes]]


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    # A slow scrape must not hold up a probe; request threads never outlive the process.
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    """Access lines go to the logger at DEBUG (probes every few seconds), not to stderr.

    A client that stops sending (a body shorter than its Content-Length) loses its
    connection after `timeout` seconds instead of holding a thread forever."""

    timeout = 10

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


def create_app(
    registry: CollectorRegistry,
    readiness: Readiness,
    *,
    health: bool = True,
    metrics: bool = True,
    slack: WsgiApp | None = None,
) -> WsgiApp:
    """The WSGI application behind the endpoints: the health ones, `/metrics`, both, and
    `POST /slack/actions` when `slack` is given (`controller.api.slack_actions`)."""
    metrics_app = make_wsgi_app(registry)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        method = environ.get("REQUEST_METHOD", "GET")
        if path == SLACK_ACTIONS_PATH and slack is not None:
            return slack(environ, start_response)
        if method not in {"GET", "HEAD"}:
            return _answer(
                start_response, method, "405 Method Not Allowed", b"", [("Allow", "GET, HEAD")]
            )
        if path == "/metrics" and metrics:
            served: Iterable[bytes] = metrics_app(environ, start_response)
            return served
        if path == "/healthz" and health:
            return _answer(start_response, method, "200 OK", b"ok\n")
        if path == "/readyz" and health:
            report = readiness.evaluate()
            body = json.dumps(report.to_json(), sort_keys=True).encode() + b"\n"
            status = "200 OK" if report.ready else "503 Service Unavailable"
            return _answer(start_response, method, status, body, json_body=True)
        return _answer(start_response, method, "404 Not Found", b"not found\n")

    return app


def _answer(
    start_response: StartResponse,
    method: str,
    status: str,
    body: bytes,
    headers: list[tuple[str, str]] | None = None,
    *,
    json_body: bool = False,
) -> list[bytes]:
    kind = "application/json" if json_body else "text/plain; charset=utf-8"
    start_response(
        status,
        [
            ("Content-Type", kind),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            *(headers or []),
        ],
    )
    return [] if method == "HEAD" else [body]


class BackgroundServer:
    """Serves one WSGI application from a background thread until `stop()`.

    `port=0` picks a free port (tests); `address` tells which one was bound. The
    health endpoints and the dashboard (`controller.dashboard`) both run on it.
    """

    def __init__(self, app: WsgiApp, *, host: str, port: int, name: str, serves: str) -> None:
        self._app = app
        self._name = name
        self._serves = serves
        self._host = host
        self._port = port
        self._server: _ThreadingServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) bound; only known after `start()`."""
        if self._server is None:
            raise RuntimeError(f"the {self._name} server is not started")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}"

    def start(self) -> None:
        """Bind and serve in a daemon thread; OSError if the port is taken."""
        if self._server is not None:
            raise RuntimeError(f"the {self._name} server is already started")
        server = make_server(
            self._host,
            self._port,
            self._app,
            server_class=_ThreadingServer,
            handler_class=_QuietHandler,
        )
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name=f"canary-{self._name}",
            daemon=True,
        )
        self._thread.start()
        log.info("serving %s", self._serves, extra={"address": self.url})

    def stop(self, timeout: float = 5.0) -> None:
        """Stop answering and close the socket. Safe to call twice, or before `start()`."""
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout)
        self._server = self._thread = None

    def __enter__(self) -> BackgroundServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class ApiServer(BackgroundServer):
    """Serves the endpoints from a background thread until `stop()`.

    The default host is loopback: the endpoints have no authentication, so
    listening on every interface (as in a pod, for kubelet and Prometheus) is
    asked for explicitly.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        readiness: Readiness,
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        health: bool = True,
        metrics: bool = True,
        slack: WsgiApp | None = None,
    ) -> None:
        serves = ", ".join(
            [
                *(["/healthz", "/readyz"] if health else []),
                *(["/metrics"] if metrics else []),
                *([SLACK_ACTIONS_PATH] if slack is not None else []),
            ]
        )
        super().__init__(
            create_app(registry, readiness, health=health, metrics=metrics, slack=slack),
            host=host,
            port=port,
            name="api",
            serves=serves,
        )
