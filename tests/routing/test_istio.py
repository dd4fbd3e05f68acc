"""Istio specifics: cohort routes before their target, hosts, mirror, the sticky rule."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from controller.kube.cluster import Cluster
from controller.policy import RouterKind
from controller.routing import (
    OwnershipError,
    RouteState,
    UnsupportedRouteError,
)
from controller.routing.istio import (
    IstioRouter,
    desired_service,
    observed_state,
    original_service,
    promoted_service,
    sticky_rule_name,
)
from tests.kube import KubeApi
from tests.routing.cases import (
    CASES,
    DESTINATION_RULES,
    NAMESPACE,
    ROUTE,
    STICKY,
    VIRTUAL_SERVICE,
    target,
)

CASE = CASES[RouterKind.ISTIO]


def _service(http: list[dict[str, Any]]) -> dict[str, Any]:
    vs = copy.deepcopy(VIRTUAL_SERVICE)
    vs["spec"]["http"] = http
    return vs


SHORT = [
    {
        "route": [
            {"destination": {"host": "support-bot-v6", "subset": "gpu", "port": {"number": 80}}}
        ]
    }
]


def test_cohort_routes_go_right_before_their_target_route() -> None:
    built = desired_service(VIRTUAL_SERVICE, target(), RouteState(1, {"mobile": 5}))
    names = [h.get("name") for h in built["spec"]["http"]]
    assert names == ["admin", "chat-canary-mobile", "chat", None]
    assert built["spec"]["http"][1]["match"] == [
        {"uri": {"prefix": "/v1"}, "headers": {"x-client": {"exact": "mobile"}}}
    ]


def test_short_hosts_stay_short_and_a_subset_stays_with_the_baseline() -> None:
    vs = _service(copy.deepcopy(SHORT))
    built = desired_service(vs, target(), RouteState(30, {}, 20))
    route = built["spec"]["http"][0]
    assert route["route"] == [
        {
            "destination": {"host": "support-bot-v6", "subset": "gpu", "port": {"number": 80}},
            "weight": 70,
        },
        {"destination": {"host": "support-bot-v7", "port": {"number": 80}}, "weight": 30},
    ]
    assert route["mirror"] == {"host": "support-bot-v7", "port": {"number": 80}}
    assert route["mirrorPercentage"] == {"value": 20.0}
    assert observed_state(built, None, target()) == RouteState(30, {}, 20)
    assert original_service(built, NAMESPACE) == vs
    promoted = promoted_service(built, target())
    assert promoted["spec"]["http"][0]["route"] == [
        {"destination": {"host": "support-bot-v7", "port": {"number": 80}}}
    ]


def test_a_route_that_mirrors_already_keeps_its_mirror() -> None:
    http = copy.deepcopy(SHORT)
    http[0]["mirror"] = {"host": "recorder"}
    with pytest.raises(OwnershipError, match="already mirrors"):
        desired_service(_service(http), target(), RouteState(0, {}, 100))


def test_a_route_splitting_the_baseline_with_another_destination_is_refused() -> None:
    http = [
        {
            "route": [
                {"destination": {"host": "support-bot-v6"}, "weight": 90},
                {"destination": {"host": "legacy"}, "weight": 10},
            ]
        }
    ]
    with pytest.raises(UnsupportedRouteError, match="splits traffic between the baseline"):
        desired_service(_service(http), target(), RouteState(5))


def test_a_cohort_on_a_header_the_route_already_matches_is_refused() -> None:
    http = copy.deepcopy(SHORT)
    http[0]["match"] = [{"headers": {"x-client": {"exact": "web"}}}]
    with pytest.raises(UnsupportedRouteError, match="already matches header 'x-client'"):
        desired_service(_service(http), target(), RouteState(1, {"mobile": 5}))


def test_a_destination_rule_of_someone_else_is_never_touched(
    kube: KubeApi, cluster: Cluster
) -> None:
    CASE.install(kube.server)
    name = sticky_rule_name(ROUTE)
    theirs = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"host": "support-bot-v7"},
    }
    kube.server.put(DESTINATION_RULES, theirs)
    router = IstioRouter(target(), cluster)

    with pytest.raises(OwnershipError, match=f"DestinationRule {NAMESPACE}/{name} exists"):
        router.apply(RouteState(5, {}, 0, STICKY))
    assert router.apply(RouteState(5)).state == RouteState(5)
    router.restore()
    assert kube.server.get(DESTINATION_RULES, NAMESPACE, name) is not None


def test_dropping_the_sticky_header_deletes_the_destination_rule(
    kube: KubeApi, cluster: Cluster
) -> None:
    CASE.install(kube.server)
    router = IstioRouter(target(), cluster)
    router.apply(RouteState(5, {}, 0, STICKY))
    change = router.apply(RouteState(5))
    assert [str(w) for w in change.writes] == [
        f"delete DestinationRule {NAMESPACE}/{sticky_rule_name(ROUTE)}"
    ]
    assert router.observe() == RouteState(5)
