"""ModelRollout objects from the Kubernetes API: list, then watch from the list's version.

One thread per watched namespace (or one for the whole cluster) keeps an
in-memory copy of the ModelRollouts it sees, the way a client-go informer does;
the list + watch loop itself, with its resume and its 410 re-list, is
`controller.kube.watch.ListWatch`.

- The first complete list marks the stream synced; `snapshot().synced` is true
  once every stream has synced, so /readyz (and the controller's handling of
  deleted rollouts) never acts on a half-read cluster.
- A re-list (after a 410 Gone) replaces what the stream knew, so an object
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

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from controller.backoff import Backoff
from controller.errors import PolicyError, Problem
from controller.kube.client import ApiClient
from controller.kube.objects import Kind
from controller.kube.watch import ListWatch
from controller.policy import API_GROUP, KIND, ModelRollout, parse_object
from controller.policy.crd import PLURAL, VERSION
from controller.policy.gates import WebhookAllow
from controller.policy.queries import CustomQueries
from controller.runtime.sources import Snapshot

log = logging.getLogger(__name__)

JsonObject = dict[str, Any]

#: the ModelRollout custom resource, as the Kubernetes layer names a kind
MODEL_ROLLOUTS = Kind(API_GROUP, VERSION, PLURAL, KIND)
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
        namespaces = [ns.strip() for ns in namespace.split(",") if ns.strip()]
        self.namespaces: tuple[str | None, ...] = tuple(dict.fromkeys(namespaces)) or (None,)
        self.watch_seconds = watch_seconds
        self.grace_seconds = grace_seconds
        self.request_timeout = request_timeout
        self.backoff = backoff or WATCH_BACKOFF
        self.on_invalid = on_invalid
        self.custom_queries = custom_queries
        self.webhook_allow = webhook_allow
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._streams = [_Stream(self, api, ns) for ns in self.namespaces]
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
                target=stream.watch.run, name=f"modelrollouts:{stream.where}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Close the open watches and wait for the threads to end."""
        self._stopping.set()
        for stream in self._streams:
            stream.watch.interrupt()
        for thread in self._threads:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("the ModelRollout watch %s did not stop in %ss", thread.name, timeout)
        self._threads = []

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

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
    """What one list + watch (one namespace, or None: all) has seen of the ModelRollouts:
    the `WatchHandler` of its `ListWatch`."""

    def __init__(self, source: KubernetesSource, api: ApiClient, namespace: str | None) -> None:
        self.source = source
        self.namespace = namespace
        self.where = namespace or "all namespaces"
        # guarded by source._lock
        self.rollouts: dict[str, ModelRollout] = {}
        self.invalid: dict[str, InvalidRollout] = {}
        self.synced = False
        self.watch = ListWatch(
            api,
            MODEL_ROLLOUTS,
            namespace,
            self,
            stopping=source._stopping,
            backoff=source.backoff,
            watch_seconds=source.watch_seconds,
            grace_seconds=source.grace_seconds,
            request_timeout=source.request_timeout,
        )

    def listed(self, objects: Sequence[Mapping[str, Any]], version: str) -> None:
        """Replace what this stream knew with the list."""
        seen: set[str] = set()
        for obj in objects:
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
            log.info(
                "listed %d ModelRollouts in %s (version %s)", len(objects), self.where, version
            )

    def changed(self, event: str, obj: Mapping[str, Any]) -> None:
        self._apply(event, obj)

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
