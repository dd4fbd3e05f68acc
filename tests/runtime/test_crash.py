"""Crash safety, tested: SIGKILL the controller at random moments, restart it, repeat.

The controller runs as a real subprocess (`canaryctl run`) against real Postgres,
the Gateway API router talking HTTP to the kmock API server, and a real
Prometheus scraping an exporter this test drives. Two rollouts run at once: a
healthy one that must be promoted and a regressed one that must be rolled back.
However often the process dies (before its first tick, mid-tick, between a route
write and its commit), each rollout ends in the right phase, with exactly one
transition row per transition, no step skipped or repeated, no committed tick
without its analyses, each notification queued once, and the route equal to the
recorded state.
"""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import pytest

from controller.store.sql import SqlStore
from tests.kube import KubeApi, without_server_metadata
from tests.routing.cases import HTTP_ROUTES
from tests.runtime.live import NAMESPACE, route, start

pytestmark = pytest.mark.long(seconds=175)

SEED = 20261122
KILLS = 50


def _ended(store: SqlStore) -> bool:
    rows = {r.key: r.phase for r in store.rollouts()}
    return rows.get(f"{NAMESPACE}/good") == "Promoted" and rows.get(f"{NAMESPACE}/bad") in (
        "RolledBack",
    )


def test_sigkill_at_random_moments_loses_and_repeats_nothing(world: dict[str, object]) -> None:
    rng = random.Random(SEED)
    store = SqlStore(str(world["url"]))
    kills = 0
    deadline = time.monotonic() + 240
    while kills < KILLS and time.monotonic() < deadline:
        process = start(world)
        time.sleep(rng.uniform(0.2, 2.5))
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        kills += 1
    assert kills == KILLS, f"only {kills} kills in the time budget"
    assert not _ended(store), "the rollout must still be running when the kills end"
    # one last life, to the end
    process = start(world)
    try:
        while not _ended(store) and time.monotonic() < deadline + 120:
            time.sleep(0.5)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0, Path(str(world["log"])).read_text()[-3000:]
    assert _ended(store), {r.key: (r.phase, r.step) for r in store.rollouts()}

    good, bad = f"{NAMESPACE}/good", f"{NAMESPACE}/bad"
    assert [(t.to_phase, t.to_step) for t in store.transitions(good)] == [
        ("Progressing", 0),
        ("Progressing", 1),
        ("Progressing", 2),
        ("Promoted", 2),
    ]
    bad_transitions = [(t.to_phase, t.to_step) for t in store.transitions(bad)]
    assert bad_transitions[0] == ("Progressing", 0)
    assert bad_transitions[-1][0] == "RolledBack"
    assert len(bad_transitions) == len(set(bad_transitions))  # nothing repeated

    for key, ending in ((good, "promoted"), (bad, "rolled-back")):
        events = [m.event for m in store.outbox(key)]
        assert events.count("started") == 1
        assert events.count(ending) == 1
        assert len(events) == len({m.dedupe_key for m in store.outbox(key)})
        # every committed tick that looked at metrics has its analyses: none lost
        stored = store.get(key)
        assert stored is not None
        looked = {a.tick for a in store.analyses(key)}
        assert looked == set(range(2, max(looked) + 1))

    kube: KubeApi = world["kube"]  # type: ignore[assignment]
    promoted = kube.server.get(HTTP_ROUTES, NAMESPACE, "good")
    rolled_back = kube.server.get(HTTP_ROUTES, NAMESPACE, "bad")
    assert promoted is not None and rolled_back is not None
    expected_promoted = route("good")
    for rule in expected_promoted["spec"]["rules"]:  # type: ignore[index]
        for ref in rule["backendRefs"]:
            ref["name"] = ref["name"].replace("good-v1", "good-v2")
    assert without_server_metadata(promoted) == without_server_metadata(expected_promoted)
    assert without_server_metadata(rolled_back) == without_server_metadata(route("bad"))
    store.close()
