"""The pure builders, for any state: integer splits summing to the total, a faithful
read-back, and an exact way back to the original. No API server involved."""

from __future__ import annotations

from typing import Any

import pcre2
import pytest
import re2
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.kube.objects import merge_patch
from controller.policy import RouterKind
from controller.routing import TOTAL, RouteState, gateway_api, istio, nginx, supported_state
from controller.routing.manifests import escape_regex
from tests.routing.cases import HTTP_ROUTE, INGRESS, NAMESPACE, STICKY, VIRTUAL_SERVICE, target

shares = st.integers(min_value=0, max_value=TOTAL)


@st.composite
def states(draw: st.DrawFn, kind: RouterKind) -> RouteState:
    if kind is RouterKind.NGINX_INGRESS:
        cohorts = draw(st.sampled_from([{}, {"mobile": 100}, {"non-english": 100}]))
        mirror = draw(st.sampled_from([0, TOTAL]))
    else:
        names = draw(st.sets(st.sampled_from(["non-english", "mobile", "power-users"])))
        cohorts = {name: draw(shares) for name in sorted(names)}
        mirror = draw(shares)
    return RouteState(draw(shares), cohorts, mirror, draw(st.sampled_from([None, STICKY])))


def _weights(refs: list[dict[str, Any]]) -> list[Any]:
    return [r.get("weight") for r in refs]


@settings(max_examples=60, deadline=None)
@given(states(RouterKind.GATEWAY_API))
def test_gateway_api_splits_sum_to_the_total_and_read_back(state: RouteState) -> None:
    built = gateway_api.desired_route(HTTP_ROUTE, target(), state)
    for rule in built["spec"]["rules"]:
        weights = _weights(rule["backendRefs"])
        if len(weights) == 2:
            assert all(isinstance(w, int) for w in weights)
            assert sum(weights) == TOTAL
    assert gateway_api.observed_state(built, target()) == supported_state(
        state, RouterKind.GATEWAY_API
    )
    assert gateway_api.original_route(built, NAMESPACE) == HTTP_ROUTE


@settings(max_examples=60, deadline=None)
@given(states(RouterKind.ISTIO))
def test_istio_splits_sum_to_the_total_and_read_back(state: RouteState) -> None:
    built = istio.desired_service(VIRTUAL_SERVICE, target(), state)
    for http in built["spec"]["http"]:
        weights = _weights(http["route"])
        if len(weights) == 2:
            assert all(isinstance(w, int) for w in weights)
            assert sum(weights) == TOTAL
    rule = istio.desired_sticky_rule(None, target(), state, "support-bot-v7")
    assert istio.observed_state(built, rule, target()) == state
    assert istio.original_service(built, NAMESPACE) == VIRTUAL_SERVICE


@settings(max_examples=60, deadline=None)
@given(states(RouterKind.NGINX_INGRESS))
def test_nginx_weights_are_integer_annotations_and_read_back(state: RouteState) -> None:
    canary = nginx.desired_canary(None, INGRESS, target(), state)
    stable = nginx.desired_stable(INGRESS, target(), state, cluster_domain="cluster.local")
    if canary is not None:
        values = canary["metadata"]["annotations"]
        assert values[nginx.CANARY_WEIGHT] == str(int(values[nginx.CANARY_WEIGHT]))
        assert values[nginx.CANARY_WEIGHT_TOTAL] == str(TOTAL)
    expected = supported_state(state, RouterKind.NGINX_INGRESS)
    assert nginx.observed_state(stable, canary, target()) == expected
    restored = nginx.desired_stable(stable, target(), RouteState(), cluster_domain="cluster.local")
    assert restored == INGRESS


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_an_escaped_prefix_matches_itself_literally_in_re2_and_pcre(prefix: str) -> None:
    pattern = "^" + escape_regex(prefix)
    assert re2.search(pattern, prefix) is not None
    assert pcre2.compile(pattern).match(prefix) is not None


@pytest.mark.parametrize(
    ("current", "desired", "patch"),
    [
        pytest.param({"a": 1}, {"a": 1}, {}, id="equal"),
        pytest.param({"a": 1}, {"a": 2}, {"a": 2}, id="changed"),
        pytest.param({"a": 1, "b": 2}, {"a": 1}, {"b": None}, id="removed"),
        pytest.param({"a": {"b": 1, "c": 2}}, {"a": {"b": 1}}, {"a": {"c": None}}, id="nested"),
        pytest.param({"a": [1, 2]}, {"a": [2]}, {"a": [2]}, id="lists-whole"),
        pytest.param({}, {"a": {"b": 1}}, {"a": {"b": 1}}, id="added"),
        pytest.param({"a": {"b": 1}}, {"a": 3}, {"a": 3}, id="map-to-scalar"),
    ],
)
def test_merge_patch_is_rfc_7386(
    current: dict[str, Any], desired: dict[str, Any], patch: dict[str, Any]
) -> None:
    assert merge_patch(current, desired) == patch
