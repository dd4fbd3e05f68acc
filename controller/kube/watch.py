"""List, then watch from the list's version, and resume: one kind in one namespace.

The loop a client-go informer runs, for any kind the controller follows:

    list (remember its resourceVersion) ─> watch from it, with bookmarks ─┐
        ▲                                                                 │
        ├── 410 Gone: the version was compacted away ─────────────────────┤
        └── dropped / timed out / 5xx: wait (bounded backoff), watch again┘

- A watch ends by itself after `watch_seconds` (server side) and is resumed
  from the last version seen (an event's or a bookmark's); a watch that delivers
  nothing for longer than that plus a grace is a hung connection and is cut.
- A 410 Gone re-lists: the handler gets the whole list again, so an object
  deleted while nobody watched disappears and one created meanwhile appears.
- Every failed list or watch is one log line, with how long the trouble has
  lasted and when the next try is (the client's own retries are off).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, cast

import urllib3
from kubernetes.client import ApiClient, ApiException, CustomObjectsApi
from kubernetes.watch.watch import iter_resp_lines

from controller.backoff import Backoff
from controller.kube.objects import JsonObject, Kind

log = logging.getLogger(__name__)

#: a watch that ends sooner than this with nothing in it is retried after a backoff
SHORT_WATCH = 1.0


class WatchHandler(Protocol):
    """What a `ListWatch` tells: the whole list, then each change."""

    def listed(self, objects: Sequence[Mapping[str, Any]], version: str) -> None:
        """Everything there is now (replaces what was known)."""
        ...

    def changed(self, event: str, obj: Mapping[str, Any]) -> None:
        """One ADDED, MODIFIED or DELETED object."""
        ...


class _Gone(Exception):
    """Internal: the version a watch started from was compacted away (410): re-list."""


class Stopped(Exception):
    """`stopping` was set while a request was open."""


class ListWatch:
    """One list + watch loop over `kind` in `namespace` (None: all namespaces)."""

    def __init__(
        self,
        api: ApiClient,
        kind: Kind,
        namespace: str | None,
        handler: WatchHandler,
        *,
        stopping: threading.Event,
        backoff: Backoff,
        watch_seconds: int = 300,
        grace_seconds: float = 30.0,
        request_timeout: float = 30.0,
    ) -> None:
        self._api = CustomObjectsApi(api)
        self.kind = kind
        self.namespace = namespace
        self.where = namespace or "all namespaces"
        self.handler = handler
        self.stopping = stopping
        self.backoff = backoff
        self.watch_seconds = watch_seconds
        self.read_timeout = watch_seconds + grace_seconds
        self.request_timeout = request_timeout
        self._response: urllib3.BaseHTTPResponse | None = None

    def run(self) -> None:
        since: str | None = None
        failures = 0
        while not self.stopping.is_set():
            try:
                if since is None:
                    since = self._relist()
                began, following = time.monotonic(), since
                since = self._follow(since)
                if since == following and time.monotonic() - began < SHORT_WATCH:
                    # over at once with nothing in it (a proxy closing watches?): no busy loop
                    failures += 1
                    self.stopping.wait(self.backoff.delay(failures))
                else:
                    failures = 0
            except Stopped:
                break
            except Exception as exc:
                if _gone(exc):
                    log.info(
                        "%s watch on %s expired (410 Gone): listing again",
                        self.kind.kind,
                        self.where,
                    )
                    since, failures = None, 0
                    continue
                failures += 1  # anything else: back off, then resume (or list again)
                delay = self.backoff.delay(failures)
                # one line per failed attempt (the client's own retries are off), saying
                # how long the trouble has lasted and when the next try is
                log.warning(
                    "%s %s on %s failed (%s), %d time(s) in a row; next try in %.1fs, at %s",
                    self.kind.kind,
                    "list" if since is None else "watch",
                    self.where,
                    _describe(exc),
                    failures,
                    delay,
                    (datetime.now(UTC) + timedelta(seconds=delay)).strftime("%H:%M:%SZ"),
                )
                self.stopping.wait(delay)
        log.info("%s watch on %s stopped", self.kind.kind, self.where)

    def _relist(self) -> str:
        """List everything, hand it to the handler, and return the list's version."""
        timeout = self.request_timeout
        k = self.kind
        if self.namespace is None:
            found = self._api.list_cluster_custom_object(
                k.group, k.version, k.plural, _request_timeout=timeout
            )
        else:
            found = self._api.list_namespaced_custom_object(
                k.group, k.version, self.namespace, k.plural, _request_timeout=timeout
            )
        listing = cast(JsonObject, found)
        version = str((listing.get("metadata") or {}).get("resourceVersion") or "")
        self.handler.listed(listing.get("items") or [], version)
        return version

    def _watch(self, since: str) -> urllib3.BaseHTTPResponse:
        options: dict[str, Any] = {
            "watch": True,
            "resource_version": since,
            "allow_watch_bookmarks": True,
            "timeout_seconds": self.watch_seconds,
            "_preload_content": False,
            "_request_timeout": (self.request_timeout, self.read_timeout),
        }
        k = self.kind
        if self.namespace is None:
            response = self._api.list_cluster_custom_object(k.group, k.version, k.plural, **options)
        else:
            response = self._api.list_namespaced_custom_object(
                k.group, k.version, self.namespace, k.plural, **options
            )
        return cast(urllib3.BaseHTTPResponse, response)

    def _follow(self, since: str) -> str:
        """Watch from `since` until the watch ends; the last version seen."""
        response = self._watch(since)
        self._response = response
        try:
            if self.stopping.is_set():
                raise Stopped
            for event in _events(response):
                kind = event.get("type")
                obj = event.get("object")
                if not isinstance(obj, Mapping):
                    continue
                if kind == "ERROR":
                    _raise_status(obj)
                version = (obj.get("metadata") or {}).get("resourceVersion")
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self.handler.changed(str(kind), obj)
                if version:
                    since = str(version)
        except (urllib3.exceptions.HTTPError, OSError):
            if self.stopping.is_set():
                raise Stopped from None
            raise
        finally:
            self._response = None
            response.release_conn()
            response.close()
        if self.stopping.is_set():
            raise Stopped
        return since

    def interrupt(self) -> None:
        """Unblock a read in progress (from whoever set `stopping`, on another thread)."""
        response = self._response
        if response is not None:
            with contextlib.suppress(OSError):
                response.shutdown()


def _events(response: urllib3.BaseHTTPResponse) -> Iterator[JsonObject]:
    """The watch events of a streamed response, one JSON object a line (the client
    already raised ApiException for a non-2xx answer)."""
    for line in iter_resp_lines(response):  # type: ignore[no-untyped-call]
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            log.warning("skipping a watch line that is not JSON: %.200s", line)
            continue
        if isinstance(event, dict):
            yield event


def _raise_status(status: Mapping[str, Any]) -> None:
    """An ERROR event's Status, as an exception: 410 re-lists, the rest backs off."""
    code = status.get("code")
    if code == 410:
        raise _Gone(status.get("message") or "")
    raise ApiException(
        status=code or 500, reason=f"{status.get('reason')}: {status.get('message')}"
    )


def _gone(exc: Exception) -> bool:
    """Whether `exc` says the version asked for is too old (an ERROR event or an HTTP 410)."""
    return isinstance(exc, _Gone) or (isinstance(exc, ApiException) and exc.status == 410)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason or ''}".strip()
    return f"{type(exc).__name__}: {exc}"
