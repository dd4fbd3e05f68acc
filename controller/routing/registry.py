"""Which router serves which `traffic.router`: the one module that imports them all.

Adding a traffic provider is one new module and one line in `ROUTERS`. An
unknown name fails loudly, never falling back to some default router.
"""

from __future__ import annotations

from collections.abc import Mapping

from controller.kube.cluster import Cluster
from controller.policy import ModelRollout, RouterKind
from controller.routing.base import RouteTarget, TrafficRouter, UnknownRouterError
from controller.routing.gateway_api import GatewayApiRouter
from controller.routing.istio import IstioRouter
from controller.routing.nginx import NginxRouter

ROUTERS: Mapping[RouterKind, type[NginxRouter | GatewayApiRouter | IstioRouter]] = {
    RouterKind.NGINX_INGRESS: NginxRouter,
    RouterKind.GATEWAY_API: GatewayApiRouter,
    RouterKind.ISTIO: IstioRouter,
}


def router_class(name: str) -> type[NginxRouter | GatewayApiRouter | IstioRouter]:
    """The router class registered for `name` (a RouterKind or its value)."""
    try:
        return ROUTERS[RouterKind(name)]
    except (ValueError, KeyError):
        known = ", ".join(kind.value for kind in ROUTERS)
        raise UnknownRouterError(
            f"no traffic router is called {name!r}; known routers: {known}"
        ) from None


def create_router(name: str, target: RouteTarget, cluster: Cluster) -> TrafficRouter:
    """A router of kind `name` for one rollout's route, talking to `cluster` (the return
    type makes mypy check that every registered router keeps the port)."""
    return router_class(name)(target, cluster)


def router_for(rollout: ModelRollout, cluster: Cluster) -> TrafficRouter:
    """The router of a rollout: its `traffic.router`, on its route (`RouteTarget.of`).
    The one place a router is made for a rollout (`run`, `rehearse`)."""
    return create_router(rollout.spec.traffic.router, RouteTarget.of(rollout), cluster)
