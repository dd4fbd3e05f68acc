"""A local HTTP server that speaks enough of the Slack Web API for the real WebClient.

It keeps channels and their messages (with threads, metadata and edits), modals
opened, ephemeral messages and what is posted to a `response_url`, checks the
bot token, and can be told to misbehave on the next calls of a method:
answer 429 with Retry-After, 500 with an HTML body, an `ok: false` error, hang
until released, or do the work and then hang (the answer is lost, the message
is posted).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.serving import serving

TOKEN = "xoxb-1111-2222-fakesecrettoken"


@dataclass(frozen=True)
class Fault:
    """How the next call of a method goes wrong."""

    kind: str  # "ratelimited" | "status" | "error" | "hang" | "lose-answer"
    retry_after: int = 1
    status: int = 500
    error: str = ""


def ratelimited(retry_after: int) -> Fault:
    return Fault("ratelimited", retry_after=retry_after)


def status(code: int) -> Fault:
    return Fault("status", status=code)


def error(code: str) -> Fault:
    return Fault("error", error=code)


HANG = Fault("hang")
LOSE_ANSWER = Fault("lose-answer")


@dataclass
class Call:
    method: str
    args: dict[str, Any]
    authorization: str


@dataclass
class FakeSlack:
    """The workspace: channels by name and ID, messages, calls made, faults queued."""

    token: str = TOKEN
    channels: dict[str, str] = field(default_factory=lambda: {"bot": "C0BOT0001"})
    messages: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    faults: dict[str, list[Fault]] = field(default_factory=dict)
    release: threading.Event = field(default_factory=threading.Event)
    hanging: threading.Event = field(default_factory=threading.Event)
    hang_all: bool = False  # every call hangs until `release` is set
    lock: threading.Lock = field(default_factory=threading.Lock)
    base_url: str = ""
    #: what was posted to a response_url (`hooks_url` + anything), in order
    responses: list[dict[str, Any]] = field(default_factory=list)
    #: modals opened (`views.open`) and ephemeral messages (`chat.postEphemeral`)
    views: list[dict[str, Any]] = field(default_factory=list)
    ephemerals: list[dict[str, Any]] = field(default_factory=list)
    #: Slack's clock: ts values count up from here (after every message the tests queue)
    epoch: float = datetime(2026, 11, 23, tzinfo=UTC).timestamp()
    _ts: int = 0

    def fail(self, method: str, *faults: Fault) -> None:
        with self.lock:
            self.faults.setdefault(method, []).extend(faults)

    def calls_of(self, method: str) -> list[dict[str, Any]]:
        with self.lock:
            return [c.args for c in self.calls if c.method == method]

    def posted(self, channel: str = "C0BOT0001") -> list[dict[str, Any]]:
        """Every message in a channel, top-level and replies, in the order posted."""
        with self.lock:
            return [dict(m) for m in self.messages.get(channel, [])]

    # --- the API ---------------------------------------------------------------

    def answer(self, method: str, args: dict[str, Any], authorization: str) -> dict[str, Any]:
        with self.lock:
            self.calls.append(Call(method, args, authorization))
            if authorization != f"Bearer {self.token}":
                return {"ok": False, "error": "invalid_auth"}
            handler = getattr(self, "_" + method.replace(".", "_"), None)
            if handler is None:
                return {"ok": False, "error": "unknown_method"}
            result: dict[str, Any] = handler(args)
            return result

    def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "user": "canary", "team": "Acme", "user_id": "UBOT", "bot_id": "B1"}

    def _channel(self, name_or_id: str) -> str | None:
        if name_or_id in self.channels.values():
            return name_or_id
        return self.channels.get(name_or_id.removeprefix("#"))

    def _chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(str(args.get("channel", "")))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        self._ts += 1
        ts = f"{int(self.epoch) + self._ts}.{self._ts:06d}"
        message = {
            "ts": ts,
            "text": args.get("text"),
            "blocks": args.get("blocks"),
            "thread_ts": args.get("thread_ts"),
            "reply_broadcast": args.get("reply_broadcast"),
            "metadata": args.get("metadata"),
        }
        if message["thread_ts"] is not None and not any(
            m["ts"] == message["thread_ts"] for m in self.messages.get(channel, [])
        ):
            return {"ok": False, "error": "thread_not_found"}
        self.messages.setdefault(channel, []).append(message)
        return {"ok": True, "channel": channel, "ts": ts, "message": message}

    def _chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(str(args.get("channel", "")))
        for m in self.messages.get(channel or "", []):
            if m["ts"] == args.get("ts"):
                m.update(text=args.get("text"), blocks=args.get("blocks"), edited=True)
                return {"ok": True, "channel": channel, "ts": m["ts"]}
        return {"ok": False, "error": "message_not_found"}

    def _shown(self, message: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        shown = {k: v for k, v in message.items() if v is not None}
        if str(args.get("include_all_metadata")) not in ("1", "true", "True"):
            shown.pop("metadata", None)
        return shown

    def _conversations_replies(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(str(args.get("channel", "")))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        ts = args.get("ts")
        thread = [
            self._shown(m, args)
            for m in self.messages.get(channel, [])
            if m["ts"] == ts or m["thread_ts"] == ts
        ]
        if not thread:
            return {"ok": False, "error": "thread_not_found"}
        return {"ok": True, "messages": thread, "has_more": False}

    def _conversations_history(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(str(args.get("channel", "")))
        if channel is None or not str(args.get("channel", "")).startswith("C"):
            return {"ok": False, "error": "channel_not_found"}  # IDs only, like Slack
        oldest = float(args.get("oldest") or 0)
        found = [
            self._shown(m, args)
            for m in self.messages.get(channel, [])
            if (m["thread_ts"] is None or m["reply_broadcast"]) and float(m["ts"]) >= oldest
        ]
        return {"ok": True, "messages": list(reversed(found)), "has_more": False}

    @property
    def hooks_url(self) -> str:
        """Where this server takes response_url posts (Slack's hooks.slack.com)."""
        return self.base_url.removesuffix("api/") + "hooks/"

    def _views_open(self, args: dict[str, Any]) -> dict[str, Any]:
        view = args.get("view")
        if isinstance(view, str):  # a form-encoded call sends the view as JSON text
            view = json.loads(view)
        if not args.get("trigger_id") or not isinstance(view, dict):
            return {"ok": False, "error": "invalid_arguments"}
        self.views.append({"trigger_id": args["trigger_id"], "view": view})
        return {"ok": True, "view": {**view, "id": f"V{len(self.views):08d}"}}

    def _chat_postEphemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        self.ephemerals.append(dict(args))
        return {"ok": True, "message_ts": f"{int(self.epoch)}.999999"}

    def _conversations_list(self, args: dict[str, Any]) -> dict[str, Any]:
        channels = [{"id": i, "name": n} for n, i in self.channels.items()]
        return {"ok": True, "channels": channels, "response_metadata": {"next_cursor": ""}}


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet tests

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        args = {k: v[0] for k, v in parse_qs(url.query).items()}
        self._serve(url.path, args)

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode() if length else ""
        if "json" in (self.headers.get("Content-Type") or ""):
            args = json.loads(raw) if raw else {}
        else:
            args = {k: v[0] for k, v in parse_qs(raw).items()}
        args.update({k: v[0] for k, v in parse_qs(url.query).items()})
        self._serve(url.path, args)

    def _serve(self, path: str, args: dict[str, Any]) -> None:
        fake = self.server.fake
        if path.startswith("/hooks/"):  # a response_url: no token, answers "ok"
            with fake.lock:
                fake.responses.append(args)
            self._send_raw(200, b"ok", "text/plain")
            return
        method = path.rsplit("/", 1)[-1]
        with fake.lock:
            queued = fake.faults.get(method) or []
            fault = queued.pop(0) if queued else None
        if (fault is not None and fault.kind == "hang") or fake.hang_all:
            fake.hanging.set()
            fake.release.wait(30)
            return
        if fault is not None and fault.kind == "ratelimited":
            with fake.lock:
                fake.calls.append(Call(method, args, self.headers.get("Authorization", "")))
            self._send(
                429, {"ok": False, "error": "ratelimited"}, {"Retry-After": fault.retry_after}
            )
            return
        if fault is not None and fault.kind == "status":
            with fake.lock:
                fake.calls.append(Call(method, args, self.headers.get("Authorization", "")))
            self._send_raw(fault.status, b"<html>upstream connect error</html>", "text/html")
            return
        if fault is not None and fault.kind == "error":
            with fake.lock:
                fake.calls.append(Call(method, args, self.headers.get("Authorization", "")))
            self._send(200, {"ok": False, "error": fault.error})
            return
        answer = fake.answer(method, args, self.headers.get("Authorization", ""))
        if fault is not None and fault.kind == "lose-answer":
            fake.hanging.set()
            fake.release.wait(30)
            return
        self._send(200, answer)

    def _send(self, code: int, body: dict[str, Any], headers: dict[str, Any] | None = None) -> None:
        data = json.dumps(body).encode()
        self._send_raw(code, data, "application/json; charset=utf-8", headers)

    def _send_raw(
        self, code: int, data: bytes, content_type: str, headers: dict[str, Any] | None = None
    ) -> None:
        try:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, str(value))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeSlack) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake


@contextmanager
def running(fake: FakeSlack | None = None) -> Iterator[FakeSlack]:
    """A FakeSlack served on a free loopback port; `base_url` is set on it."""
    fake = fake or FakeSlack()
    server = _Server(fake)
    fake.base_url = f"http://127.0.0.1:{server.server_address[1]}/api/"
    with serving(server):
        try:
            yield fake
        finally:
            fake.release.set()  # before the shutdown: held answers end now
