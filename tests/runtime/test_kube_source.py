"""The ModelRollout source: list + watch against the kmock API server, with the real client.

Faults are injected on the server (410 Gone, cut and hung watches, 5xx answers);
the source must end up with exactly the objects the server has, every time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import kmock
import pytest
from kubernetes.client import ApiClient

from controller.backoff import Backoff
from controller.runtime.controller import Controller
from controller.runtime.kube_source import KubernetesSource
from controller.store.memory import MemoryStore
from tests.kube import KubeApi, Slow
from tests.runtime.modelrollouts import (  # noqa: F401  (fixtures)
    FAST,
    Invalids,
    Rollouts,
    client_fixture,
    kube_fixture,
    rollout,
    rollouts_fixture,
    wait_for,
    watching,
)
from tests.runtime.test_controller import Clock, Passing, Routes


@pytest.fixture
def source(client: ApiClient) -> Iterator[KubernetesSource]:
    source = watching(client)
    try:
        yield source
    finally:
        source.stop()


def names(source: KubernetesSource) -> set[str]:
    return set(source.snapshot().rollouts)


def started(source: KubernetesSource) -> KubernetesSource:
    source.start()
    wait_for("the first list", lambda: source.synced)
    return source


# --- list and watch ------------------------------------------------------------------------


def test_the_first_list_syncs_the_source(
    kube: KubeApi, rollouts: Rollouts, source: KubernetesSource
) -> None:
    rollouts.create(rollout("a"))
    rollouts.create(rollout("b", namespace="other"))
    assert not source.snapshot().synced
    started(source)
    snapshot = source.snapshot()
    assert snapshot.synced
    assert set(snapshot.rollouts) == {"llm/a", "other/b"}
    a = snapshot.rollouts["llm/a"]
    assert a.metadata.generation == 1
    assert a.metadata.uid


def test_added_modified_and_deleted_arrive_through_the_watch(
    kube: KubeApi, rollouts: Rollouts, source: KubernetesSource
) -> None:
    started(source)
    assert names(source) == set()
    rollouts.create(rollout("a"))
    wait_for("ADDED", lambda: names(source) == {"llm/a"})
    rollouts.patch("llm", "a", {"spec": {"candidate": {"version": "v3", "service": "bot-v3"}}})
    wait_for(
        "MODIFIED",
        lambda: source.snapshot().rollouts["llm/a"].spec.candidate.version == "v3",
    )
    assert source.snapshot().rollouts["llm/a"].metadata.generation == 2
    rollouts.delete("llm", "a")
    wait_for("DELETED", lambda: names(source) == set())
    # one list, then watches only, each from the version seen last
    assert len(kube.server.lists("modelrollouts")) == 1
    watches = kube.server.watches("modelrollouts")
    assert all(w.params.get("allowWatchBookmarks") == "true" for w in watches)
    assert watches[0].params["resourceVersion"] == "999"  # the list's version


# --- the watch ends, breaks or expires ------------------------------------------------------


def test_410_gone_lists_again_without_losing_or_duplicating(
    kube: KubeApi, rollouts: Rollouts, source: KubernetesSource
) -> None:
    rollouts.create(rollout("a"))
    rollouts.create(rollout("b"))
    started(source)
    assert names(source) == {"llm/a", "llm/b"}
    kube.call(kube.server.stall_watches)  # nothing more reaches the source ...
    rollouts.delete("llm", "a")
    rollouts.create(rollout("c"))
    rollouts.patch("llm", "b", {"spec": {"candidate": {"version": "v9", "service": "bot-v9"}}})
    kube.call(kube.server.expire)  # ... and its version is compacted away
    kube.call(kube.server.end_watches)
    wait_for("a second list", lambda: len(kube.server.lists("modelrollouts")) == 2)
    wait_for("the re-listed objects", lambda: names(source) == {"llm/b", "llm/c"})
    assert source.snapshot().rollouts["llm/b"].spec.candidate.version == "v9"
    assert source.synced
    rollouts.create(rollout("d"))  # and it watches again from the new list
    wait_for("a watched object", lambda: names(source) == {"llm/b", "llm/c", "llm/d"})


@pytest.mark.parametrize(
    ("cut", "relists"),
    [
        pytest.param(lambda s: s.end_watches(), 1, id="server-timeout"),
        pytest.param(lambda s: s.end_watches(drop=True), 1, id="dropped-connection"),
        pytest.param(lambda s: s.stall_watches(), 1, id="hung-connection"),
    ],
)
def test_a_cut_watch_resumes_from_the_last_version(
    kube: KubeApi, rollouts: Rollouts, source: KubernetesSource, cut: object, relists: int
) -> None:
    rollouts.create(rollout("a"))
    started(source)
    watches = len(kube.server.watches("modelrollouts"))
    kube.call(lambda: cut(kube.server))  # type: ignore[operator]
    rollouts.create(rollout("b"))  # made while the watch is down: not lost
    wait_for("a new watch", lambda: len(kube.server.watches("modelrollouts")) > watches, 5)
    wait_for("the change made meanwhile", lambda: names(source) == {"llm/a", "llm/b"}, 5)
    rollouts.delete("llm", "a")
    wait_for("a change on the new watch", lambda: names(source) == {"llm/b"})
    assert len(kube.server.lists("modelrollouts")) == relists  # resumed, not re-listed


def test_watches_end_by_themselves_and_resume_from_a_bookmark(
    kube: KubeApi, rollouts: Rollouts, source: KubernetesSource
) -> None:
    started(source)
    rollouts.create(rollout("a"))
    wait_for("two watches", lambda: len(kube.server.watches("modelrollouts")) >= 3, 5)
    watches = kube.server.watches("modelrollouts")
    assert all(w.params["timeoutSeconds"] == "1" for w in watches)
    assert watches[2].params["resourceVersion"] == str(kube.server.last_version)
    assert len(kube.server.lists("modelrollouts")) == 1


def test_server_errors_and_timeouts_are_retried_with_backoff(
    kube: KubeApi, rollouts: Rollouts, client: ApiClient
) -> None:
    rollouts.create(rollout("a"))
    kube.server.fail("GET", "modelrollouts", None, 500, Slow(1.0), 503)
    source = KubernetesSource(
        client, watch_seconds=1, grace_seconds=0.5, request_timeout=0.3, backoff=FAST
    )
    try:
        source.start()
        wait_for("a list that works", lambda: source.synced, 5)
        assert names(source) == {"llm/a"}
        assert len(kube.server.lists("modelrollouts")) == 4
        # errors on the watch: back off and watch again, from the same version
        kube.server.fail("GET", "modelrollouts", None, 500, 500)
        kube.call(kube.server.end_watches)
        rollouts.create(rollout("b"))
        wait_for("the watch back", lambda: names(source) == {"llm/a", "llm/b"}, 5)
        assert len(kube.server.lists("modelrollouts")) == 4
    finally:
        source.stop()


def test_backoff_is_bounded() -> None:
    backoff = Backoff(first=0.5, factor=2.0, longest=30.0)
    assert [backoff.delay(n) for n in (1, 2, 3, 7, 50)] == [0.5, 1.0, 2.0, 30.0, 30.0]


# --- namespaces ------------------------------------------------------------------------------


def test_a_list_of_namespaces_is_one_list_and_watch_each(
    kube: KubeApi, rollouts: Rollouts, client: ApiClient
) -> None:
    for namespace in ("llm", "other", "elsewhere"):
        rollouts.create(rollout("a", namespace=namespace))
    source = watching(client, namespace="llm, other,")
    try:
        started(source)
        assert names(source) == {"llm/a", "other/a"}
        rollouts.create(rollout("b", namespace="other"))
        rollouts.create(rollout("b", namespace="elsewhere"))
        wait_for("the watched namespace", lambda: "other/b" in names(source))
        paths = {r.url.path for r in kube.server.lists("modelrollouts")}
        assert paths == {
            "/apis/canary.ai/v1alpha1/namespaces/llm/modelrollouts",
            "/apis/canary.ai/v1alpha1/namespaces/other/modelrollouts",
        }
        rollouts.delete("llm", "a")
        wait_for("the deletion", lambda: names(source) == {"other/a", "other/b"}, 5)
    finally:
        source.stop()
    assert "elsewhere/b" not in names(source)


def test_no_namespace_watches_the_whole_cluster(kube: KubeApi, source: KubernetesSource) -> None:
    started(source)
    paths = {r.url.path for r in kube.server.lists("modelrollouts")}
    assert paths == {"/apis/canary.ai/v1alpha1/modelrollouts"}


# --- invalid objects ------------------------------------------------------------------------


def test_an_invalid_object_is_reported_and_left_out(
    kube: KubeApi, rollouts: Rollouts, client: ApiClient
) -> None:
    invalids = Invalids()
    bad = rollout("bad")
    bad["spec"]["steps"][-1]["weight"] = 90
    rollouts.create(bad)
    rollouts.create(rollout("good"))
    source = watching(client, on_invalid=invalids)
    try:
        started(source)
        snapshot = source.snapshot()
        assert set(snapshot.rollouts) == {"llm/good"}
        assert [p.path for p in snapshot.problems] == ["spec.steps[2].weight"]
        assert len(invalids) == 1
        assert invalids[0].key == "llm/bad"
        assert invalids[0].generation == 1
        assert "spec.steps[2].weight: the last step must reach 100" in invalids[0].message
        # a change that is not to the spec is not reported again
        rollouts.patch("llm", "bad", {"metadata": {"labels": {"team": "x"}}})
        # a valid rollout made invalid leaves the snapshot; the others stay
        rollouts.patch("llm", "good", {"spec": {"analysis": {"interval": "soon"}}})
        wait_for("the second report", lambda: len(invalids) == 2)
        assert invalids[1].key == "llm/good"
        assert "spec.analysis.interval" in invalids[1].message
        assert names(source) == set()
        # fixed: back in the snapshot, no problem left
        rollouts.patch("llm", "bad", {"spec": {"steps": rollout()["spec"]["steps"]}})
        wait_for("the fixed object", lambda: names(source) == {"llm/bad"})
        assert [p.path for p in source.snapshot().problems] == ["spec.analysis.interval"]
    finally:
        source.stop()


def test_a_failing_invalid_handler_does_not_stop_the_watch(
    kube: KubeApi, rollouts: Rollouts, client: ApiClient
) -> None:
    def broken(_: object) -> None:
        raise RuntimeError("reporter down")

    bad = rollout("bad")
    bad["spec"]["steps"][-1]["weight"] = 90
    rollouts.create(bad)
    source = watching(client, on_invalid=broken)
    try:
        started(source)
        rollouts.create(rollout("good"))
        wait_for("a later object", lambda: names(source) == {"llm/good"})
    finally:
        source.stop()


# --- lifecycle ------------------------------------------------------------------------------


def test_stop_ends_the_threads_at_once_even_mid_watch(
    kube: KubeApi, rollouts: Rollouts, client: ApiClient
) -> None:
    source = KubernetesSource(client, namespace="llm,other", watch_seconds=300)
    source.start()
    wait_for("the first lists", lambda: source.synced)
    wait_for("open watches", lambda: len(kube.server.watches("modelrollouts")) == 2)
    began = time.monotonic()
    source.stop()
    assert time.monotonic() - began < 2
    assert not [t for t in threading.enumerate() if t.name.startswith("modelrollouts:")]


# --- with the controller --------------------------------------------------------------------


def test_the_controller_leaves_an_invalid_edit_alone_and_ends_a_deleted_rollout(
    kube: KubeApi, rollouts: Rollouts, source: KubernetesSource
) -> None:
    clock, routes, store = Clock(), Routes(), MemoryStore()
    controller = Controller(
        store=store,
        source=source,
        routes=routes,
        observer=Passing(),
        clock=clock,
        replica="a",
    )
    rollouts.create(rollout("bot-v2"))
    started(source)
    controller.sync()
    controller.tick("llm/bot-v2")
    assert routes.weight("llm/bot-v2") == 5
    # an invalid edit: not rolled out, not ended; the route stays as it is
    rollouts.patch("llm", "bot-v2", {"spec": {"analysis": {"interval": "soon"}}})
    wait_for("the invalid edit", lambda: "llm/bot-v2" in source.snapshot().invalid)
    clock.at += timedelta(minutes=11)
    controller.sync()
    controller.tick("llm/bot-v2")
    stored = store.get("llm/bot-v2")
    assert stored is not None and stored.phase == "Progressing" and stored.step == 0
    assert routes.weight("llm/bot-v2") == 5
    # deleted: the controller restores the route and ends the rollout
    rollouts.delete("llm", "bot-v2")
    wait_for("the deletion", lambda: not source.snapshot().invalid)
    controller.sync()
    stored = store.get("llm/bot-v2")
    assert stored is not None and stored.phase == "Aborted"
    assert routes.weight("llm/bot-v2") == 0


def test_watches_that_end_at_once_do_not_spin(
    kube: KubeApi, rollouts: Rollouts, source: KubernetesSource
) -> None:
    kube.server[kmock.action.WATCH] << b""  # every watch: 200, and the stream ends at once
    started(source)
    time.sleep(1.0)
    assert 2 <= len(kube.server.watches("modelrollouts")) <= 12, len(
        kube.server.watches("modelrollouts")
    )
