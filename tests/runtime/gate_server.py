"""A local gate webhook for tests: answers each POST as told, and keeps what it got."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.serving import serving


@dataclass(frozen=True)
class Answer:
    """One answer: its status and body, sent after `delay` seconds, the body in
    `trickle` pieces a `delay` apart when `trickle` is more than 1."""

    status: int = 200
    body: bytes = b'{"ok": true}'
    delay: float = 0.0
    trickle: int = 1


@dataclass
class GateServer:
    """Answers with the queued answers, then with `default`."""

    answers: list[Answer] = field(default_factory=list)
    default: Answer = field(default_factory=Answer)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    url: str = ""
    #: set to let slow answers end early when the test is over
    done: threading.Event = field(default_factory=threading.Event)


@contextmanager
def gate_server() -> Iterator[GateServer]:
    server_state = GateServer()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            server_state.bodies.append(json.loads(body))
            server_state.headers.append(dict(self.headers))
            answer = server_state.answers.pop(0) if server_state.answers else server_state.default
            try:
                if answer.trickle <= 1 and answer.delay:
                    server_state.done.wait(answer.delay)
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                if answer.trickle <= 1:
                    self.wfile.write(answer.body)
                    return
                size = max(1, len(answer.body) // answer.trickle)
                for start in range(0, len(answer.body), size):
                    self.wfile.write(answer.body[start : start + size])
                    self.wfile.flush()
                    if server_state.done.wait(answer.delay):
                        return
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up: that is what a timeout test wants

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server_state.url = f"http://127.0.0.1:{server.server_address[1]}/gates/evals"
    with serving(server):
        try:
            yield server_state
        finally:
            server_state.done.set()  # before the shutdown: delayed answers end now
            time.sleep(0)
