"""The routes under test, one per router, and what each router's tests need to know.

Each original route is deliberately busy: rules and annotations of other
owners, a status written by another controller, fields this code never reads.
Every one of them must come back byte for byte after a rollout.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from controller.kube.cluster import Cluster
from controller.policy import CAPABILITIES, Cohort, HeaderMatch, RouterKind
from controller.routing import MemoryRouter, OwnerReference, RouteState, RouteTarget, TrafficRouter
from controller.routing.gateway_api import GatewayApiRouter
from controller.routing.istio import IstioRouter, sticky_rule_name
from controller.routing.nginx import NginxRouter, canary_name
from tests.kube import ApiServer, JsonObject, without_server_metadata

NAMESPACE = "llm"
ROUTE = "support-bot"
BASELINE = "support-bot-v6"
CANDIDATE = "support-bot-v7"
STICKY = "x-conversation-id"
OWNER = OwnerReference(name="support-bot-v7", uid="5b0e7c5e-0d4e-4c55-9a57-0c7b0f1f6a11")

COHORTS = (
    Cohort(name="non-english", match=HeaderMatch(header="Accept-Language", regex="^(de|fr|es)")),
    Cohort(name="mobile", match=HeaderMatch(header="x-client", value="mobile")),
    Cohort(name="power-users", match=HeaderMatch(header="x-user-tier", prefix="power.")),
)

OTHER_ANNOTATIONS = {
    "argocd.argoproj.io/tracking-id": "llm:support-bot",
    "example.com/owner": "platform-team",
}


def target(owner: OwnerReference | None = OWNER) -> RouteTarget:
    return RouteTarget(
        namespace=NAMESPACE,
        route=ROUTE,
        baseline=BASELINE,
        candidate=CANDIDATE,
        cohorts=COHORTS,
        rollout="support-bot-v7",
        owner=owner,
    )


def _metadata() -> JsonObject:
    return {
        "name": ROUTE,
        "namespace": NAMESPACE,
        "labels": {"app.kubernetes.io/name": "support-bot"},
        "annotations": dict(OTHER_ANNOTATIONS),
    }


HTTP_ROUTE: JsonObject = {
    "apiVersion": "gateway.networking.k8s.io/v1",
    "kind": "HTTPRoute",
    "metadata": _metadata(),
    "spec": {
        "parentRefs": [{"name": "public", "namespace": "gateways", "sectionName": "https"}],
        "hostnames": ["bot.example.com"],
        "rules": [
            {
                "matches": [{"path": {"type": "PathPrefix", "value": "/v1/chat"}}],
                "filters": [
                    {
                        "type": "RequestHeaderModifier",
                        "requestHeaderModifier": {"set": [{"name": "x-route", "value": "chat"}]},
                    }
                ],
                "backendRefs": [{"name": BASELINE, "port": 8000}],
                "timeouts": {"request": "60s"},
            },
            {
                "matches": [
                    {"path": {"type": "PathPrefix", "value": "/v1/completions"}},
                    {"path": {"type": "PathPrefix", "value": "/v1/embeddings"}, "method": "POST"},
                ],
                "backendRefs": [
                    {"group": "", "kind": "Service", "name": BASELINE, "port": 8000, "weight": 1}
                ],
            },
            {
                "matches": [{"path": {"type": "PathPrefix", "value": "/healthz"}}],
                "backendRefs": [{"name": "status-page", "port": 80}],
            },
        ],
    },
    "status": {
        "parents": [
            {
                "parentRef": {"name": "public", "namespace": "gateways"},
                "controllerName": "example.com/gateway",
                "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted"}],
            }
        ]
    },
}

VIRTUAL_SERVICE: JsonObject = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "VirtualService",
    "metadata": _metadata(),
    "spec": {
        "hosts": ["bot.example.com"],
        "gateways": ["istio-system/public"],
        "http": [
            {
                "name": "admin",
                "match": [{"uri": {"prefix": "/admin"}}],
                "route": [{"destination": {"host": "admin-console", "port": {"number": 80}}}],
            },
            {
                "name": "chat",
                "match": [{"uri": {"prefix": "/v1"}}],
                "route": [
                    {
                        "destination": {
                            "host": f"{BASELINE}.{NAMESPACE}.svc.cluster.local",
                            "port": {"number": 8000},
                        }
                    }
                ],
                "timeout": "60s",
                "retries": {"attempts": 2, "perTryTimeout": "30s"},
            },
            {"route": [{"destination": {"host": "status-page"}}]},
        ],
    },
}

INGRESS: JsonObject = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "Ingress",
    "metadata": {
        **_metadata(),
        "annotations": {
            **OTHER_ANNOTATIONS,
            "nginx.ingress.kubernetes.io/proxy-read-timeout": "120",
        },
    },
    "spec": {
        "ingressClassName": "nginx",
        "tls": [{"hosts": ["bot.example.com"], "secretName": "bot-tls"}],
        "rules": [
            {
                "host": "bot.example.com",
                "http": {
                    "paths": [
                        {
                            "path": "/v1",
                            "pathType": "Prefix",
                            "backend": {"service": {"name": BASELINE, "port": {"number": 8000}}},
                        },
                        {
                            "path": "/healthz",
                            "pathType": "Exact",
                            "backend": {"service": {"name": "status-page", "port": {"number": 80}}},
                        },
                    ]
                },
            }
        ],
    },
    "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}},
}

INGRESSES = "networking.k8s.io/v1/ingresses"
HTTP_ROUTES = "gateway.networking.k8s.io/v1/httproutes"
VIRTUAL_SERVICES = "networking.istio.io/v1/virtualservices"
DESTINATION_RULES = "networking.istio.io/v1/destinationrules"


@dataclass(frozen=True)
class RouterCase:
    """One router under test: its route, its resources, and the objects it may create."""

    kind: RouterKind
    route_path: str  # group/version/plural of the route
    route_kind: str
    original: JsonObject
    make: Callable[[RouteTarget, Cluster], TrafficRouter]
    managed: tuple[tuple[str, str], ...]  # (group/version/plural, name) it may create
    apis: tuple[tuple[str, str], ...]  # (group/version/plural, kind) it needs installed

    def install(self, server: ApiServer, *, route: JsonObject | None = None) -> None:
        for path, kind in self.apis:
            server.register(path, kind)
        server.put(self.route_path, copy.deepcopy(route if route is not None else self.original))

    def route_now(self, server: ApiServer) -> JsonObject | None:
        return server.get(self.route_path, NAMESPACE, ROUTE)

    def objects(self, server: ApiServer) -> dict[str, Any]:
        """The route and every managed object that exists, minus server metadata."""
        found: dict[str, Any] = {}
        for path, name in ((self.route_path, ROUTE), *self.managed):
            obj = server.get(path, NAMESPACE, name)
            if obj is not None:
                found[f"{path.rsplit('/', 1)[-1]}/{name}"] = without_server_metadata(obj)
        return found

    @property
    def plural(self) -> str:
        return self.route_path.rsplit("/", 1)[-1]


CASES = {
    RouterKind.NGINX_INGRESS: RouterCase(
        kind=RouterKind.NGINX_INGRESS,
        route_path=INGRESSES,
        route_kind="Ingress",
        original=INGRESS,
        make=NginxRouter,
        managed=((INGRESSES, canary_name(ROUTE)),),
        apis=((INGRESSES, "Ingress"),),
    ),
    RouterKind.GATEWAY_API: RouterCase(
        kind=RouterKind.GATEWAY_API,
        route_path=HTTP_ROUTES,
        route_kind="HTTPRoute",
        original=HTTP_ROUTE,
        make=GatewayApiRouter,
        managed=(),
        apis=((HTTP_ROUTES, "HTTPRoute"),),
    ),
    RouterKind.ISTIO: RouterCase(
        kind=RouterKind.ISTIO,
        route_path=VIRTUAL_SERVICES,
        route_kind="VirtualService",
        original=VIRTUAL_SERVICE,
        make=IstioRouter,
        managed=((DESTINATION_RULES, sticky_rule_name(ROUTE)),),
        apis=((VIRTUAL_SERVICES, "VirtualService"), (DESTINATION_RULES, "DestinationRule")),
    ),
}


def rollout(kind: RouterKind) -> list[tuple[str, RouteState]]:
    """Shadow, then 1 → 5 → 20 → 50 → 100, cohorts at 5 in the first step (as far as the
    router can: nginx sends one whole cohort by header instead)."""
    caps = CAPABILITIES[kind]
    mirror = 50 if caps.partial_mirror else 100
    cohorts = (
        {"non-english": 5, "power-users": 5} if caps.weighted_cohorts else {"power-users": 100}
    )
    return [
        ("shadow", RouteState(0, {}, mirror, STICKY)),
        ("step-1", RouteState(1, cohorts, 0, STICKY)),
        ("step-5", RouteState(5, {}, 0, STICKY)),
        ("step-20", RouteState(20, {}, 0, STICKY)),
        ("step-50", RouteState(50, {}, 0, STICKY)),
        ("step-100", RouteState(100, {}, 0, STICKY)),
    ]


def memory_router(kind: RouterKind) -> MemoryRouter:
    return MemoryRouter(target(), kind)
