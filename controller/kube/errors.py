"""The errors of the Kubernetes layer, in the one tree of `controller.errors`.

    PermanentError
    ├── ApiNotInstalledError   the API (a CRD) is not installed
    ├── ForbiddenError         RBAC forbids a verb on a resource
    └── RejectedError          the API server refused a request as invalid
    TransientError
    ├── ApiUnavailableError    unreachable, timed out, 5xx, throttled
    └── ConflictError          the object kept changing under us (409s)

Each carries the HTTP `status` the API server answered with, where there was one.

No client import: whoever tells them apart (the executor, the in-memory router)
does so without the `kubernetes` package.
"""

from __future__ import annotations

from controller.errors import PermanentError, TransientError


class ApiNotInstalledError(PermanentError):
    """The API of the route (a CRD: Gateway API, Istio) is not installed in the cluster."""


class ApiUnavailableError(TransientError):
    """The API server is unreachable, timed out, throttled us or failed (5xx).

    `status`: the HTTP status of the last try (None when no answer came)."""

    def __init__(
        self, message: str, *, retry_after: float | None = None, status: int | None = None
    ) -> None:
        super().__init__(message, retry_after=retry_after)
        self.status = status


class ConflictError(TransientError):
    """The object changed between our read and our write more times than we retry."""

    status = 409


class ForbiddenError(PermanentError):
    """RBAC forbids the controller a verb on a resource; the message names both."""

    status = 403

    def __init__(self, message: str, *, verb: str, resource: str, namespace: str) -> None:
        super().__init__(message)
        self.verb = verb
        self.resource = resource
        self.namespace = namespace


class RejectedError(PermanentError):
    """The API server refused a request (invalid object, bad credentials).

    `status`: the HTTP status it answered with (None: the answer made no sense)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
