"""A Kubernetes API server for tests: kmock's emulator, over HTTP, on its own event loop.

No Kubernetes API server can be installed here, so the code under test talks
HTTP with the real `kubernetes` client to kmock's `KubernetesEmulator` (never a
patched client). `ApiServer` adds what a real API server does and kmock does
not, where our routers depend on it:

- server-managed metadata: `resourceVersion` (bumped on every write), `uid`,
  `creationTimestamp`, `generation` (bumped when `spec` changes) and
  `managedFields`, so "compare minus server metadata" is a real comparison;
- optimistic concurrency: a PATCH carrying a stale `metadata.resourceVersion`
  fails with 409 Conflict and changes nothing;
- `201 Created` for a create (the generated client reads the body only then);
- watches that honour `resourceVersion` (the changes after it, replayed from a
  change log), `timeoutSeconds` and `allowWatchBookmarks`, lists that carry the
  current `resourceVersion`, and `410 Gone` for a version older than the last
  compaction (`expire()`);
- a `status` subresource for kinds registered with one: a write to `/status`
  changes only `.status`, a write to the object never does.

Watches can be cut the ways a real connection ends: `end_watches()` closes them
cleanly (a server-side timeout), `end_watches(drop=True)` aborts the TCP
connection mid-stream, `stall_watches()` stops delivering on the open ones (a
hung connection) until they are cut.

Faults are kmock reactions queued per request: `fail(...)` answers the next
matching requests with an HTTP error (the write is *not* applied), a `Slow`
response (the write is applied, the answer comes late: a client timeout), a
`Concurrent` change (another writer changes the object right after our read),
or `Through` (an ordinary answer, to aim the next outcome at a later request).

kmock is asyncio-based; `KubeApi` runs it on an event loop in a background
thread so synchronous code under test can use it. Only 127.0.0.1 is used.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import itertools
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import attrs
import kmock
import yaml
from kubernetes.client import ApiClient, Configuration

T = TypeVar("T")
JsonObject = dict[str, Any]

#: what "minus server metadata" removes, and what ApiServer sets
SERVER_METADATA = ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields")


@dataclass(frozen=True)
class Slow:
    """Answer after `seconds` (the request itself is carried out, as a real server would)."""

    seconds: float


@dataclass(frozen=True)
class Concurrent:
    """Answer a read with the object as it is, then apply `patch` as another writer would."""

    patch: Mapping[str, Any]


@dataclass(frozen=True)
class Through:
    """Answer normally (to aim a later outcome at the second matching request, say)."""


Outcome = int | Slow | Concurrent | Through

#: how often an open watch looks for new changes (the emulator's own poll, not the client's)
WATCH_POLL = 0.005

_REASONS = {
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    410: "Expired",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
}


def status_error(status: int, message: str = "") -> kmock.KubernetesError:
    """The Status a real API server sends for `status`."""
    reason = _REASONS.get(status, "Unknown")
    return kmock.KubernetesError(
        status=status,
        reason=reason,
        message=message or f"injected {status} {reason}",
        details={},
    )


@dataclass(frozen=True)
class _Change:
    """One entry of the change log that watches are served from."""

    version: int
    resource: kmock.resource
    namespace: str | None
    event: JsonObject


@attrs.define(kw_only=True)
class ApiServer(kmock.KubernetesEmulator):
    """kmock's emulator with resource versions, preconditions, 201s and queued faults."""

    _versions: Iterator[int] = attrs.field(factory=lambda: itertools.count(1000), init=False)
    _faults: list[tuple[Callable[[kmock.Request], bool], deque[Outcome]]] = attrs.field(
        factory=list, init=False
    )
    in_flight: int = attrs.field(default=0, init=False)
    #: requests a fault already took its turn on (a pass-through must not fire the next one)
    _faulted: set[int] = attrs.field(factory=set, init=False)
    #: the newest resourceVersion handed out
    last_version: int = attrs.field(default=999, init=False)
    _changes: list[_Change] = attrs.field(factory=list, init=False)
    #: versions below this were compacted away: watching from one answers 410 Gone
    _compacted: int = attrs.field(default=0, init=False)
    #: watches opened now get this epoch; every cut or stall starts a new one
    _watch_epoch: int = attrs.field(default=0, init=False)
    #: (epoch, drop) per `end_watches`: it ended the watches opened at that epoch or before
    _cuts: list[tuple[int, bool]] = attrs.field(factory=list, init=False)
    #: watches opened at an epoch below this deliver nothing (a hung connection)
    _stalled_below: int = attrs.field(default=0, init=False)
    #: per resource (`group/version/plural`), the defaulting its CRD's schema applies to
    #: every object written (as a real API server does); none unless a test sets it
    _defaulting: dict[kmock.resource, Callable[[JsonObject], JsonObject]] = attrs.field(
        factory=dict, init=False
    )

    # --- objects ---------------------------------------------------------------------------

    def register(self, plural_path: str, kind: str, *, subresources: tuple[str, ...] = ()) -> None:
        """Serve a resource (`group/version/plural`) in discovery, like an installed CRD.

        With `subresources=("status",)` its status is a subresource, as the CRD declares.
        """
        self.resources[plural_path] = kmock.ResourceInfo(
            kind=kind,
            namespaced=True,
            verbs={"get", "list", "watch", "create", "patch", "update", "delete"},
            subresources=set(subresources),
        )

    def default_specs(self, plural_path: str, default: Callable[[JsonObject], JsonObject]) -> None:
        """Apply `default` to the spec of every object of a resource written from now on,
        as the API server applies the defaults of a CRD's schema."""
        self._defaulting[kmock.resource(plural_path)] = default

    def put(self, plural_path: str, obj: Mapping[str, Any]) -> None:
        """Store an object as if it had been created through the API."""
        meta = obj["metadata"]
        key = (kmock.resource(plural_path), meta["namespace"], meta["name"])
        self.objects[key] = copy.deepcopy(dict(obj))
        self._stamp(self.objects[key], created=True, where=key)

    def get(self, plural_path: str, namespace: str, name: str) -> JsonObject | None:
        """The stored object (a copy), or None if it does not exist."""
        key = (kmock.resource(plural_path), namespace, name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return copy.deepcopy(self.objects[key].raw)

    def _next_version(self) -> int:
        self.last_version = next(self._versions)
        return self.last_version

    def _stamp(
        self,
        obj: kmock.Object,
        *,
        created: bool = False,
        where: tuple[kmock.resource, str | None, str] | None = None,
    ) -> None:
        """Set the server metadata of a written object; with its key `where`, tell the watches."""
        if where is not None and (default := self._defaulting.get(where[0])) is not None:
            obj["spec"] = default(copy.deepcopy(obj.raw.get("spec") or {}))
        raw = obj.raw
        meta = dict(raw.get("metadata") or {})
        previous = obj.history[-2] if len(obj.history) > 1 else None
        spec_changed = previous is None or dict(previous).get("spec") != raw.get("spec")
        version = self._next_version()
        meta["resourceVersion"] = str(version)
        if created or "uid" not in meta:
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = datetime.datetime.now(datetime.UTC).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            )
            meta["generation"] = 1
        elif spec_changed:
            meta["generation"] = int(meta.get("generation", 1)) + 1
        meta["managedFields"] = [{"manager": "kmock", "operation": "Update"}]
        for key in ("labels", "annotations", "ownerReferences"):  # omitempty, as the API does
            if key in meta and not meta[key]:
                del meta[key]
        obj["metadata"] = meta
        if where is not None:
            kind = "ADDED" if created else "MODIFIED"
            self._log_change(version, where, {"type": kind, "object": copy.deepcopy(obj.raw)})

    def _log_change(
        self, version: int, key: tuple[kmock.resource, str | None, str], event: JsonObject
    ) -> None:
        self._changes.append(_Change(version, key[0], key[1], event))

    # --- watches ---------------------------------------------------------------------------

    def expire(self) -> None:
        """Compact the change log: a watch from any version handed out so far gets 410 Gone."""
        self._compacted = self._next_version()

    def end_watches(self, *, drop: bool = False) -> None:
        """End every open watch: cleanly (as a server-side timeout does), or by dropping
        the TCP connection mid-stream. Watches opened afterwards are not affected."""
        self._cuts.append((self._watch_epoch, drop))
        self._watch_epoch += 1

    def stall_watches(self) -> None:
        """The open watches deliver nothing more, not even their end (a hung connection),
        until they are ended or the client gives up. Watches opened afterwards work."""
        self._watch_epoch += 1
        self._stalled_below = self._watch_epoch

    def _cut(self, epoch: int) -> bool | None:
        """How a watch opened at `epoch` was ended (drop or not), or None if it was not."""
        for at, drop in self._cuts:
            if at >= epoch:
                return drop
        return None

    def watches(self, plural: str) -> list[kmock.Request]:
        """Every watch request on `plural` so far, in order."""
        return [
            r
            for r in self
            if r.action == kmock.action.WATCH and r.resource is not None
            if r.resource.plural == plural
        ]

    def lists(self, plural: str) -> list[kmock.Request]:
        """Every list request on `plural` so far, in order."""
        return [
            r
            for r in self
            if r.action == kmock.action.LIST and r.resource is not None
            if r.resource.plural == plural
        ]

    async def _serve_list(self, request: kmock.Request) -> Any:
        listing = await super()._serve_list(request)
        listing["metadata"] = {"resourceVersion": str(self.last_version)}
        return listing

    async def _serve_watch(self, request: kmock.Request) -> Any:  # an async generator
        yield b""  # send the headers now: the stream is open even if nothing happens
        loop = asyncio.get_running_loop()
        epoch = self._watch_epoch
        params = request.params
        since = params.get("resourceVersion") or ""
        timeout = float(params.get("timeoutSeconds") or 0)
        deadline = loop.time() + timeout if timeout else None
        if since not in ("", "0") and int(since) < self._compacted:
            yield {"type": "ERROR", "object": _gone(since, self._compacted)}
            return
        if since in ("", "0"):  # no version: the current objects first, as ADDED
            start = self.last_version
            for (resource, namespace, _), obj in list(self.objects.items()):
                if resource == request.resource and not obj.deleted and _in(request, namespace):
                    yield {"type": "ADDED", "object": copy.deepcopy(obj.raw)}
        else:
            start = int(since)
        assert request._raw_request is not None
        cursor = 0
        while True:
            transport = request._raw_request.transport
            if transport is None or transport.is_closing():
                return  # the client went away
            drop = self._cut(epoch)
            if drop is not None:
                if drop:
                    transport.abort()
                return
            if epoch < self._stalled_below:
                await asyncio.sleep(WATCH_POLL)
                continue
            while cursor < len(self._changes):
                change = self._changes[cursor]
                cursor += 1
                if change.version <= start or change.resource != request.resource:
                    continue
                if _in(request, change.namespace):
                    yield change.event
            if deadline is not None and loop.time() >= deadline:
                if params.get("allowWatchBookmarks") == "true":
                    version = str(self.last_version)
                    yield {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": version}}}
                return
            await asyncio.sleep(WATCH_POLL)

    # --- faults ----------------------------------------------------------------------------

    def fail(self, method: str, plural: str, name: str | None, *outcomes: Outcome) -> None:
        """Answer the next requests `method` on `plural` (named `name`, or any) with `outcomes`."""
        method = method.upper()

        def matches(request: kmock.Request) -> bool:
            resource = request.resource
            return (
                str(request.method.value).upper() == method
                and resource is not None
                and resource.plural == plural
                and (name is None or request.name == name)
            )

        queue: deque[Outcome] = deque(outcomes)
        self._faults.append((matches, queue))
        for outcome in outcomes:
            self._react(matches, queue, outcome)

    def _react(
        self,
        matches: Callable[[kmock.Request], bool],
        queue: deque[Outcome],
        outcome: Outcome,
    ) -> None:
        # One reaction per outcome: a reaction that lets a request through is disabled
        # by kmock, which is exactly right for a one-shot Slow or Concurrent.
        def due(request: kmock.Request) -> bool:
            return (
                matches(request)
                and bool(queue)
                and queue[0] is outcome
                and request.id not in self._faulted
            )

        async def respond(request: kmock.Request) -> object:
            queue.popleft()
            self._faulted.add(request.id)
            if isinstance(outcome, Through | Slow):  # Slow: _handle delays the real answer
                return NotImplemented
            if isinstance(outcome, Concurrent):
                assert request.resource is not None
                key = (request.resource, request.namespace, request.name)
                before = copy.deepcopy(self.objects[key].raw)
                self.objects[key].patch(dict(outcome.patch))
                self._stamp(self.objects[key], where=key)
                return before
            raise status_error(outcome)

        self[due] << respond

    def _queued(self, request: kmock.Request) -> Outcome | None:
        for matches, queue in self._faults:
            if queue and matches(request):
                return queue[0]
        return None

    # --- what kmock does not do ------------------------------------------------------------

    async def _handle(self, request: kmock.Request) -> Any:
        self.in_flight += 1
        try:
            outcome = self._queued(request)
            if isinstance(outcome, int):  # a refused request changes nothing
                return await kmock.RawHandler._handle(self, request)
            self._check_precondition(request)
            self._keep_to_subresource(request)
            before = self._deleting(request)
            response = await super()._handle(request)
            if before is not None:
                self._log_deleted(request, before)
            if isinstance(outcome, Slow):
                # The request is carried out (and versioned) at once, as a real server
                # would; only the answer is late.
                await asyncio.sleep(outcome.seconds)
            return response
        finally:
            self.in_flight -= 1

    def _has_status(self, request: kmock.Request) -> bool:
        resource = request.resource
        return any(
            resource == registered and "status" in info.subresources
            for registered, info in self.resources.items()
        )

    def _keep_to_subresource(self, request: kmock.Request) -> None:
        """A write to `/status` changes the status only; any other write never does."""
        data = request.data
        if not isinstance(data, dict) or not self._has_status(request):
            return
        if request.action == kmock.action.UPDATE and request.subresource == "status":
            for field in [k for k in data if k != "status"]:
                del data[field]
        elif request.action in (kmock.action.UPDATE, kmock.action.CREATE):
            data.pop("status", None)

    def _deleting(self, request: kmock.Request) -> JsonObject | None:
        """The object a DELETE request is about to delete (to tell the watches)."""
        if request.action != kmock.action.DELETE or request.resource is None:
            return None
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return copy.deepcopy(self.objects[key].raw)

    def _log_deleted(self, request: kmock.Request, before: JsonObject) -> None:
        assert request.resource is not None and request.name is not None
        key = (request.resource, request.namespace, request.name)
        if key in self.objects and not self.objects[key].deleted:
            return  # finalizers hold it
        version = self._next_version()
        before.setdefault("metadata", {})["resourceVersion"] = str(version)
        self._log_change(version, key, {"type": "DELETED", "object": before})

    def _check_precondition(self, request: kmock.Request) -> None:
        if request.action != kmock.action.UPDATE or not isinstance(request.data, dict):
            return
        wanted = (request.data.get("metadata") or {}).get("resourceVersion")
        if wanted is None or request.resource is None:
            return
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            return
        current = (self.objects[key].raw.get("metadata") or {}).get("resourceVersion")
        if current != wanted:
            raise status_error(
                409,
                f'Operation cannot be fulfilled on {request.resource.plural} "{request.name}": '
                "the object has been modified; please apply your changes to the latest "
                "version and try again",
            )

    async def _serve_create(self, request: kmock.Request) -> Any:
        namespace = request.namespace or request.data.get("metadata", {}).get("namespace")
        key = (request.resource, namespace, request.data.get("metadata", {}).get("name"))
        self._stamp(self.objects[key], created=True, where=key)
        return kmock.Response(status=201, payload=await super()._serve_create(request))

    async def _serve_update(self, request: kmock.Request) -> Any:
        key = (request.resource, request.namespace, request.name)
        self._stamp(self.objects[key], where=key)
        return await super()._serve_update(request)

    # --- what was asked ----------------------------------------------------------------------

    def writes(self) -> list[tuple[str, str, Any]]:
        """Every write request so far, as (method, path, body), in order."""
        return [
            (str(r.method.value), r.url.path, r.data)
            for r in self
            if str(r.method.value) in ("POST", "PATCH", "PUT", "DELETE")
        ]

    def requests(self, method: str | None = None) -> list[kmock.Request]:
        return [r for r in self if method is None or str(r.method.value) == method.upper()]


class KubeApi:
    """An ApiServer on 127.0.0.1 served from a background event loop; a context manager."""

    def __init__(self) -> None:
        self.server = ApiServer()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="kmock", daemon=True)
        self.url = ""

    def kubeconfig(self) -> dict[str, Any]:
        """A kubeconfig that points a client (or `canaryctl`) at this server."""
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kmock", "cluster": {"server": self.url}}],
            "users": [{"name": "test", "user": {"token": "not-a-secret"}}],
            "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "test"}}],
            "current-context": "kmock",
        }

    def write_kubeconfig(self, path: Path) -> Path:
        """`kubeconfig()` written to `path`, for a subprocess."""
        path.write_text(yaml.safe_dump(self.kubeconfig()))
        return path

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as exc:  # surfaced to the test thread in __enter__/__exit__
            self._failure = exc
            self._ready.set()
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with self.server, kmock.Server(self.server, host="127.0.0.1") as http:
            self.url = str(http.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> KubeApi:
        self._thread.start()
        self._ready.wait(10)
        if self._failure is not None or not self.url:
            raise RuntimeError("the kmock API server did not start") from self._failure
        return self

    def __exit__(self, *exc: object) -> None:
        deadline = time.monotonic() + 5
        while self.server.in_flight and time.monotonic() < deadline:
            time.sleep(0.01)  # let slow answers finish before the server goes away
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the server's event loop (safe while requests are in flight)."""

        async def run() -> T:
            return fn()

        return self.run(run())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def client(self) -> ApiClient:
        """A real `kubernetes` client for this server; its own retries off (ours count)."""
        config = Configuration(host=self.url)
        config.retries = 0
        return ApiClient(config)


def _in(request: kmock.Request, namespace: str | None) -> bool:
    """Whether an object in `namespace` is one `request` asks about (all, or its namespace)."""
    return request.namespace is None or namespace == request.namespace


def _gone(since: str, oldest: int) -> JsonObject:
    """The Status of a watch from a compacted version, as the API server words it."""
    return {
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "code": 410,
        "reason": "Expired",
        "message": f"too old resource version: {since} ({oldest})",
    }


def without_server_metadata(obj: Mapping[str, Any]) -> JsonObject:
    """`obj` minus the metadata the API server manages."""
    out = copy.deepcopy(dict(obj))
    for key in SERVER_METADATA:
        out.get("metadata", {}).pop(key, None)
    return out
