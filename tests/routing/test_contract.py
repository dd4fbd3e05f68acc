"""The contract every router keeps, run against all of them (and the in-memory one where
it applies): idempotence, read-back, optimistic concurrency, preserving what it does
not own, exact restore, managed objects, and the states it refuses."""

from __future__ import annotations

import json
import logging

import pytest

from controller.errors import FencedError, TransientError
from controller.kube.cluster import Cluster
from controller.policy import CAPABILITIES, RouterKind
from controller.routing import (
    MANAGED_BY,
    MANAGED_BY_LABEL,
    NEUTRAL,
    PROMOTED,
    ROLLOUT_LABEL,
    ROUTE_LABEL,
    SNAPSHOT_ANNOTATION,
    ConflictError,
    RouteState,
    TrafficRouter,
    UnsupportedRouteError,
    supported_state,
)
from tests.kube import Concurrent, KubeApi, Through, without_server_metadata
from tests.routing.cases import (
    CASES,
    NAMESPACE,
    OWNER,
    ROUTE,
    STICKY,
    RouterCase,
    memory_router,
    rollout,
    target,
)
from tests.routing.conftest import Sleeps

KINDS = [pytest.param(kind, id=str(kind)) for kind in CASES]
#: in-memory router stand-ins, one per kind, for the rules that are not about Kubernetes
MEMORY = [pytest.param(kind, id=f"memory-{kind}") for kind in CASES]


def _kube_router(kube: KubeApi, cluster: Cluster, kind: RouterKind) -> TrafficRouter:
    CASES[kind].install(kube.server)
    return CASES[kind].make(target(), cluster)


@pytest.fixture(params=[*KINDS, *MEMORY])
def any_router(request: pytest.FixtureRequest, kube: KubeApi, cluster: Cluster) -> TrafficRouter:
    kind: RouterKind = request.param
    if request.node.callspec.id.startswith("memory-"):
        return memory_router(kind)
    return _kube_router(kube, cluster, kind)


def _writes_route_state(kind: RouterKind) -> RouteState:
    """A state whose apply patches the route itself (nginx only changes it to mirror)."""
    return rollout(kind)[0][1] if kind is RouterKind.NGINX_INGRESS else rollout(kind)[1][1]


# --- the port, for every router ----------------------------------------------------------


def test_reports_the_capabilities_of_its_kind(any_router: TrafficRouter) -> None:
    assert any_router.capabilities == CAPABILITIES[any_router.kind]


def test_observe_reads_back_every_state_it_applied(any_router: TrafficRouter) -> None:
    assert any_router.observe() == NEUTRAL
    for _, state in rollout(any_router.kind):
        change = any_router.apply(state)
        assert change.changed
        assert change.state == supported_state(state, any_router.kind)
        assert any_router.observe() == change.state


def test_apply_is_idempotent(any_router: TrafficRouter, caplog: pytest.LogCaptureFixture) -> None:
    for _, state in rollout(any_router.kind):
        any_router.apply(state)
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="controller"):
            again = any_router.apply(state)
        assert not again.changed
        assert again.state == supported_state(state, any_router.kind)
        assert "no changes" in caplog.text
        # every tick of a steady rollout applies the same state: not worth an INFO line
        assert all(r.levelno == logging.DEBUG for r in caplog.records if "no changes" in r.message)


def test_restore_is_idempotent_and_harmless_before_any_write(any_router: TrafficRouter) -> None:
    assert not any_router.restore().changed
    any_router.apply(rollout(any_router.kind)[1][1])
    assert any_router.restore().changed
    assert not any_router.restore().changed
    assert any_router.observe() == NEUTRAL


def test_promotion_reports_the_candidate_as_the_only_backend(any_router: TrafficRouter) -> None:
    any_router.apply(RouteState(100))
    change = any_router.restore(promote=True)
    assert change.changed
    assert change.state == PROMOTED
    assert not any_router.restore(promote=True).changed


# --- fencing: the lease epoch a write toward the candidate carries ---------------------------


