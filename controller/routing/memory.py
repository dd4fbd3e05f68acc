"""An in-memory router: the demo's route, and the engine tests' stand-in for a cluster.

It keeps the same rules as the real routers (the states it accepts are those
of the router kind it stands in for, writes only when something changes,
`restore` gives back the original or promotes) so an engine tested against it
behaves the same against a cluster. Tests can make its next calls fail with
any error (`fail_next`), as an API server would.
"""

from __future__ import annotations

import logging
import threading
from collections import deque

from controller.errors import CanaryError, FencedError
from controller.kube.objects import Verb, Write
from controller.policy import CAPABILITIES, RouterCapabilities, RouterKind
from controller.policy.route import NEUTRAL, PROMOTED, RouteState
from controller.routing.base import RouteChange, RouteTarget, supported_state

log = logging.getLogger(__name__)

MEMORY_KIND = "MemoryRoute"


class MemoryRouter:
    """A TrafficRouter whose route lives in this object (thread-safe)."""

    def __init__(self, target: RouteTarget, kind: RouterKind = RouterKind.GATEWAY_API) -> None:
        self.target = target
        self._kind = kind
        self._lock = threading.Lock()
        self._state = NEUTRAL
        self._backend = target.baseline
        self._history: list[RouteState] = []
        self._epoch = 0  # the lease epoch of the last fenced write, like a route's snapshot
        self._failures: deque[CanaryError] = deque()

    @property
    def kind(self) -> RouterKind:
        return self._kind

    @property
    def capabilities(self) -> RouterCapabilities:
        return CAPABILITIES[self._kind]

    @property
    def backend(self) -> str:
        """The Service the route's default backend names: the baseline, or after a promotion
        the candidate."""
        return self._backend

    @property
    def history(self) -> tuple[RouteState, ...]:
        """Every state written, in order (a restore writes the neutral state)."""
        with self._lock:
            return tuple(self._history)

    def fail_next(self, *errors: CanaryError) -> None:
        """Make the next calls (any method) raise these errors, one per call, in order."""
        with self._lock:
            self._failures.extend(errors)

    def _maybe_fail(self) -> None:
        if self._failures:
            raise self._failures.popleft()

    def _write(self) -> Write:
        return Write(Verb.PATCH, MEMORY_KIND, self.target.namespace, self.target.route)

    def observe(self) -> RouteState:
        with self._lock:
            self._maybe_fail()
            return self._state

    @property
    def epoch(self) -> int:
        """The lease epoch the route carries (0: none; a restore clears it, as a real one)."""
        with self._lock:
            return self._epoch

    def _fence(self, epoch: int | None) -> None:
        if epoch is not None and self._epoch > epoch:
            raise FencedError(
                f"memory route {self.target.route} was written under lease epoch "
                f"{self._epoch}, newer than {epoch}; the write toward the candidate is refused"
            )

    def apply(self, desired: RouteState, *, epoch: int | None = None) -> RouteChange:
        state = supported_state(desired, self._kind)
        for name, _ in state.cohorts:
            self.target.cohort(name)
        with self._lock:
            self._maybe_fail()
            if state.routes_anything:
                self._fence(epoch)
                self._epoch = epoch if epoch is not None else self._epoch
            else:
                self._epoch = 0
            if state == self._state:
                log.debug("memory route %s: no changes, skipping", self.target.route)
                return RouteChange(state)
            self._state = state
            self._history.append(state)
            return RouteChange(state, (self._write(),))

    def restore(self, *, promote: bool = False, epoch: int | None = None) -> RouteChange:
        with self._lock:
            self._maybe_fail()
            if promote:
                self._fence(epoch)
            self._epoch = 0
            backend = self.target.candidate if promote else self._backend
            after = PROMOTED if promote else NEUTRAL
            if self._state == NEUTRAL and backend == self._backend:
                log.debug("memory route %s: no changes, skipping", self.target.route)
                return RouteChange(after)
            self._state = NEUTRAL
            self._backend = backend
            self._history.append(NEUTRAL)
            return RouteChange(after, (self._write(),))
