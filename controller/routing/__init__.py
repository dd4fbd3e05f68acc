"""Traffic routing: the `TrafficRouter` port, the in-memory router, and the route state.

`RouteState` itself lives in `controller.policy.route` (the engine decides it
without importing an adapter); it is re-exported here for the routers' users.
The Kubernetes routers (`nginx`, `gateway_api`, `istio`) and the `registry`
that maps a policy's `traffic.router` to them are imported from their own
modules by the composition root only: this package never imports `kubernetes`.
"""

from controller.errors import FencedError
from controller.kube.errors import (
    ApiNotInstalledError,
    ApiUnavailableError,
    ConflictError,
    ForbiddenError,
    RejectedError,
)
from controller.kube.objects import Verb, Write
from controller.policy.route import NEUTRAL, PROMOTED, TOTAL, RouteState
from controller.routing.base import (
    MANAGED_BY,
    MANAGED_BY_LABEL,
    ROLLOUT_LABEL,
    ROUTE_LABEL,
    SNAPSHOT_ANNOTATION,
    NotRoutedToBaselineError,
    OwnerReference,
    OwnershipError,
    RouteChange,
    RouteNotFoundError,
    RouteTarget,
    TrafficRouter,
    UnknownRouterError,
    UnsupportedRouteError,
    supported_state,
)
from controller.routing.memory import MemoryRouter

__all__ = [
    "MANAGED_BY",
    "MANAGED_BY_LABEL",
    "NEUTRAL",
    "PROMOTED",
    "ROLLOUT_LABEL",
    "ROUTE_LABEL",
    "SNAPSHOT_ANNOTATION",
    "TOTAL",
    "ApiNotInstalledError",
    "ApiUnavailableError",
    "ConflictError",
    "FencedError",
    "ForbiddenError",
    "MemoryRouter",
    "NotRoutedToBaselineError",
    "OwnerReference",
    "OwnershipError",
    "RejectedError",
    "RouteChange",
    "RouteNotFoundError",
    "RouteState",
    "RouteTarget",
    "TrafficRouter",
    "UnknownRouterError",
    "UnsupportedRouteError",
    "Verb",
    "Write",
    "supported_state",
]
