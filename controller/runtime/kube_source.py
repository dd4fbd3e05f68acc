"""ModelRollout objects from the Kubernetes API: list, then watch from the list's version.

One thread per watched namespace (or one for the whole cluster) keeps an
in-memory copy of the ModelRollouts it sees, the way a client-go informer does:

    list (remember its resourceVersion) ─> watch from it, with bookmarks ─┐
        ▲                                                                 │
        ├── 410 Gone: the version was compacted away ─────────────────────┤
        └── dropped / timed out / 5xx: wait (bounded backoff), watch again┘

- The first complete list marks the stream synced; `snapshot().synced` is true
  once every stream has synced, so /readyz (and the controller's handling of
  deleted rollouts) never acts on a half-read cluster.
- A watch ends by itself after `watch_seconds` (server side) and is resumed
  from the last version seen (an event's or a bookmark's); a watch that delivers
  nothing for longer than that plus a grace is a hung connection and is cut.
- A 410 Gone re-lists: the list replaces what the stream knew, so an object
  deleted while nobody watched disappears and one created meanwhile appears.
- Every object is validated exactly as a policy file would be. An invalid one is
  logged with its field paths, reported through `on_invalid` (the status writer
  sets `Valid=False` on it) and left out of the snapshot's rollouts, so it never
  moves traffic; its key is in `snapshot.invalid`, so a rollout already under way
  is not ended: the controller ticks it on its last committed spec, toward the
  baseline only (a rollback still happens, an advance waits), until the spec is
  fixed. Other rollouts are unaffected.
- A deleted object is gone from the snapshot; the controller then restores its
  route and ends the rollout.

The snapshot's rollouts carry the object's `uid`, `generation` and
`resourceVersion` in their metadata: the status writer reports the generation
as `observedGeneration`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import urllib3
from kubernetes.client import ApiClient, ApiException, CustomObjectsApi
from kubernetes.watch.watch import iter_resp_lines

from controller.backoff import Backoff
from controller.errors import PolicyError, Problem
from controller.policy import API_GROUP, ModelRollout, parse_object
from controller.policy.crd import PLURAL, VERSION
from controller.policy.gates import WebhookAllow
from controller.policy.queries import CustomQueries
from controller.runtime.sources import Snapshot

log = logging.getLogger(__name__)

JsonObject = dict[str, Any]

#: a watch that ends sooner than this with nothing in it is retried after a backoff
SHORT_WATCH = 1.0
#: between failed lists and watches: 0.5 s doubling to 30 s
WATCH_BACKOFF = Backoff(first=0.5, factor=2.0, longest=30.0)


@dataclass(frozen=True)
class InvalidRollout:
    """A ModelRollout object the controller will not roll out, and why."""

    namespace: str
    name: str
    uid: str
    generation: int
    resource_version: str
    problems: tuple[Problem, ...]

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def message(self) -> str:
        """Every problem as `path: reason`, one after the other (for a condition or an Event)."""
        return "; ".join(f"{p.path}: {p.message}" if p.path else p.message for p in self.problems)


InvalidHandler = Callable[[InvalidRollout], None]


class _Gone(Exception):
    """Internal: the version a watch started from was compacted away (410): re-list."""


class _Stopped(Exception):
    """Internal: `stop()` was called while a request was open."""


class KubernetesSource:
    """ModelRollouts from the API server, kept up to date by list + watch threads.

    `namespace` is empty for every namespace, or a comma-separated list of the
    namespaces to watch (one list + watch each), as the Helm chart's
    `watchNamespaces` sets `CANARY_NAMESPACE`.
    """

    def __init__(
        self,
        api: ApiClient,
        *,
        namespace: str = "",
        watch_seconds: int = 300,
        grace_seconds: float = 30.0,
        request_timeout: float = 30.0,
        backoff: Backoff | None = None,
        on_invalid: InvalidHandler | None = None,
        custom_queries: CustomQueries | None = None,
        webhook_allow: WebhookAllow | None = None,
    ) -> None:
        """`custom_queries` and `webhook_allow`: the operator's rules, so that a
        ModelRollout whose custom query or gate webhook they refuse is invalid like any
        other (status and Event say why)."""
        self._api = CustomObjectsApi(api)
        namespaces = [ns.strip() for ns in namespace.split(",") if ns.strip()]
        self.namespaces: tuple[str | None, ...] = tuple(dict.fromkeys(namespaces)) or (None,)
        self.watch_seconds = watch_seconds
        self.read_timeout = watch_seconds + grace_seconds
        self.request_timeout = request_timeout
        self.backoff = backoff or WATCH_BACKOFF
        self.on_invalid = on_invalid
        self.custom_queries = custom_queries
        self.webhook_allow = webhook_allow
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._streams = [_Stream(self, ns) for ns in self.namespaces]
        self._threads: list[threading.Thread] = []

    # --- what the controller reads ---------------------------------------------------------

    def snapshot(self) -> Snapshot:
        with self._lock:
            rollouts: dict[str, ModelRollout] = {}
            problems: list[Problem] = []
            invalid: set[str] = set()
            for stream in self._streams:
                rollouts.update(stream.rollouts)
                invalid.update(stream.invalid)
                for rejected in stream.invalid.values():
                    problems.extend(rejected.problems)
            return Snapshot(rollouts, tuple(problems), self.synced, frozenset(invalid))

    @property
    def synced(self) -> bool:
        """Whether every namespace has been listed completely at least once."""
        return all(stream.synced for stream in self._streams)

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start one list + watch thread per namespace (or one for the whole cluster)."""
        if self._threads:
            return
        for stream in self._streams:
            thread = threading.Thread(
                target=stream.run, name=f"modelrollouts:{stream.where}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Close the open watches and wait for the threads to end."""
        self._stopping.set()
        for stream in self._streams:
            stream.interrupt()
        for thread in self._threads:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("the ModelRollout watch %s did not stop in %ss", thread.name, timeout)
        self._threads = []

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    # --- requests, for the streams ---------------------------------------------------------

    def _list(self, namespace: str | None) -> JsonObject:
        timeout = self.request_timeout
        if namespace is None:
            found = self._api.list_cluster_custom_object(
                API_GROUP, VERSION, PLURAL, _request_timeout=timeout
            )
        else:
            found = self._api.list_namespaced_custom_object(
                API_GROUP, VERSION, namespace, PLURAL, _request_timeout=timeout
            )
        return cast(JsonObject, found)

    def _watch(self, namespace: str | None, since: str) -> urllib3.BaseHTTPResponse:
        options: dict[str, Any] = {
            "watch": True,
            "resource_version": since,
            "allow_watch_bookmarks": True,
            "timeout_seconds": self.watch_seconds,
            "_preload_content": False,
            "_request_timeout": (self.request_timeout, self.read_timeout),
        }
        if namespace is None:
            response = self._api.list_cluster_custom_object(API_GROUP, VERSION, PLURAL, **options)
        else:
            response = self._api.list_namespaced_custom_object(
                API_GROUP, VERSION, namespace, PLURAL, **options
            )
        return cast(urllib3.BaseHTTPResponse, response)

    def _invalid(self, invalid: InvalidRollout) -> None:
        for problem in invalid.problems:
            log.warning(
                "ModelRollout %s generation %d is invalid and ignored until fixed: %s: %s",
                invalid.key,
                invalid.generation,
                problem.path or "<object>",
                problem.message,
                extra={"rollout": invalid.key},
            )
        if self.on_invalid is None:
            return
        try:
            self.on_invalid(invalid)
        except Exception:  # a failing reporter must not stop the watch
            log.exception("could not report the invalid ModelRollout %s", invalid.key)


class _Stream:
    """One list + watch loop over one namespace (None: all), and what it has seen."""

    def __init__(self, source: KubernetesSource, namespace: str | None) -> None:
        self.source = source
        self.namespace = namespace
        self.where = namespace or "all namespaces"
        # guarded by source._lock
        self.rollouts: dict[str, ModelRollout] = {}
        self.invalid: dict[str, InvalidRollout] = {}
        self.synced = False
        self._response: urllib3.BaseHTTPResponse | None = None

    # --- the loop --------------------------------------------------------------------------

    def run(self) -> None:
        source = self.source
        since: str | None = None
        failures = 0
        while not source.stopping:
            try:
                if since is None:
                    since = self._relist()
                began, following = time.monotonic(), since
                since = self._follow(since)
                if since == following and time.monotonic() - began < SHORT_WATCH:
                    # over at once with nothing in it (a proxy closing watches?): no busy loop
                    failures += 1
                    source._stopping.wait(source.backoff.delay(failures))
                else:
                    failures = 0
            except _Stopped:
                break
            except Exception as exc:
                if _gone(exc):
                    log.info(
                        "ModelRollout watch on %s expired (410 Gone): listing again", self.where
                    )
                    since, failures = None, 0
                    continue
                failures += 1  # anything else: back off, then resume (or list again)
                delay = source.backoff.delay(failures)
                # one line per failed attempt (the client's own retries are off), saying
                # how long the trouble has lasted and when the next try is
                log.warning(
                    "ModelRollout %s on %s failed (%s), %d time(s) in a row; next try in %.1fs, "
                    "at %s",
                    "list" if since is None else "watch",
                    self.where,
                    _describe(exc),
                    failures,
                    delay,
                    (datetime.now(UTC) + timedelta(seconds=delay)).strftime("%H:%M:%SZ"),
                )
                source._stopping.wait(delay)
        log.info("ModelRollout watch on %s stopped", self.where)

    def _relist(self) -> str:
        """List everything, replace what this stream knew, and return the list's version."""
        listing = self.source._list(self.namespace)
        items = listing.get("items") or []
        version = str((listing.get("metadata") or {}).get("resourceVersion") or "")
        seen: set[str] = set()
        for obj in items:
            key = self._apply("ADDED", obj, quiet=True)
            if key is not None:
                seen.add(key)
        with self.source._lock:
            for gone in set(self.rollouts) - seen:
                log.info("ModelRollout %s is gone (deleted while not watched)", gone)
                del self.rollouts[gone]
            for gone in set(self.invalid) - seen:
                del self.invalid[gone]
            first = not self.synced
            self.synced = True
        if first:
            log.info("listed %d ModelRollouts in %s (version %s)", len(items), self.where, version)
        return version

    def _follow(self, since: str) -> str:
        """Watch from `since` until the watch ends; the last version seen."""
        response = self.source._watch(self.namespace, since)
        self._response = response
        try:
            if self.source.stopping:
                raise _Stopped
            for event in _events(response):
                kind = event.get("type")
                obj = event.get("object")
                if not isinstance(obj, Mapping):
                    continue
                if kind == "ERROR":
                    _raise_status(obj)
                version = (obj.get("metadata") or {}).get("resourceVersion")
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self._apply(str(kind), obj)
                if version:
                    since = str(version)
        except (urllib3.exceptions.HTTPError, OSError):
            if self.source.stopping:
                raise _Stopped from None
            raise
        finally:
            self._response = None
            response.release_conn()
            response.close()
        if self.source.stopping:
            raise _Stopped
        return since

    def interrupt(self) -> None:
        """Unblock a read in progress (from `stop()`, on another thread)."""
        response = self._response
        if response is not None:
            with contextlib.suppress(OSError):
                response.shutdown()

    # --- one object ------------------------------------------------------------------------

    def _apply(self, kind: str, obj: Mapping[str, Any], *, quiet: bool = False) -> str | None:
        """Take in one event's object; its key, or None if it has no name."""
        meta = obj.get("metadata") or {}
        name, namespace = meta.get("name"), meta.get("namespace") or "default"
        if not isinstance(name, str):
            return None
        key = f"{namespace}/{name}"
        if kind == "DELETED":
            with self.source._lock:
                known = self.rollouts.pop(key, None)
                self.invalid.pop(key, None)
            if known is not None:
                log.info("ModelRollout %s was deleted", key, extra={"rollout": key})
            return key
        try:
            rollout = parse_object(
                obj,
                source=f"ModelRollout {key}",
                custom_queries=self.source.custom_queries,
                webhook_allow=self.source.webhook_allow,
            )
        except PolicyError as exc:
            self._reject(key, obj, exc.errors or exc.problems)
            return key
        except Exception as exc:  # a bug in validation must not take the watch down
            log.exception("could not validate ModelRollout %s", key)
            self._reject(key, obj, (Problem(f"could not be validated: {exc}"),))
            return key
        with self.source._lock:
            previous = self.rollouts.get(key)
            self.rollouts[key] = rollout
            self.invalid.pop(key, None)
        if previous is None and not quiet:
            log.info("ModelRollout %s appeared", key, extra={"rollout": key})
        elif previous is not None and previous.metadata.generation != rollout.metadata.generation:
            log.info(
                "ModelRollout %s changed (generation %s)",
                key,
                rollout.metadata.generation,
                extra={"rollout": key},
            )
        return key

    def _reject(self, key: str, obj: Mapping[str, Any], problems: tuple[Problem, ...]) -> None:
        meta = obj.get("metadata") or {}
        invalid = InvalidRollout(
            namespace=key.split("/", 1)[0],
            name=key.split("/", 1)[1],
            uid=str(meta.get("uid") or ""),
            generation=int(meta.get("generation") or 1),
            resource_version=str(meta.get("resourceVersion") or ""),
            problems=problems,
        )
        with self.source._lock:
            before = self.invalid.get(key)
            self.rollouts.pop(key, None)
            self.invalid[key] = invalid
        if before is None or (before.uid, before.generation) != (invalid.uid, invalid.generation):
            self.source._invalid(invalid)


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
