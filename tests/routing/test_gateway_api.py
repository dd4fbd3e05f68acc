"""Gateway API specifics: which rules are routed, cohort rules, mirror, and route edits."""

from __future__ import annotations

import copy
from typing import Any

import kmock
import pytest

from controller.kube.cluster import Cluster
from controller.policy import RouterKind
from controller.routing import (
    NotRoutedToBaselineError,
    OwnershipError,
    RouteState,
    UnsupportedRouteError,
)
from controller.routing.gateway_api import (
    GatewayApiRouter,
    desired_route,
    observed_state,
    original_route,
)
from tests.kube import KubeApi, without_server_metadata
from tests.routing.cases import (
    BASELINE,
    CANDIDATE,
    CASES,
    HTTP_ROUTE,
    HTTP_ROUTES,
    NAMESPACE,
    ROUTE,
    target,
)

CASE = CASES[RouterKind.GATEWAY_API]


def _route(**changes: Any) -> dict[str, Any]:
    route = copy.deepcopy(HTTP_ROUTE)
    route["spec"].update(changes)
    return route


def _rules(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return list(obj["spec"]["rules"])


def test_a_rule_splitting_the_baseline_with_another_backend_is_refused() -> None:
    route = _route(
        rules=[{"backendRefs": [{"name": BASELINE, "weight": 9}, {"name": "legacy", "weight": 1}]}]
    )
    with pytest.raises(UnsupportedRouteError, match="splits traffic between the baseline"):
        desired_route(route, target(), RouteState(5))


def test_more_rules_than_an_httproute_allows_are_refused() -> None:
    many = [
        {
            "matches": [{"path": {"type": "PathPrefix", "value": f"/v{i}"}}],
            "backendRefs": [{"name": BASELINE}],
        }
        for i in range(6)
    ]
    state = RouteState(5, {"mobile": 10, "power-users": 10})
    with pytest.raises(UnsupportedRouteError, match=r"would need 18 rules.*at most 16"):
        desired_route(_route(rules=many), target(), state)


def test_a_rule_that_mirrors_already_is_not_given_a_second_mirror() -> None:
    route = _route()
    route["spec"]["rules"][0]["filters"].append(
        {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "recorder"}}}
    )
    with pytest.raises(OwnershipError, match="already mirrors"):
        desired_route(route, target(), RouteState(0, {}, 100))


def test_full_mirroring_leaves_percent_out_for_older_gateways() -> None:
    built = desired_route(HTTP_ROUTE, target(), RouteState(0, {}, 100))
    mirror = _rules(built)[0]["filters"][-1]
    assert mirror == {
        "type": "RequestMirror",
        "requestMirror": {"backendRef": {"name": CANDIDATE, "port": 8000}},
    }
    assert observed_state(built, target()) == RouteState(0, {}, 100)


def test_named_rules_give_their_cohort_copies_unique_names() -> None:
    route = _route()
    route["spec"]["rules"][0]["name"] = "chat"
    built = desired_route(route, target(), RouteState(1, {"mobile": 5}))
    names = [r.get("name") for r in _rules(built)]
    assert names == ["chat", None, None, "chat-canary-mobile", None]


def test_a_cohort_on_a_header_the_rule_already_matches_is_refused() -> None:
    route = _route()
    route["spec"]["rules"][0]["matches"][0]["headers"] = [
        {"type": "Exact", "name": "X-Client", "value": "web"}
    ]
    with pytest.raises(UnsupportedRouteError, match="already matches header 'x-client'"):
        desired_route(route, target(), RouteState(1, {"mobile": 5}))


def test_a_rule_without_matches_gets_only_the_cohort_header() -> None:
    route = _route(rules=[{"backendRefs": [{"name": BASELINE, "port": 80}]}])
    built = desired_route(route, target(), RouteState(1, {"mobile": 5}))
    assert _rules(built)[1]["matches"] == [
        {"headers": [{"type": "Exact", "name": "x-client", "value": "mobile"}]}
    ]
    assert original_route(built, NAMESPACE) == route


def _edit_stored(kube: KubeApi, edit: Any) -> None:
    def run() -> None:
        obj = kube.server.objects[kmock.resource(HTTP_ROUTES), NAMESPACE, ROUTE]
        raw = copy.deepcopy(obj.raw)
        edit(raw)
        obj.patch({"spec": raw["spec"]})
        kube.server._stamp(obj)

    kube.call(run)


def test_edits_to_a_routed_rule_during_the_rollout_are_kept(
    kube: KubeApi, cluster: Cluster
) -> None:
    """The rule is recognised by its matches: a new timeout set by its owner mid-rollout
    reaches the cohort rules at the next step and stays after the restore."""
    CASE.install(kube.server)
    router = GatewayApiRouter(target(), cluster)
    router.apply(RouteState(1, {"mobile": 5}))

    def longer_timeout(route: dict[str, Any]) -> None:
        route["spec"]["rules"][0]["timeouts"] = {"request": "120s"}

    _edit_stored(kube, longer_timeout)
    router.apply(RouteState(2, {"mobile": 10}))
    stored = CASE.route_now(kube.server)
    assert stored is not None
    assert [r.get("timeouts") for r in _rules(stored)] == [
        {"request": "120s"},
        None,
        None,
        {"request": "120s"},
        None,
    ]
    router.restore()
    stored = CASE.route_now(kube.server)
    assert stored is not None
    expected = without_server_metadata(HTTP_ROUTE)
    expected["spec"]["rules"][0]["timeouts"] = {"request": "120s"}
    assert without_server_metadata(stored) == expected


def test_a_rule_to_the_candidate_added_by_someone_else_is_left_alone(
    kube: KubeApi, cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    CASE.install(kube.server)
    router = GatewayApiRouter(target(), cluster)
    router.apply(RouteState(5))
    debug_rule = {
        "matches": [{"path": {"type": "PathPrefix", "value": "/debug"}}],
        "backendRefs": [{"name": CANDIDATE, "port": 8000}],
    }
    _edit_stored(kube, lambda route: route["spec"]["rules"].append(debug_rule))

    router.restore()

    stored = CASE.route_now(kube.server)
    assert stored is not None
    assert _rules(stored) == [*HTTP_ROUTE["spec"]["rules"], debug_rule]
    assert "was not written by canary-controller" in caplog.text


def test_a_route_without_a_snapshot_is_its_own_original() -> None:
    assert original_route(HTTP_ROUTE, NAMESPACE) == HTTP_ROUTE
    assert desired_route(HTTP_ROUTE, target(), RouteState()) == HTTP_ROUTE


def test_backends_in_another_namespace_are_not_the_baseline() -> None:
    route = _route(rules=[{"backendRefs": [{"name": BASELINE, "namespace": "staging"}]}])
    with pytest.raises(NotRoutedToBaselineError, match="no rule sending traffic to the baseline"):
        desired_route(route, target(), RouteState(5))
