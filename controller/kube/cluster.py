"""The one seam between the controller and the Kubernetes API.

Every request goes through `Cluster`, which:

- reads and writes objects as plain JSON through the official client's
  `CustomObjectsApi` (which serves any resource under `/apis/`, Ingress and
  Jobs included), so no client model ever drops a field it does not know; the
  few core kinds the controller touches (ConfigMaps, Events, Secrets, under
  `/api/v1`) go through `CoreV1Api` and come back as the same plain JSON;
- reads and writes the status subresource of custom objects (`get_status`,
  `patch_status`, merge patches);
- writes with JSON merge patches that carry the `resourceVersion` it read,
  so a write based on a stale read fails with 409 instead of overwriting a
  concurrent change; `reconcile` then re-reads, rebuilds and retries, bounded;
- turns every failure into the error tree of `controller.kube.errors`:
  403 names the verb and resource RBAC forbids, a 404 is told apart as a
  missing object or a missing API (CRD not installed) through discovery,
  timeouts, connection errors, 429 and 5xx are retried with bounded
  exponential backoff and then raised as `ApiUnavailableError`.

Build the `ApiClient` with the client's own retries off (`Configuration.retries
= 0`) so that retries are counted, bounded and logged here, in one place.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn, cast

import urllib3
from kubernetes.client import ApiClient, ApiException, CoreV1Api, CustomObjectsApi

from controller.kube.errors import (
    ApiNotInstalledError,
    ApiUnavailableError,
    ConflictError,
    ForbiddenError,
    RejectedError,
)
from controller.kube.objects import (
    BUILT_IN,
    JsonObject,
    Kind,
    Reconciled,
    Verb,
    Write,
    merge_patch,
)

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
FIELD_MANAGER = "canary-controller"


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry: `attempts` tries, delays growing to `max_delay`."""

    attempts: int = 5
    initial_delay: float = 0.2
    factor: float = 2.0
    max_delay: float = 5.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (0-based)."""
        backoff = min(self.max_delay, self.initial_delay * self.factor**attempt)
        if retry_after is not None:
            return min(self.max_delay, max(backoff, retry_after))
        return backoff


class _Retry(Exception):
    """Internal: a retryable failure, with what to say if it is the last one."""

    def __init__(self, message: str, retry_after: float | None = None, status: int = 0) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status or None


class _Conflict(Exception):
    """Internal: 409 on a write (stale resourceVersion, or the object already exists).

    `after_lost_answer`: an earlier try of the same request failed in transit, so the
    object may have changed because that try landed: the conflict may be with ourselves.
    """

    after_lost_answer = False


class _Gone(Exception):
    """Internal: 404 on a write or delete (the object went away)."""


Build = Callable[[JsonObject | None], JsonObject | None]


class Cluster:
    """Raw-JSON access to namespaced objects, with retries and our error taxonomy."""

    def __init__(
        self,
        api: ApiClient,
        *,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        on_retry: Callable[[Kind, str], None] | None = None,
    ) -> None:
        """`on_retry(kind, reason)` is told of every retry ("conflict" or "unavailable"),
        for the controller's own metrics."""
        self._api = api
        self._objects = CustomObjectsApi(api)
        self._core = CoreV1Api(api)
        self._on_retry = on_retry or (lambda kind, reason: None)
        self._timeout = timeout
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._installed: set[Kind] = set(BUILT_IN)

    # --- reads and writes ----------------------------------------------------------------

    def get(self, kind: Kind, namespace: str, name: str) -> JsonObject | None:
        """The object, or None if it does not exist; ApiNotInstalledError if its API does not."""
        try:
            found: JsonObject | None = self._call(
                "get",
                kind,
                namespace,
                name,
                self._request(
                    "read",
                    kind,
                    namespace,
                    name,
                    lambda: self._objects.get_namespaced_custom_object(
                        kind.group,
                        kind.version,
                        namespace,
                        kind.plural,
                        name,
                        _request_timeout=self._timeout,
                    ),
                ),
            )
        except _Gone:
            self.require_api(kind, namespace)
            return None
        return found

    def require_api(self, kind: Kind, namespace: str) -> None:
        """Raise ApiNotInstalledError unless the API server serves `kind` (discovery)."""
        if kind in self._installed:
            return
        try:
            listing = self._call(
                "get",
                kind,
                namespace,
                "",
                lambda: self._objects.get_api_resources(
                    kind.group, kind.version, _request_timeout=self._timeout
                ),
                raw=False,
            )
        except _Gone:
            listing = None
        resources = getattr(listing, "resources", None) or []
        if not any(getattr(r, "name", None) == kind.plural for r in resources):
            raise ApiNotInstalledError(
                f"the {kind.kind} API ({kind.api_version}, {kind.plural}) is not installed in "
                f"this cluster: install its CRDs, or choose another traffic.router"
            )
        self._installed.add(kind)

    def create(
        self, kind: Kind, namespace: str, body: JsonObject, *, timeout: float | None = None
    ) -> JsonObject:
        name = body["metadata"]["name"]
        seconds = timeout or self._timeout
        created = self._call(
            "create",
            kind,
            namespace,
            name,
            self._request(
                "create",
                kind,
                namespace,
                body,
                lambda: self._objects.create_namespaced_custom_object(
                    kind.group,
                    kind.version,
                    namespace,
                    kind.plural,
                    body,
                    field_manager=FIELD_MANAGER,
                    _request_timeout=seconds,
                ),
                timeout=seconds,
            ),
        )
        return created if created is not None else body

    def create_new(
        self, kind: Kind, namespace: str, body: JsonObject, *, timeout: float | None = None
    ) -> bool:
        """Create the object unless one of its name exists; False if it did (409).

        For objects named after what they stand for (an Event per transition, a
        gate's Job per attempt): made once however often they are asked for."""
        try:
            self.create(kind, namespace, body, timeout=timeout)
        except _Conflict:
            return False
        except _Gone as exc:
            raise RejectedError(
                f"create {kind.ref(namespace, body['metadata']['name'])}: the API server "
                f"answered 404 (no namespace {namespace!r}?): {exc}",
                status=404,
            ) from exc
        return True

    def update(self, kind: Kind, namespace: str, name: str, patch: JsonObject) -> JsonObject | None:
        """Merge-patch an object as it is (no resourceVersion: the patch's fields win);
        the object after the write, None if it does not exist."""
        try:
            return self.patch(kind, namespace, name, patch)
        except _Gone:
            return None
        except _Conflict as exc:
            raise ConflictError(
                f"patch {kind.ref(namespace, name)}: the API server answered 409: {exc}"
            ) from exc

    def list_objects(
        self, kind: Kind, namespace: str, *, label_selector: str = ""
    ) -> list[JsonObject]:
        """The objects of `kind` in `namespace` that match `label_selector` (custom
        objects and Jobs: anything under `/apis/`)."""
        found = self._call(
            "list",
            kind,
            namespace,
            "",
            lambda: self._objects.list_namespaced_custom_object(
                kind.group,
                kind.version,
                namespace,
                kind.plural,
                label_selector=label_selector,
                _request_timeout=self._timeout,
            ),
        )
        items = (found or {}).get("items") or []
        return [item for item in items if isinstance(item, dict)]

    # --- the status subresource of custom objects -----------------------------------------

    def get_status(
        self, kind: Kind, namespace: str, name: str, *, timeout: float | None = None
    ) -> JsonObject | None:
        """The object as its status subresource serves it; None if it does not exist."""
        try:
            found: JsonObject | None = self._call(
                "get",
                kind,
                namespace,
                name,
                lambda: self._objects.get_namespaced_custom_object_status(
                    kind.group,
                    kind.version,
                    namespace,
                    kind.plural,
                    name,
                    _request_timeout=timeout or self._timeout,
                ),
            )
        except _Gone:
            return None
        return found

    def patch_status(
        self,
        kind: Kind,
        namespace: str,
        name: str,
        status: JsonObject,
        *,
        timeout: float | None = None,
    ) -> JsonObject | None:
        """Merge-patch the status subresource with `{"status": status}`; the object
        after the write, None if it does not exist. A 409 is a `ConflictError`."""
        try:
            result: JsonObject | None = self._call(
                "patch",
                kind,
                namespace,
                name,
                lambda: self._objects.patch_namespaced_custom_object_status(
                    kind.group,
                    kind.version,
                    namespace,
                    kind.plural,
                    name,
                    {"status": status},
                    field_manager=FIELD_MANAGER,
                    _request_timeout=timeout or self._timeout,
                    _content_type=MERGE_PATCH,
                ),
            )
        except _Gone:
            return None
        except _Conflict as exc:
            raise ConflictError(
                f"patch the status of {kind.ref(namespace, name)}: the API server answered "
                f"409: {exc}"
            ) from exc
        if result is None:
            raise RejectedError(f"patch {kind.ref(namespace, name)}: the API server sent no object")
        return result

    def patch(self, kind: Kind, namespace: str, name: str, patch: JsonObject) -> JsonObject:
        result: JsonObject | None = self._call(
            "patch",
            kind,
            namespace,
            name,
            lambda: self._objects.patch_namespaced_custom_object(
                kind.group,
                kind.version,
                namespace,
                kind.plural,
                name,
                patch,
                field_manager=FIELD_MANAGER,
                _request_timeout=self._timeout,
                _content_type=MERGE_PATCH,
            ),
        )
        if result is None:
            raise RejectedError(f"patch {kind.ref(namespace, name)}: the API server sent no object")
        return result

    def delete(
        self, kind: Kind, namespace: str, name: str, *, propagation: str | None = None
    ) -> bool:
        """Delete the object; False if it was already gone. `propagation`: what happens
        to what it owns (`Background`, `Foreground`, `Orphan`; None: the kind's default)."""
        extra: dict[str, Any] = {"propagation_policy": propagation} if propagation else {}
        try:
            self._call(
                "delete",
                kind,
                namespace,
                name,
                self._request(
                    "delete",
                    kind,
                    namespace,
                    name,
                    lambda: self._objects.delete_namespaced_custom_object(
                        kind.group,
                        kind.version,
                        namespace,
                        kind.plural,
                        name,
                        _request_timeout=self._timeout,
                        **extra,
                    ),
                    **extra,
                ),
            )
        except _Gone:
            return False
        return True

    def _request(
        self,
        op: str,
        kind: Kind,
        namespace: str,
        name_or_body: str | JsonObject,
        custom: Callable[[], object],
        *,
        timeout: float | None = None,
        **extra: Any,
    ) -> Callable[[], object]:
        """The request: `custom` for kinds under `/apis/`; for a core kind, the
        `CoreV1Api` call of the same verb, its answer turned into plain JSON."""
        if not kind.core:
            return custom
        method = getattr(self._core, f"{op}_namespaced_{_snake(kind.kind)}")
        seconds = timeout or self._timeout

        def core() -> object:
            if op == "create":
                answer = method(namespace, name_or_body, _request_timeout=seconds, **extra)
            else:
                answer = method(name_or_body, namespace, _request_timeout=seconds, **extra)
            return self._api.sanitize_for_serialization(answer)  # type: ignore[no-untyped-call]

        return core

    # --- read, build, write ----------------------------------------------------------------

    def reconcile(self, kind: Kind, namespace: str, name: str, build: Build) -> Reconciled:
        """Make one object what `build` wants, from what is in the cluster right now.

        `build(current)` gets the object as read (None if absent) and returns the
        object wanted (None: it must not exist). The difference is written as a
        merge patch carrying the resourceVersion read, so a concurrent change
        makes it fail with 409; then the object is read again and `build` runs
        again on the fresh object, so changes to fields the caller does not own
        survive. Nothing is written when nothing differs ("no changes").
        """
        ref = kind.ref(namespace, name)
        #: a write whose answer was lost and that may have landed: reported if nothing is left
        landed: Write | None = None
        for attempt in range(self._retry.attempts):
            current = self.get(kind, namespace, name)
            desired = build(current)
            attempted: Write | None = None
            try:
                if current is None and desired is None:
                    return Reconciled(None, None)
                if current is None:
                    assert desired is not None
                    attempted = Write(Verb.CREATE, kind.kind, namespace, name)
                    created = self.create(kind, namespace, desired)
                    log.info("%s: created", ref)
                    return Reconciled(Write(Verb.CREATE, kind.kind, namespace, name), created)
                if desired is None:
                    gone = self.delete(kind, namespace, name)
                    log.info("%s: deleted", ref)
                    write = Write(Verb.DELETE, kind.kind, namespace, name) if gone else None
                    return Reconciled(write, None)
                patch = merge_patch(current, desired)
                if not patch:
                    log.debug("%s: no changes, skipping patch", ref)
                    return Reconciled(landed, current)
                version = current.get("metadata", {}).get("resourceVersion")
                if version is not None:
                    patch.setdefault("metadata", {})["resourceVersion"] = version
                attempted = Write(Verb.PATCH, kind.kind, namespace, name)
                patched = self.patch(kind, namespace, name, patch)
                log.info("%s: patched %s", ref, sorted(patch))
                return Reconciled(Write(Verb.PATCH, kind.kind, namespace, name), patched)
            except (_Conflict, _Gone) as exc:
                if isinstance(exc, _Conflict) and exc.after_lost_answer:
                    landed = attempted
                if attempt + 1 < self._retry.attempts:
                    delay = self._retry.delay(attempt)
                    log.info("%s changed since it was read; reading it again in %.2fs", ref, delay)
                    self._on_retry(kind, "conflict")
                    self._sleep(delay)
        raise ConflictError(
            f"{ref} kept changing between our read and our write "
            f"({self._retry.attempts} attempts); trying again later"
        )

    # --- one request -------------------------------------------------------------------------

    def _call(
        self,
        verb: str,
        kind: Kind,
        namespace: str,
        name: str,
        request: Callable[[], object],
        *,
        raw: bool = True,
    ) -> Any:
        """Send one request, retrying transient failures; translate every error.

        The retries within one call are logged at DEBUG only: a call that fails is
        one error, raised with how many tries it took (and logged once by whoever
        gave up on it); a call that succeeds after failed tries says so in one line.
        """
        what = kind.ref(namespace, name) if name else f"{kind.resource} in {namespace}"
        last = ""
        last_status: int | None = None
        lost_answer = False  # an earlier try may have landed
        for attempt in range(self._retry.attempts):
            try:
                result = request()
            except ApiException as exc:
                try:
                    self._raise_for(exc, verb, kind, namespace, what)
                except _Retry as retry:
                    last, retry_after = str(retry), retry.retry_after
                    last_status = retry.status
                except _Conflict as conflict:
                    conflict.after_lost_answer = lost_answer
                    raise
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                last, retry_after = f"{type(exc).__name__}: {exc}", None
                last_status = None
                lost_answer = True
            else:
                if attempt:
                    log.info(
                        "%s %s succeeded after %d failed tries (%s)", verb, what, attempt, last
                    )
                if not raw:
                    return result
                if result is None or isinstance(result, dict):
                    return cast(JsonObject | None, result)
                raise RejectedError(f"{verb} {what}: unexpected answer {type(result).__name__}")
            if attempt + 1 < self._retry.attempts:
                delay = self._retry.delay(attempt, retry_after)
                log.debug("%s %s failed (%s); retrying in %.2fs", verb, what, last, delay)
                self._on_retry(kind, "unavailable")
                self._sleep(delay)
        raise ApiUnavailableError(
            f"{verb} {what} failed {self._retry.attempts} times; the Kubernetes API is "
            f"unavailable: {last}",
            retry_after=self._retry.max_delay,
            status=last_status,
        )

    @staticmethod
    def _raise_for(exc: ApiException, verb: str, kind: Kind, namespace: str, what: str) -> NoReturn:
        status = int(exc.status or 0)
        message = _server_message(exc)
        if status == 403:
            raise ForbiddenError(
                f"RBAC forbids the controller to {verb} {kind.resource} in namespace "
                f"{namespace!r} ({what}); grant the verb {verb!r} on {kind.resource} to its "
                f"service account. The API server said: {message}",
                verb=verb,
                resource=kind.resource,
                namespace=namespace,
            ) from exc
        if status == 401:
            raise RejectedError(
                f"{verb} {what}: the API server did not accept the controller's "
                f"credentials: {message}",
                status=status,
            ) from exc
        if status == 404:
            raise _Gone(message) from exc
        if status == 409:
            raise _Conflict(message) from exc
        if status == 429 or status >= 500 or status == 0:
            raise _Retry(f"HTTP {status}: {message}", _retry_after(exc), status) from exc
        raise RejectedError(
            f"the API server refused to {verb} {what} (HTTP {status}): {message}", status=status
        ) from exc


def _snake(kind: str) -> str:
    """`ConfigMap` -> `config_map`, as the client names its methods."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", kind).lower()


def _server_message(exc: ApiException) -> str:
    """The `message` of the Status the API server sent, else the HTTP reason."""
    body: object = exc.body
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    if isinstance(body, str) and body:
        try:
            status = json.loads(body)
        except ValueError:
            return body[:500]
        if isinstance(status, dict) and status.get("message"):
            return str(status["message"])
    return str(exc.reason or "no reason given")


def _retry_after(exc: ApiException) -> float | None:
    headers = exc.headers or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
