"""The Gateway API router against an API server that fills in the CRD's defaults.

A real API server stores an HTTPRoute with its schema defaults applied
(`weight: 1`, `group: ""`, `kind: Service` on backendRefs, a `PathPrefix /`
match where a rule has none, `type: Exact` on header matches, ...). The router
must compare with those defaults applied to both sides, or it patches the route
at every tick with nothing to change.

- `golden/gateway-api-server/*.yaml` are HTTPRoutes as a v1.26+ API server with
  the Gateway API v1 CRDs returns them at each step of a rollout (server
  metadata, status and every default included): reading them gives the step's
  state, and applying that same state again writes nothing.
- kmock is made to default every HTTPRoute written (`tests/routing/server_defaults.py`,
  written apart from the router's own normalisation) and a rollout is driven
  through every step, each tick repeated: only a change of step writes.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.kube.cluster import Cluster
from controller.policy import RouterKind
from controller.routing import PROMOTED, RouteState, supported_state
from controller.routing.gateway_api import (
    GatewayApiRouter,
    default_matches,
    desired_route,
    observed_state,
    same_route,
    with_defaults,
)
from tests.kube import KubeApi, without_server_metadata
from tests.routing.cases import (
    CASES,
    HTTP_ROUTE,
    HTTP_ROUTES,
    INGRESSES,
    NAMESPACE,
    ROUTE,
    rollout,
    target,
)
from tests.routing.server_defaults import http_route_defaults

RECORDED = Path(__file__).parent / "golden" / "gateway-api-server"
STEPS = rollout(RouterKind.GATEWAY_API)
TICKS = 5

#: an HTTPRoute as people write it: no defaults spelled out, a rule without matches
TERSE_ROUTE: dict[str, Any] = {
    "apiVersion": "gateway.networking.k8s.io/v1",
    "kind": "HTTPRoute",
    "metadata": {"name": ROUTE, "namespace": NAMESPACE},
    "spec": {
        "parentRefs": [{"name": "public", "namespace": "gateways"}],
        "rules": [
            {"backendRefs": [{"name": target().baseline, "port": 8000}]},
            {
                "matches": [
                    {"path": {"value": "/healthz"}, "headers": [{"name": "x", "value": "1"}]}
                ],
                "backendRefs": [{"name": "status-page", "port": 80}],
            },
        ],
    },
}


def _recorded(step: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((RECORDED / f"{step}.yaml").read_text())
    return loaded


# --- the normalisation itself -------------------------------------------------------------


def test_defaults_are_what_the_crd_says() -> None:
    spec = with_defaults(TERSE_ROUTE["spec"])
    assert spec["parentRefs"] == [
        {
            "group": "gateway.networking.k8s.io",
            "kind": "Gateway",
            "name": "public",
            "namespace": "gateways",
        }
    ]
    assert spec["rules"][0]["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    assert spec["rules"][0]["backendRefs"] == [
        {"group": "", "kind": "Service", "name": target().baseline, "port": 8000, "weight": 1}
    ]
    assert spec["rules"][1]["matches"] == [
        {
            "path": {"type": "PathPrefix", "value": "/healthz"},
            "headers": [{"type": "Exact", "name": "x", "value": "1"}],
        }
    ]
    assert (
        "port"
        not in with_defaults({"rules": [{"backendRefs": [{"name": "a"}]}]})["rules"][0][
            "backendRefs"
        ][0]
    )
    assert with_defaults({})["rules"] == [
        {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}]}
    ]
    mirror = {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "b", "port": 1}}}
    redirect = {"type": "RequestRedirect", "requestRedirect": {"scheme": "https"}}
    filters = with_defaults({"rules": [{"filters": [mirror, redirect]}]})["rules"][0]["filters"]
    assert filters[0]["requestMirror"]["backendRef"] == {
        "group": "",
        "kind": "Service",
        "name": "b",
        "port": 1,
    }
    assert filters[1]["requestRedirect"] == {"scheme": "https", "statusCode": 302}


def test_defaults_change_nothing_the_user_set_and_leave_the_argument_alone() -> None:
    spec = {
        "rules": [
            {
                "matches": [{"path": {"type": "Exact", "value": "/x"}}],
                "backendRefs": [
                    {"group": "example.com", "kind": "Backend", "name": "b", "weight": 0}
                ],
            }
        ]
    }
    before = copy.deepcopy(spec)
    out = with_defaults(spec)
    assert spec == before
    assert out == before
    assert with_defaults(out) == out  # idempotent


def test_the_normalisation_agrees_with_the_emulated_server() -> None:
    for route in (TERSE_ROUTE, HTTP_ROUTE):
        assert with_defaults(route["spec"]) == http_route_defaults(route["spec"])


@pytest.mark.parametrize("step", [s for s, _ in STEPS])
def test_recorded_server_responses_are_fully_defaulted(step: str) -> None:
    """Whatever a real server returned has every default already: normalising it is a no-op."""
    route = _recorded(step)
    assert with_defaults(route["spec"]) == route["spec"]
    assert same_route(route, http_route_defaults_of(route))


def http_route_defaults_of(route: dict[str, Any]) -> dict[str, Any]:
    return {**route, "spec": http_route_defaults(route["spec"])}


@pytest.mark.parametrize(("step", "state"), STEPS, ids=[s for s, _ in STEPS])
def test_a_recorded_route_reads_as_its_step_and_needs_no_write(
    step: str, state: RouteState
) -> None:
    route = _recorded(step)
    wanted = supported_state(state, RouterKind.GATEWAY_API)
    assert observed_state(route, target()) == wanted
    assert same_route(route, desired_route(route, target(), wanted))
    # and a real difference is still one
    other = RouteState(
        wanted.weight + 1 if wanted.weight < 100 else 99, {}, 0, wanted.sticky_header
    )
    assert not same_route(route, desired_route(route, target(), other))


def test_matches_compare_with_their_defaults() -> None:
    assert default_matches(None) == default_matches([{}]) == default_matches([{"path": {}}])
    assert default_matches([{"headers": [{"name": "a", "value": "b"}]}]) == default_matches(
        [
            {
                "path": {"type": "PathPrefix", "value": "/"},
                "headers": [{"type": "Exact", "name": "a", "value": "b"}],
            }
        ]
    )
    assert default_matches([{"path": {"value": "/a"}}]) != default_matches(
        [{"path": {"value": "/b"}}]
    )


# --- against kmock defaulting like a real API server --------------------------------------


def _server_like(kube: KubeApi, route: dict[str, Any]) -> None:
    kube.server.register(HTTP_ROUTES, "HTTPRoute")
    kube.server.default_specs(HTTP_ROUTES, http_route_defaults)
    kube.server.put(HTTP_ROUTES, copy.deepcopy(route))


def _patches(kube: KubeApi) -> int:
    return sum(method == "PATCH" for method, _, _ in kube.server.writes())


@pytest.mark.parametrize("route", [HTTP_ROUTE, TERSE_ROUTE], ids=["busy", "terse"])
def test_repeated_ticks_with_nothing_to_change_make_no_patch(
    kube: KubeApi, cluster: Cluster, route: dict[str, Any]
) -> None:
    _server_like(kube, route)
    original = kube.server.get(HTTP_ROUTES, NAMESPACE, ROUTE)
    router = GatewayApiRouter(target(), cluster)
    per_step = []
    for _, state in STEPS:
        before = _patches(kube)
        for _ in range(TICKS):  # the same step, tick after tick
            change = router.apply(state)
            assert change.state == supported_state(state, RouterKind.GATEWAY_API)
        per_step.append(_patches(kube) - before)
    assert per_step == [1] * len(STEPS)  # one write per change of step, none per tick

    # giving the route back: one write, then nothing more, and it is the original again
    before = _patches(kube)
    for _ in range(TICKS):
        router.restore()
    assert _patches(kube) - before == 1
    restored = kube.server.get(HTTP_ROUTES, NAMESPACE, ROUTE)
    assert restored is not None and original is not None
    assert without_server_metadata(restored) == without_server_metadata(original)


def test_promotion_is_written_once_with_server_defaults(kube: KubeApi, cluster: Cluster) -> None:
    _server_like(kube, TERSE_ROUTE)
    router = GatewayApiRouter(target(), cluster)
    router.apply(STEPS[-1][1])
    before = _patches(kube)
    for _ in range(TICKS):
        assert router.restore(promote=True).state == PROMOTED
    assert _patches(kube) - before == 1


@pytest.mark.parametrize(("step", "state"), STEPS, ids=[s for s, _ in STEPS])
def test_a_seeded_recorded_route_is_left_alone(
    kube: KubeApi, cluster: Cluster, step: str, state: RouteState
) -> None:
    """A controller restarted mid-rollout reads the route a real server holds and, at
    the same step, writes nothing."""
    _server_like(kube, _recorded(step))
    router = GatewayApiRouter(target(), cluster)
    for _ in range(TICKS):
        change = router.apply(state)
        assert not change.changed
    assert _patches(kube) == 0


# --- the other routers write only on change too -------------------------------------------


def ingress_defaults(spec: dict[str, Any]) -> dict[str, Any]:
    """What the API server defaults on an Ingress spec: networking.k8s.io/v1 requires
    `pathType` (no default), so nothing but the older APIs' `ImplementationSpecific`
    for a path without one, filled in here in case an object is converted."""
    spec = copy.deepcopy(spec)
    for rule in spec.get("rules") or []:
        for path in (rule.get("http") or {}).get("paths") or []:
            path.setdefault("pathType", "ImplementationSpecific")
    return spec


@pytest.mark.parametrize("kind", [RouterKind.NGINX_INGRESS, RouterKind.ISTIO])
def test_nginx_and_istio_write_only_when_the_step_changes(
    kube: KubeApi, cluster: Cluster, kind: RouterKind
) -> None:
    case = CASES[kind]
    case.install(kube.server)
    if kind is RouterKind.NGINX_INGRESS:
        kube.server.default_specs(INGRESSES, ingress_defaults)  # the canary Ingress too
    router = case.make(target(), cluster)
    for _, state in rollout(kind):
        router.apply(state)  # the step's writes
        written = len(kube.server.writes())
        for _ in range(TICKS):
            assert not router.apply(state).changed
        assert len(kube.server.writes()) == written
    router.restore()
    written = len(kube.server.writes())
    for _ in range(TICKS):
        router.restore()
    assert len(kube.server.writes()) == written
