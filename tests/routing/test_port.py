"""The port itself: route states, targets from policies, the registry, the in-memory
router's extras, and the promise that importing the port never imports kubernetes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from controller.errors import PermanentError, TransientError
from controller.kube.cluster import Cluster
from controller.policy import CAPABILITIES, RouterKind, load_file
from controller.routing import (
    NEUTRAL,
    MemoryRouter,
    OwnerReference,
    RouteState,
    RouteTarget,
    UnknownRouterError,
)
from controller.routing.registry import ROUTERS, create_router, router_class
from tests.kube import KubeApi
from tests.routing.cases import target

POLICIES = Path(__file__).parents[2] / "policies"


@pytest.mark.parametrize(
    "state",
    [
        pytest.param(NEUTRAL, id="neutral"),
        pytest.param(RouteState(5, {"mobile": 10}, 0, "x-conversation-id"), id="full"),
        pytest.param(RouteState(0, {}, 20), id="shadow"),
    ],
)
def test_states_round_trip_through_json(state: RouteState) -> None:
    assert RouteState.from_json(state.to_json()) == state
    assert hash(state) == hash(RouteState.from_json(state.to_json()))


def test_cohorts_compare_by_value_whatever_their_order() -> None:
    assert RouteState(5, {"a": 1, "b": 2}) == RouteState(5, (("b", 2), ("a", 1)))
    assert RouteState(5, {"b": 2, "a": 1}).cohort_weights == {"a": 1, "b": 2}
    assert (
        str(RouteState(5, {"a": 10}, 20, "x-id"))
        == "candidate 5%, a 10%, mirror 20%, sticky on x-id"
    )


def test_states_come_from_policy_steps_and_shadow() -> None:
    policy = load_file(POLICIES / "istio-sticky.yaml")[0].rollout
    spec = policy.spec
    sticky = spec.traffic.sticky_header
    assert spec.shadow is not None
    assert RouteState.for_shadow(spec.shadow, sticky_header=sticky) == RouteState(
        0, {}, 20, "x-conversation-id"
    )
    assert RouteState.for_step(spec.steps[0], sticky_header=sticky) == RouteState(
        2, {"power-users": 10, "long-chats": 10}, 0, "x-conversation-id"
    )


@pytest.mark.parametrize(
    ("uid", "owner"),
    [
        pytest.param(None, None, id="from-a-file"),
        pytest.param("0c1d", OwnerReference("support-bot-v7", "0c1d"), id="from-the-cluster"),
    ],
)
def test_a_target_comes_from_a_rollout(uid: str | None, owner: OwnerReference | None) -> None:
    rollout = load_file(POLICIES / "gateway-api-cohorts.yaml")[0].rollout
    if uid is not None:
        metadata = rollout.metadata.model_copy(update={"uid": uid})
        rollout = rollout.model_copy(update={"metadata": metadata})

    got = RouteTarget.of(rollout)

    assert (got.namespace, got.route, got.baseline, got.candidate) == (
        "llm",
        "support-bot",
        "support-bot-v6",
        "support-bot-v7",
    )
    assert [c.name for c in got.cohorts] == ["non-english", "mobile", "power-users"]
    assert got.owner == owner
    assert got.managed_labels()["canary.ai/rollout"] == "support-bot-v7"


@pytest.mark.parametrize("kind", list(RouterKind))
def test_every_router_kind_has_a_router_that_agrees_with_the_policy_table(
    kube: KubeApi, cluster: Cluster, kind: RouterKind
) -> None:
    cls = router_class(kind.value)
    assert cls is ROUTERS[kind]
    router = create_router(kind, target(), cluster)
    assert isinstance(router, cls)
    assert router.kind is kind
    assert router.capabilities == CAPABILITIES[kind]


def test_an_unknown_router_name_fails_loudly() -> None:
    with pytest.raises(UnknownRouterError, match="'linkerd'; known routers: nginx-ingress"):
        router_class("linkerd")


def test_the_memory_router_fails_on_demand_and_keeps_its_history() -> None:
    router = MemoryRouter(target(), RouterKind.ISTIO)
    router.fail_next(TransientError("API down"), PermanentError("forbidden"))
    with pytest.raises(TransientError):
        router.apply(RouteState(5))
    with pytest.raises(PermanentError):
        router.observe()
    router.apply(RouteState(5))
    router.apply(RouteState(5))
    router.apply(RouteState(20))
    assert router.history == (RouteState(5), RouteState(20))
    assert router.backend == "support-bot-v6"
    router.restore(promote=True)
    assert router.backend == "support-bot-v7"
    assert router.history[-1] == NEUTRAL


def test_importing_the_port_does_not_import_kubernetes() -> None:
    """The engine imports controller.routing; kubernetes must stay out of its reach."""
    code = (
        "import sys, controller.routing, controller.routing.base, controller.routing.memory\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('kubernetes', 'urllib3'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
