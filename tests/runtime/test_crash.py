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

import copy
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from controller.store.sql import SqlStore, migrate
from tests.databases import postgres_server_url  # noqa: F401  (fixture)
from tests.kube import KubeApi, without_server_metadata
from tests.metrics.servers import ContractExporter, ExporterServer, PrometheusServer
from tests.routing.cases import HTTP_ROUTE, HTTP_ROUTES

SEED = 20261122
KILLS = 50
NAMESPACE = "llm"
CANARYCTL = str(Path(sys.executable).with_name("canaryctl"))


def _policy(name: str, model: str) -> str:
    return f"""\
apiVersion: canary.ai/v1alpha1
kind: ModelRollout
metadata: {{name: {name}, namespace: {NAMESPACE}}}
spec:
  model: {model}
  baseline: {{version: v1, service: {name}-v1}}
  candidate: {{version: v2, service: {name}-v2}}
  traffic: {{router: gateway-api, route: {name}}}
  steps:
    - {{weight: 10, hold: 40s}}
    - {{weight: 50, hold: 40s}}
    - {{weight: 100, hold: 20s}}
  analysis:
    interval: 1s
    window: 1m
    confidence: 0.9
    minSamples: 50
    noData: {{action: hold, timeout: 10m, then: pause}}
    metrics:
      - {{template: refusal-rate, maxIncrease: 0.05}}
"""


def _route(name: str) -> dict[str, object]:
    route = copy.deepcopy(HTTP_ROUTE)
    route["metadata"]["name"] = name  # type: ignore[index]
    route["metadata"]["namespace"] = NAMESPACE  # type: ignore[index]
    route.pop("status")
    for rule in route["spec"]["rules"]:  # type: ignore[index]
        for ref in rule["backendRefs"]:
            if ref["name"] != "status-page":
                ref["name"] = f"{name}-v1"
    return route


class Traffic(threading.Thread):
    """Requests to both versions of both models; `bad-v2` refuses four times as often."""

    def __init__(self, exporter: ContractExporter) -> None:
        super().__init__(daemon=True)
        self.exporter = exporter
        self.stopping = threading.Event()

    def run(self) -> None:
        rates = {
            ("good", "v1"): 0.05,
            ("good", "v2"): 0.05,
            ("bad", "v1"): 0.05,
            ("bad", "v2"): 0.2,
        }
        while not self.stopping.wait(0.2):
            for (model, version), refusal in rates.items():
                labels = {"model": model, "version": version, "cohort": "all"}
                self.exporter.add_counter("llm_requests", 100, outcome="ok", **labels)
                self.exporter.add_counter("llm_refusals", 100 * refusal, **labels)


@pytest.fixture
def world(tmp_path: Path, postgres_server_url: str) -> Iterator[dict[str, object]]:  # noqa: F811
    migrate(postgres_server_url)
    exporter = ContractExporter()
    exporter_server = ExporterServer(exporter)
    traffic = Traffic(exporter)
    traffic.start()
    (tmp_path / "prom").mkdir()
    prometheus = PrometheusServer(tmp_path / "prom", exporter_server.port)
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "good.yaml").write_text(_policy("good", "good"))
    (policies / "bad.yaml").write_text(_policy("bad", "bad"))
    with KubeApi() as kube:
        kube.server.register(HTTP_ROUTES, "HTTPRoute")
        for name in ("good", "bad"):
            kube.server.put(HTTP_ROUTES, _route(name))
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "kmock", "cluster": {"server": kube.url}}],
                    "users": [{"name": "test", "user": {"token": "not-a-secret"}}],
                    "contexts": [
                        {"name": "kmock", "context": {"cluster": "kmock", "user": "test"}}
                    ],
                    "current-context": "kmock",
                }
            )
        )
        env = {
            **os.environ,
            "CANARY_SOURCE": "directory",
            "CANARY_POLICY_DIR": str(policies),
            "CANARY_DATABASE_URL": postgres_server_url,
            "CANARY_KUBECONFIG": str(kubeconfig),
            "CANARY_PROMETHEUS_URL": prometheus.url,
            "CANARY_REPLICA_ID": "crash-test",
            "CANARY_SYNC_SECONDS": "0.5",
            "CANARY_API_PORT": "0",
            "CANARY_API_HOST": "127.0.0.1",
        }
        try:
            yield {
                "env": env,
                "kube": kube,
                "url": postgres_server_url,
                "log": tmp_path / "run.log",
            }
        finally:
            traffic.stopping.set()
            prometheus.stop()
            exporter_server.close()


def _start(world: dict[str, object]) -> subprocess.Popen[bytes]:
    with Path(str(world["log"])).open("ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            [CANARYCTL, "run"],
            env=world["env"],  # type: ignore[arg-type]
            stdout=log,
            stderr=subprocess.STDOUT,
        )


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
        process = _start(world)
        time.sleep(rng.uniform(0.2, 2.5))
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        kills += 1
    assert kills == KILLS, f"only {kills} kills in the time budget"
    assert not _ended(store), "the rollout must still be running when the kills end"
    # one last life, to the end
    process = _start(world)
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
    expected_promoted = _route("good")
    for rule in expected_promoted["spec"]["rules"]:  # type: ignore[index]
        for ref in rule["backendRefs"]:
            ref["name"] = ref["name"].replace("good-v1", "good-v2")
    assert without_server_metadata(promoted) == without_server_metadata(expected_promoted)
    assert without_server_metadata(rolled_back) == without_server_metadata(_route("bad"))
    store.close()
