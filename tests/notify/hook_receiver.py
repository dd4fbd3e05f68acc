"""A local webhook receiver: records each JSON body and its Idempotency-Key."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.serving import serving


@dataclass
class Hook:
    """A webhook receiver: answers with the queued statuses, then 204."""

    statuses: list[int] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    url: str = ""


@contextmanager
def running() -> Iterator[Hook]:
    """A Hook served on a free loopback port; its `url` carries a secret in the query."""
    receiver = Hook()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            code = receiver.statuses.pop(0) if receiver.statuses else 204
            if code == 204:
                receiver.bodies.append(json.loads(body))
                receiver.keys.append(self.headers["Idempotency-Key"])
            self.send_response(code)
            if code == 503:
                self.send_header("Retry-After", "20")
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/canary?secret=s3cr3t"
    with serving(server):
        yield receiver
