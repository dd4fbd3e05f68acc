"""NGINX ingress specifics: the canary Ingress, header cohorts, mirror-target, ownership."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from controller.kube.cluster import Cluster
from controller.policy import Cohort, HeaderMatch, RouterKind
from controller.routing import (
    NEUTRAL,
    OwnershipError,
    RouteState,
    RouteTarget,
    UnsupportedRouteError,
)
from controller.routing.nginx import (
    CANARY_BY_HEADER,
    CANARY_BY_HEADER_PATTERN,
    CANARY_BY_HEADER_VALUE,
    CANARY_WEIGHT,
    CANARY_WEIGHT_TOTAL,
    LEGACY_CLASS,
    MIRROR_TARGET,
    NginxRouter,
    canary_name,
    desired_canary,
    observed_state,
)
from tests.kube import KubeApi, without_server_metadata
from tests.routing.cases import CASES, INGRESS, INGRESSES, NAMESPACE, ROUTE, target

CASE = CASES[RouterKind.NGINX_INGRESS]
CANARY = canary_name(ROUTE)


def _install(kube: KubeApi, route: dict[str, Any] | None = None) -> None:
    CASE.install(kube.server, route=route)


def _canary(kube: KubeApi) -> dict[str, Any] | None:
    return kube.server.get(INGRESSES, NAMESPACE, CANARY)


@pytest.mark.parametrize(
    ("cohort", "annotations"),
    [
        pytest.param(
            "mobile", {CANARY_BY_HEADER: "x-client", CANARY_BY_HEADER_VALUE: "mobile"}, id="value"
        ),
        pytest.param(
            "non-english",
            {CANARY_BY_HEADER: "Accept-Language", CANARY_BY_HEADER_PATTERN: "^(de|fr|es)"},
            id="regex",
        ),
        pytest.param(
            "power-users",
            {CANARY_BY_HEADER: "x-user-tier", CANARY_BY_HEADER_PATTERN: "^power\\."},
            id="prefix",
        ),
    ],
)
def test_a_cohort_is_sent_wholly_to_the_candidate_by_header(
    kube: KubeApi, cluster: Cluster, cohort: str, annotations: dict[str, str]
) -> None:
    _install(kube)
    router = NginxRouter(target(), cluster)
    state = RouteState(1, {cohort: 100})

    assert router.apply(state).state == state

    canary = _canary(kube)
    assert canary is not None
    found = {k: v for k, v in canary["metadata"]["annotations"].items() if "by-header" in k}
    assert found == annotations
    # Dropping the cohort removes its annotations again.
    router.apply(RouteState(5))
    canary = _canary(kube)
    assert canary is not None
    assert not any("by-header" in k for k in canary["metadata"]["annotations"])
    assert router.observe() == RouteState(5)


def test_a_canary_ingress_of_someone_else_is_never_touched(kube: KubeApi, cluster: Cluster) -> None:
    _install(kube)
    theirs = copy.deepcopy(INGRESS)
    theirs["metadata"] = {"name": CANARY, "namespace": NAMESPACE}
    kube.server.put(INGRESSES, theirs)
    router = NginxRouter(target(), cluster)

    with pytest.raises(OwnershipError, match=f"Ingress {NAMESPACE}/{CANARY} exists and is not"):
        router.apply(RouteState(5))
    assert not router.restore().changed
    assert _canary(kube) is not None


def test_someone_elses_mirror_target_is_not_replaced(kube: KubeApi, cluster: Cluster) -> None:
    route = copy.deepcopy(INGRESS)
    route["metadata"]["annotations"][MIRROR_TARGET] = "http://recorder.tools$request_uri"
    _install(kube, route)
    router = NginxRouter(target(), cluster)

    with pytest.raises(OwnershipError, match=r"already mirrors to http://recorder\.tools"):
        router.apply(RouteState(0, {}, 100))
    router.apply(RouteState(5))
    router.restore()
    stored = CASE.route_now(kube.server)
    assert stored is not None
    assert stored["metadata"]["annotations"][MIRROR_TARGET] == "http://recorder.tools$request_uri"


def test_mirroring_needs_the_baseline_port_number(kube: KubeApi, cluster: Cluster) -> None:
    route = copy.deepcopy(INGRESS)
    backend = route["spec"]["rules"][0]["http"]["paths"][0]["backend"]
    backend["service"]["port"] = {"name": "http"}
    _install(kube, route)
    router = NginxRouter(target(), cluster)

    with pytest.raises(UnsupportedRouteError, match="port by name"):
        router.apply(RouteState(0, {}, 100))
    assert router.apply(RouteState(5)).state == RouteState(5)


def test_the_mirror_target_uses_the_cluster_domain(kube: KubeApi, cluster: Cluster) -> None:
    _install(kube)
    NginxRouter(target(), cluster, cluster_domain="corp.internal").apply(RouteState(0, {}, 100))
    stored = CASE.route_now(kube.server)
    assert stored is not None
    assert stored["metadata"]["annotations"][MIRROR_TARGET] == (
        "http://support-bot-v7.llm.svc.corp.internal:8000$request_uri"
    )


def test_a_canary_ingress_is_not_a_stable_ingress(kube: KubeApi, cluster: Cluster) -> None:
    route = copy.deepcopy(INGRESS)
    route["metadata"]["annotations"]["nginx.ingress.kubernetes.io/canary"] = "true"
    _install(kube, route)
    with pytest.raises(UnsupportedRouteError, match="is itself a canary Ingress"):
        NginxRouter(target(), cluster).apply(RouteState(5))


def test_the_legacy_class_annotation_and_default_backend_follow_the_stable_ingress() -> None:
    stable = copy.deepcopy(INGRESS)
    del stable["spec"]["ingressClassName"]
    stable["metadata"]["annotations"][LEGACY_CLASS] = "nginx-internal"
    stable["spec"]["defaultBackend"] = {
        "service": {"name": "support-bot-v6", "port": {"number": 8000}}
    }

    canary = desired_canary(None, stable, target(), RouteState(5))

    assert canary is not None
    assert canary["metadata"]["annotations"][LEGACY_CLASS] == "nginx-internal"
    assert canary["spec"]["defaultBackend"]["service"]["name"] == "support-bot-v7"
    assert "ingressClassName" not in canary["spec"]
    paths = [p["path"] for r in canary["spec"]["rules"] for p in r["http"]["paths"]]
    assert paths == ["/v1"], "only the baseline's paths go to the canary"


@pytest.mark.parametrize(
    ("weight", "total", "expected"),
    [
        pytest.param("5", "100", 5, id="percent"),
        pytest.param("50", "1000", 5, id="per-mille"),
        pytest.param("x", "100", 0, id="garbage"),
    ],
)
def test_weights_are_read_back_as_shares_of_their_total(
    weight: str, total: str, expected: int
) -> None:
    canary = desired_canary(None, INGRESS, target(), RouteState(7))
    assert canary is not None
    canary["metadata"]["annotations"].update({CANARY_WEIGHT: weight, CANARY_WEIGHT_TOTAL: total})
    assert observed_state(INGRESS, canary, target()).weight == expected


def test_a_cohort_the_policy_no_longer_names_is_not_reported() -> None:
    canary = desired_canary(None, INGRESS, target(), RouteState(5, {"mobile": 100}))
    narrower = RouteTarget(
        NAMESPACE,
        ROUTE,
        "support-bot-v6",
        "support-bot-v7",
        (Cohort(name="mobile", match=HeaderMatch(header="x-client", value="tablet")),),
    )
    assert observed_state(INGRESS, canary, narrower) == RouteState(5)


def test_restore_without_a_stable_ingress_still_removes_the_canary(
    kube: KubeApi, cluster: Cluster
) -> None:
    _install(kube)
    router = NginxRouter(target(), cluster)
    router.apply(RouteState(5))
    kube.call(kube.server.objects[INGRESSES, NAMESPACE, ROUTE].delete)

    change = router.restore()

    assert change.state == NEUTRAL
    assert [str(w) for w in change.writes] == [f"delete Ingress {NAMESPACE}/{CANARY}"]
    assert _canary(kube) is None


def test_promotion_switches_only_the_baseline_paths(kube: KubeApi, cluster: Cluster) -> None:
    _install(kube)
    router = NginxRouter(target(), cluster)
    router.apply(RouteState(100))
    router.restore(promote=True)

    stored = CASE.route_now(kube.server)
    assert stored is not None
    expected = without_server_metadata(INGRESS)
    expected["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] = (
        "support-bot-v7"
    )
    assert without_server_metadata(stored) == expected
    writes = [(m, p.rsplit("/", 1)[-1]) for m, p, _ in kube.server.writes()[-2:]]
    assert writes == [("PATCH", ROUTE), ("DELETE", CANARY)], "switch first, then drop the canary"
