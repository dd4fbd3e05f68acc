"""Golden tests: the exact objects each router writes at each step, and exact restores.

A rollout is driven shadow → 1% (cohorts at 5%) → 5 → 20 → 50 → 100. For every
router and step, the writes sent to the API server and the objects it then
holds are compared with `golden/<router>/<step>.yaml` (reviewed by hand; set
CANARY_UPDATE_GOLDEN=1 to rewrite them after a deliberate change, then review
the diff). After a rollback at any step, `restore()` must give back the
original route byte for byte (minus server-managed metadata), from this
router instance or from a new one, as after a controller restart.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.kube.cluster import Cluster
from controller.policy import RouterKind
from controller.routing import PROMOTED, RouteState, supported_state
from tests.kube import KubeApi, without_server_metadata
from tests.routing.cases import CASES, NAMESPACE, ROUTE, rollout, target

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("CANARY_UPDATE_GOLDEN") == "1"


def _normalized_writes(writes: list[tuple[str, str, Any]]) -> list[dict[str, Any]]:
    """The writes, with the resourceVersion precondition shown as a placeholder
    (test_contract checks that it is the one read)."""
    out = []
    for method, path, sent in writes:
        body = json.loads(json.dumps(sent))
        if isinstance(body, dict) and "resourceVersion" in body.get("metadata", {}):
            body["metadata"]["resourceVersion"] = "<as read>"
        out.append({"request": f"{method} {path}", "body": body})
    return out


def _check_golden(name: Path, got: dict[str, Any]) -> None:
    if UPDATE:
        name.parent.mkdir(parents=True, exist_ok=True)
        name.write_text(yaml.safe_dump(got, sort_keys=False, width=100))
    assert name.exists(), f"no golden file {name}; run with CANARY_UPDATE_GOLDEN=1 and review it"
    assert got == yaml.safe_load(name.read_text())


STEPS = [
    pytest.param(kind, index, id=f"{kind}-{step}")
    for kind in CASES
    for index, (step, _) in enumerate(rollout(kind))
]


@pytest.mark.parametrize(("kind", "index"), STEPS)
def test_each_step_writes_the_golden_objects(
    kube: KubeApi, cluster: Cluster, kind: RouterKind, index: int
) -> None:
    case = CASES[kind]
    case.install(kube.server)
    router = case.make(target(), cluster)
    steps = rollout(kind)
    for _, state in steps[:index]:
        router.apply(state)
    written = len(kube.server.writes())

    step, state = steps[index]
    change = router.apply(state)

    assert change.state == supported_state(state, kind)
    assert router.observe() == change.state
    got = {
        "state": str(change.state),
        "writes": _normalized_writes(kube.server.writes()[written:]),
        "objects": case.objects(kube.server),
    }
    _check_golden(GOLDEN / kind / f"{step}.yaml", got)


@pytest.mark.parametrize("kind", list(CASES))
def test_promotion_leaves_the_candidate_as_the_only_backend(
    kube: KubeApi, cluster: Cluster, kind: RouterKind
) -> None:
    case = CASES[kind]
    case.install(kube.server)
    router = case.make(target(), cluster)
    for _, state in rollout(kind):
        router.apply(state)
    written = len(kube.server.writes())

    change = router.restore(promote=True)

    assert change.state == PROMOTED
    got = {
        "writes": _normalized_writes(kube.server.writes()[written:]),
        "objects": case.objects(kube.server),
    }
    _check_golden(GOLDEN / kind / "promoted.yaml", got)
    # Promoting again finds nothing to do.
    assert not router.restore(promote=True).changed


PROMOTIONS = [
    pytest.param(kind, index, id=f"{kind}-after-{step}")
    for kind in CASES
    for index, (step, _) in enumerate(rollout(kind))
]


@pytest.mark.parametrize(("kind", "steps_done"), PROMOTIONS)
def test_promotion_from_any_step_gives_the_same_route(
    kube: KubeApi, cluster: Cluster, kind: RouterKind, steps_done: int
) -> None:
    """A human can promote early (`canaryctl promote`): the route ends the same."""
    case = CASES[kind]
    case.install(kube.server)
    router = case.make(target(), cluster)
    for _, state in rollout(kind)[: steps_done + 1]:
        router.apply(state)

    router.restore(promote=True)

    golden = yaml.safe_load((GOLDEN / kind / "promoted.yaml").read_text())
    assert case.objects(kube.server) == golden["objects"]


def _stored_original(kube: KubeApi, kind: RouterKind) -> str:
    route = CASES[kind].route_now(kube.server)
    assert route is not None
    return json.dumps(without_server_metadata(route))


ROLLBACKS = [
    pytest.param(kind, index, restarted, id=f"{kind}-{step}-{'restarted' if restarted else 'same'}")
    for kind in CASES
    for index, (step, _) in enumerate([("before-any-step", None), *rollout(kind)])
    for restarted in (False, True)
]


@pytest.mark.parametrize(("kind", "steps_done", "restarted"), ROLLBACKS)
def test_restore_after_rollback_gives_back_the_original_byte_for_byte(
    kube: KubeApi, cluster: Cluster, kind: RouterKind, steps_done: int, restarted: bool
) -> None:
    case = CASES[kind]
    case.install(kube.server)
    original = _stored_original(kube, kind)
    router = case.make(target(), cluster)
    for _, state in rollout(kind)[:steps_done]:
        router.apply(state)

    if restarted:  # a new controller process: a new client, a new router, nothing in memory
        client = kube.client()
        try:
            restarted_cluster = Cluster(client, timeout=cluster._timeout, sleep=lambda _: None)
            change = case.make(target(), restarted_cluster).restore()
        finally:
            client.close()
    else:
        change = router.restore()

    assert change.state == RouteState()
    assert _stored_original(kube, kind) == original
    assert list(case.objects(kube.server)) == [f"{case.plural}/{ROUTE}"], "managed objects left"
    assert change.changed == (steps_done > 0)
    # Restoring again finds nothing to do.
    assert not router.restore().changed
    assert router.observe() == RouteState()
    assert kube.server.get(case.route_path, NAMESPACE, ROUTE) is not None
