"""The traffic router port: the routers that make the route carry the state the engine wants.

The engine decides *what* the route should carry (a `RouteState` from
`controller.policy.route`: the candidate's share of all traffic, per-cohort
shares, a mirrored share and a sticky header); a router only makes the cluster
carry it, reads it back and, when the rollout ends, gives the route back
(Flagger's router.go, Argo's trafficrouting). Every router, real or in memory,
follows the same rules:

- `apply` is idempotent: when the cluster already carries the state, nothing is
  written and "no changes" is logged;
- `observe` reads the state back from the cluster, which is the truth;
- `restore` gives the route back exactly as it was before the rollout
  (rollback, abort), or with the candidate as its only backend (promotion).

This module does not import `kubernetes`: the in-memory router and the
executor use it without a cluster. The errors every router raises live here so
that the executor tells them apart by class without importing a client::

    PermanentError
    ├── RouteNotFoundError         the route named by the policy does not exist
    ├── NotRoutedToBaselineError   the route does not send traffic to the baseline
    ├── ApiNotInstalledError       the route's API (a CRD) is not installed
    ├── ForbiddenError             RBAC forbids a verb on a resource
    ├── RejectedError              the API server refused a request as invalid
    ├── UnsupportedRouteError      the router (or the route) cannot carry the state
    ├── OwnershipError             an object or field the router needs belongs to someone else
    └── UnknownRouterError         no router is registered under that name
    TransientError
    ├── ApiUnavailableError        unreachable, timed out, 5xx, throttled
    └── ConflictError              the object kept changing under us (409s)
    FencedError                    the route carries a newer lease epoch than the writer's
                                   (controller.errors, re-exported by this package)

Fencing: a write toward the candidate (an `apply` that routes anything, a
promoting `restore`) passes the writer's lease epoch. The router records it in
the route's snapshot annotation and refuses the write (FencedError) when the
route already carries a higher one; the check runs on the object as read for
the resourceVersion-guarded write, so it is atomic. A restore to the baseline
is never fenced, and gives the route back exactly, token included.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Protocol

from controller.errors import PermanentError
from controller.kube.objects import Reconciled, Write
from controller.policy import (
    API_VERSION,
    CAPABILITIES,
    KIND,
    Cohort,
    ModelRollout,
    RouterCapabilities,
    RouterKind,
)
from controller.policy.route import TOTAL, RouteState

log = logging.getLogger(__name__)

#: labels on every object a router creates (and deletes when the rollout ends)
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "canary-controller"
ROLLOUT_LABEL = "canary.ai/rollout"
ROUTE_LABEL = "canary.ai/route"

#: annotation on a route the router changed: what it changed, to give it back exactly
SNAPSHOT_ANNOTATION = "canary.ai/route-snapshot"


# --- what a router routes ------------------------------------------------------------------


@dataclass(frozen=True)
class OwnerReference:
    """The ModelRollout that owns the objects a router creates.

    With it, Kubernetes garbage-collects a canary Ingress or DestinationRule
    when its ModelRollout is deleted, which sends traffic back to the baseline
    even if the controller never runs again.
    """

    name: str
    uid: str
    api_version: str = API_VERSION
    kind: str = KIND

    def to_json(self) -> dict[str, Any]:
        # blockOwnerDeletion is left out: setting it needs delete rights on the owner.
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
        }


@dataclass(frozen=True)
class RouteTarget:
    """Which route a router works on, for which rollout: everything fixed for its lifetime."""

    namespace: str
    route: str
    baseline: str  # the baseline's Service
    candidate: str  # the candidate's Service
    cohorts: tuple[Cohort, ...] = ()
    rollout: str = ""  # the ModelRollout's name, for labels
    owner: OwnerReference | None = None

    @classmethod
    def of(cls, rollout: ModelRollout) -> RouteTarget:
        """The target of a rollout; objects are owned by it when it is a live resource (uid)."""
        meta, spec = rollout.metadata, rollout.spec
        owner = OwnerReference(meta.name, meta.uid) if meta.uid else None
        return cls(
            namespace=meta.namespace,
            route=spec.traffic.route,
            baseline=spec.baseline.service,
            candidate=spec.candidate.service,
            cohorts=tuple(spec.cohorts),
            rollout=meta.name,
            owner=owner,
        )

    def cohort(self, name: str) -> Cohort:
        for cohort in self.cohorts:
            if cohort.name == name:
                return cohort
        known = ", ".join(c.name for c in self.cohorts) or "none"
        raise UnsupportedRouteError(f"no cohort is called {name!r} in this rollout ({known})")

    def managed_labels(self) -> dict[str, str]:
        labels = {MANAGED_BY_LABEL: MANAGED_BY, ROUTE_LABEL: self.route}
        if self.rollout:
            labels[ROLLOUT_LABEL] = self.rollout
        return labels


# --- what a router did ----------------------------------------------------------------------


@dataclass(frozen=True)
class RouteChange:
    """What `apply` or `restore` did, and the state the cluster carries afterwards."""

    state: RouteState
    writes: tuple[Write, ...] = field(default_factory=tuple)

    @property
    def changed(self) -> bool:
        return bool(self.writes)


class TrafficRouter(Protocol):
    """Moves a rollout's traffic by writing the route; one instance per rollout.

    Every method reads the cluster first and is safe to repeat: after a crash
    or a restart, calling it again finishes what an interrupted call started.
    """

    @property
    def kind(self) -> RouterKind: ...

    @property
    def capabilities(self) -> RouterCapabilities:
        """What the router's data plane can do (the policy layer's table)."""
        ...

    def observe(self) -> RouteState:
        """The state the route carries now, read back from the cluster."""
        ...

    def apply(self, desired: RouteState, *, epoch: int | None = None) -> RouteChange:
        """Make the route carry `desired` (as `supported_state` makes it); no write if it does.

        `epoch` is the writer's lease epoch (None: unfenced, e.g. a single process
        without leases): recorded on the route, and FencedError if the route
        already carries a higher one."""
        ...

    def restore(self, *, promote: bool = False, epoch: int | None = None) -> RouteChange:
        """End the rollout on the route: give it back exactly as it was before, and delete
        every object the router created. With `promote`, the route's baseline backends
        name the candidate instead: the candidate is the only backend, nothing else changes.
        `epoch` fences a promotion as in `apply`; a restore to the baseline is never fenced.
        """
        ...


def supported_state(state: RouteState, kind: RouterKind) -> RouteState:
    """`state` as router `kind` carries it; UnsupportedRouteError if it cannot at all.

    A sticky header is dropped where unsupported (the policy layer warned about
    it); cohort weights and partial mirroring the data plane cannot express are
    errors, never approximated. The engine can compare `observe()` with this.
    """
    caps = CAPABILITIES[kind]
    if not caps.weighted_cohorts:
        for name, share in state.cohorts:
            if share != TOTAL:
                raise UnsupportedRouteError(
                    f"{kind} can only send a whole cohort to the candidate ({TOTAL}), "
                    f"not {share}% of {name!r}"
                )
    if caps.header_cohorts is not None and len(state.cohorts) > caps.header_cohorts:
        raise UnsupportedRouteError(
            f"{kind} can route at most {caps.header_cohorts} cohort(s) by header at a time, "
            f"not {len(state.cohorts)}"
        )
    if state.mirror_percent and not caps.mirror:
        raise UnsupportedRouteError(f"{kind} cannot mirror traffic")
    if 0 < state.mirror_percent < TOTAL and not caps.partial_mirror:
        raise UnsupportedRouteError(
            f"{kind} mirrors every request or none, not {state.mirror_percent}%"
        )
    if state.sticky_header and not caps.sticky_header:
        log.debug("%s cannot keep conversations sticky; ignoring %s", kind, state.sticky_header)
        return replace(state, sticky_header=None)
    return state


class RouterBase:
    """What the Kubernetes routers share: their kind, and the check every desired state passes."""

    KIND: ClassVar[RouterKind]

    def __init__(self, target: RouteTarget) -> None:
        self.target = target

    @property
    def kind(self) -> RouterKind:
        return self.KIND

    @property
    def capabilities(self) -> RouterCapabilities:
        return CAPABILITIES[self.KIND]

    def supported(self, desired: RouteState) -> RouteState:
        """`desired` as this router carries it; every cohort it names must be the rollout's."""
        state = supported_state(desired, self.KIND)
        for name, _ in state.cohorts:
            self.target.cohort(name)
        return state


# --- errors --------------------------------------------------------------------------------


class RouteNotFoundError(PermanentError):
    """The route named in the policy does not exist."""


class NotRoutedToBaselineError(PermanentError):
    """The route exists but sends no traffic to the baseline Service."""


class UnsupportedRouteError(PermanentError):
    """The router, or this route's shape, cannot carry the wanted state."""


class OwnershipError(PermanentError):
    """An object or field the router needs exists and belongs to someone else."""


class UnknownRouterError(PermanentError):
    """No router is registered under the name a policy gives."""


def route_change(state: RouteState, *steps: Reconciled) -> RouteChange:
    """A RouteChange from the reconciles a router made, in order."""
    return RouteChange(state, tuple(s.write for s in steps if s.write is not None))