def test_a_write_toward_the_candidate_with_an_older_epoch_is_refused(
    any_router: TrafficRouter,
) -> None:
    first, second = rollout(any_router.kind)[1][1], rollout(any_router.kind)[2][1]
    any_router.apply(first, epoch=2)
    with pytest.raises(FencedError, match="epoch 2"):
        any_router.apply(second, epoch=1)
    assert any_router.observe() == supported_state(first, any_router.kind)
    with pytest.raises(FencedError):
        any_router.apply(first, epoch=1)  # even with nothing to change
    with pytest.raises(FencedError):
        any_router.restore(promote=True, epoch=1)
    assert any_router.observe() == supported_state(first, any_router.kind)
    # the holder of the epoch, and a newer one, write as usual
    assert any_router.apply(second, epoch=2).changed
    assert any_router.apply(first, epoch=3).changed
    with pytest.raises(FencedError, match="epoch 3"):
        any_router.apply(second, epoch=2)


def test_an_unfenced_write_keeps_the_epoch_the_route_carries(any_router: TrafficRouter) -> None:
    first, second = rollout(any_router.kind)[1][1], rollout(any_router.kind)[2][1]
    any_router.apply(first, epoch=5)
    any_router.apply(second)
    with pytest.raises(FencedError, match="epoch 5"):
        any_router.apply(first, epoch=4)


def test_a_restore_to_the_baseline_is_never_fenced_and_takes_the_token_away(
    any_router: TrafficRouter,
) -> None:
    """The residual window: after a restore the route is exactly as before, so it carries
    no epoch and a stale write that passed its lease check lands; the controller's sync
    finds it on the ended rollout's route and puts it back."""
    state = rollout(any_router.kind)[1][1]
    any_router.apply(state, epoch=7)
    assert any_router.restore(epoch=1).changed
    assert any_router.observe() == NEUTRAL
    assert any_router.apply(state, epoch=1).changed
    any_router.apply(NEUTRAL, epoch=1)  # toward the baseline: never fenced either
    assert any_router.observe() == NEUTRAL


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param(RouterKind.GATEWAY_API, id="gateway-api"),
        pytest.param(RouterKind.ISTIO, id="istio"),
    ],
)
def test_the_epoch_check_and_the_write_are_one_step_on_the_api_server(
    kube: KubeApi, cluster: Cluster, sleeps: Sleeps, kind: RouterKind
) -> None:
    """Another replica writes the route with a newer epoch right after our read: our patch
    carries the resourceVersion read, gets a 409, we read again and see the newer epoch."""
    router = _kube_router(kube, cluster, kind)
    case = CASES[kind]
    state = _writes_route_state(kind)
    router.apply(state, epoch=1)
    route = case.route_now(kube.server)
    assert route is not None
    snapshot = json.loads(route["metadata"]["annotations"][SNAPSHOT_ANNOTATION])
    assert snapshot["epoch"] == 1
    newer = json.dumps({**snapshot, "epoch": 2})
    kube.server.fail(
        "GET",
        case.plural,
        ROUTE,
        Concurrent({"metadata": {"annotations": {SNAPSHOT_ANNOTATION: newer}}}),
    )
    with pytest.raises(FencedError, match="epoch 2"):
        router.apply(rollout(kind)[3][1], epoch=1)
    assert router.observe() == supported_state(state, kind)
    assert sleeps == [0.2], "one conflict, read again, refused"


def test_weights_are_integer_shares_of_the_total() -> None:
    assert RouteState(30).baseline_weight == 70
    with pytest.raises(TypeError):
        RouteState(2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        RouteState(True)
    with pytest.raises(ValueError, match="between 0 and 100"):
        RouteState(101)
    with pytest.raises(ValueError, match="cohort 'mobile'"):
        RouteState(5, {"mobile": -1})


@pytest.mark.parametrize(
    ("kind", "state", "reason"),
    [
        pytest.param(
            RouterKind.NGINX_INGRESS,
            RouteState(5, {"mobile": 10}),
            "whole cohort",
            id="nginx-cohort-weight",
        ),
        pytest.param(
            RouterKind.NGINX_INGRESS,
            RouteState(5, {"mobile": 100, "power-users": 100}),
            "at most 1 cohort",
            id="nginx-two-cohorts",
        ),
        pytest.param(
            RouterKind.NGINX_INGRESS,
            RouteState(0, {}, 30),
            "every request or none",
            id="nginx-partial-mirror",
        ),
        *[
            pytest.param(kind, RouteState(5, {"tablets": 100}), "no cohort", id=f"{kind}-unknown")
            for kind in CASES
        ],
    ],
)
def test_refuses_states_it_cannot_carry_before_writing(
    kube: KubeApi, cluster: Cluster, kind: RouterKind, state: RouteState, reason: str
) -> None:
    for router in (_kube_router(kube, cluster, kind), memory_router(kind)):
        with pytest.raises(UnsupportedRouteError, match=reason):
            router.apply(state)
    assert kube.server.writes() == []


@pytest.mark.parametrize("kind", [RouterKind.NGINX_INGRESS, RouterKind.GATEWAY_API])
def test_a_sticky_header_is_ignored_where_unsupported(
    kube: KubeApi, cluster: Cluster, kind: RouterKind
) -> None:
    router = _kube_router(kube, cluster, kind)
    change = router.apply(RouteState(5, {}, 0, STICKY))
    assert change.state == RouteState(5)
    assert router.observe() == RouteState(5)


# --- Kubernetes: concurrency, preservation, managed objects ----------------------------------


def _route_version(kube: KubeApi, case: RouterCase) -> str:
    route = case.route_now(kube.server)
    assert route is not None
    return str(route["metadata"]["resourceVersion"])


@pytest.mark.parametrize("kind", KINDS)
def test_writes_carry_the_resource_version_read(
    kube: KubeApi, cluster: Cluster, kind: RouterKind
) -> None:
    router = _kube_router(kube, cluster, kind)
    case = CASES[kind]
    for _, state in rollout(kind):
        read = _route_version(kube, case)
        before = len(kube.server.writes())
        router.apply(state)
        route_patches = [
            body
            for method, path, body in kube.server.writes()[before:]
            if method == "PATCH" and path.endswith(f"/{case.plural}/{ROUTE}")
        ]
        for body in route_patches:
            assert body["metadata"]["resourceVersion"] == read


@pytest.mark.parametrize("kind", KINDS)
def test_an_injected_409_is_retried_after_reading_again(
    kube: KubeApi, cluster: Cluster, sleeps: Sleeps, kind: RouterKind
) -> None:
    router = _kube_router(kube, cluster, kind)
    case = CASES[kind]
    state = _writes_route_state(kind)
    kube.server.fail("PATCH", case.plural, ROUTE, 409)
    reads = len(kube.server.requests("GET"))

    change = router.apply(state)

    assert change.state == supported_state(state, kind)
    assert router.observe() == change.state
    patches = [w for w in kube.server.writes() if w[0] == "PATCH" and w[1].endswith(f"/{ROUTE}")]
    assert len(patches) == 2, "the refused patch is sent again"
    assert len(kube.server.requests("GET")) - reads >= 3
    assert sleeps == [0.2]


@pytest.mark.parametrize("kind", KINDS)
def test_a_concurrent_change_is_never_overwritten(
    kube: KubeApi, cluster: Cluster, sleeps: Sleeps, kind: RouterKind
) -> None:
    """Another controller writes the route right after our read: our patch (carrying the
    resourceVersion we read) gets a real 409, we read again, and both changes survive."""
    router = _kube_router(kube, cluster, kind)
    case = CASES[kind]
    theirs = {"metadata": {"annotations": {"other.example.com/synced": "yes"}}}
    # nginx reads its stable Ingress twice per apply; the change lands after the last read
    leading = (Through(),) if kind is RouterKind.NGINX_INGRESS else ()
    kube.server.fail("GET", case.plural, ROUTE, *leading, Concurrent(theirs))
    state = _writes_route_state(kind)

    change = router.apply(state)

    assert change.state == supported_state(state, kind)
    route = case.route_now(kube.server)
    assert route is not None
    assert route["metadata"]["annotations"]["other.example.com/synced"] == "yes"
    assert router.observe() == change.state
    assert sleeps == [0.2], "one conflict, one backoff"
    router.restore()
    restored = case.route_now(kube.server)
    assert restored is not None
    expected = without_server_metadata(case.original)
    expected["metadata"]["annotations"]["other.example.com/synced"] = "yes"
    assert without_server_metadata(restored) == expected


@pytest.mark.parametrize("kind", KINDS)
def test_conflicts_without_end_give_up_as_a_transient_error(
    kube: KubeApi, cluster: Cluster, sleeps: Sleeps, kind: RouterKind
) -> None:
    router = _kube_router(kube, cluster, kind)
    case = CASES[kind]
    kube.server.fail("PATCH", case.plural, ROUTE, *[409] * 4)

    with pytest.raises(ConflictError, match="kept changing") as raised:
        router.apply(_writes_route_state(kind))

    assert isinstance(raised.value, TransientError)
    assert sleeps == [0.2, 0.4, 0.8], "bounded exponential backoff, none after the last"
    route = case.route_now(kube.server)
    assert route is not None
    assert without_server_metadata(route) == without_server_metadata(case.original)


@pytest.mark.parametrize("kind", KINDS)
def test_changes_by_others_during_the_rollout_survive_it(
    kube: KubeApi, cluster: Cluster, kind: RouterKind
) -> None:
    """Labels, annotations and status written by others while the rollout runs are kept
    through every later step and the restore."""
    router = _kube_router(kube, cluster, kind)
    case = CASES[kind]
    steps = rollout(kind)
    router.apply(steps[0][1])
    router.apply(steps[1][1])
    theirs = {
        "metadata": {
            "labels": {"team": "assistants"},
            "annotations": {"other.example.com/last-sync": "2026-01-01"},
        },
        "status": {"observedBy": "another-controller"},
    }
    kube.call(lambda: _patch_stored(kube, case, theirs))
    for _, state in steps[2:]:
        router.apply(state)
    router.restore()

    restored = case.route_now(kube.server)
    assert restored is not None
    expected = without_server_metadata(case.original)
    expected["metadata"]["labels"]["team"] = "assistants"
    expected["metadata"]["annotations"]["other.example.com/last-sync"] = "2026-01-01"
    expected.setdefault("status", {})["observedBy"] = "another-controller"
    assert without_server_metadata(restored) == expected


def _patch_stored(kube: KubeApi, case: RouterCase, patch: dict[str, object]) -> None:
    """Another writer's change, applied on the server as the API would."""
    import kmock

    obj = kube.server.objects[kmock.resource(case.route_path), NAMESPACE, ROUTE]
    obj.patch(patch)
    kube.server._stamp(obj)


@pytest.mark.parametrize(
    ("kind", "owned"),
    [
        pytest.param(RouterKind.NGINX_INGRESS, True, id="nginx-owned"),
        pytest.param(RouterKind.NGINX_INGRESS, False, id="nginx-no-owner"),
        pytest.param(RouterKind.ISTIO, True, id="istio-owned"),
        pytest.param(RouterKind.ISTIO, False, id="istio-no-owner"),
    ],
)
def test_managed_objects_are_labelled_owned_and_deleted_at_the_end(
    kube: KubeApi, cluster: Cluster, kind: RouterKind, owned: bool
) -> None:
    case = CASES[kind]
    case.install(kube.server)
    router = case.make(target(OWNER if owned else None), cluster)
    router.apply(RouteState(5, {}, 0, STICKY))

    ((path, name),) = case.managed
    managed = kube.server.get(path, NAMESPACE, name)
    assert managed is not None
    assert managed["metadata"]["labels"] == {
        MANAGED_BY_LABEL: MANAGED_BY,
        ROUTE_LABEL: ROUTE,
        ROLLOUT_LABEL: "support-bot-v7",
    }
    refs = managed["metadata"].get("ownerReferences")
    assert refs == ([OWNER.to_json()] if owned else None)

    router.restore()
    assert kube.server.get(path, NAMESPACE, name) is None


@pytest.mark.parametrize("kind", [RouterKind.NGINX_INGRESS, RouterKind.ISTIO])
def test_managed_objects_keep_what_others_add_to_them(
    kube: KubeApi, cluster: Cluster, kind: RouterKind
) -> None:
    case = CASES[kind]
    router = _kube_router(kube, cluster, kind)
    router.apply(RouteState(5, {}, 0, STICKY))
    ((path, name),) = case.managed

    def annotate() -> None:
        import kmock

        obj = kube.server.objects[kmock.resource(path), NAMESPACE, name]
        obj.patch({"metadata": {"annotations": {"other.example.com/seen": "yes"}}})
        kube.server._stamp(obj)

    kube.call(annotate)
    router.apply(RouteState(20, {}, 0, STICKY))

    managed = kube.server.get(path, NAMESPACE, name)
    assert managed is not None
    assert managed["metadata"]["annotations"]["other.example.com/seen"] == "yes"
    assert router.observe() == supported_state(RouteState(20, {}, 0, STICKY), kind)
