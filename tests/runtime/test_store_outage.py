"""A bad candidate is rolled back with the database stopped or black-holed, and the
rollback is recorded exactly once when the database is back.

Real processes throughout: `canaryctl run` as a subprocess, a Postgres cluster of
the test's own (stopped with `pg_ctl stop -m immediate`) behind a TCP proxy that
can black-hole it, a real Prometheus scraping an exporter this test drives, the
Gateway API router on the kmock API server, and Slack as a local fake server.

The rollout sits on its first step (10 % to the candidate) with the candidate as
good as the baseline. The database goes away; then the candidate starts refusing
90 % of requests. A probe in the test judges the same Prometheus data the way the
controller does, to learn when the failure became visible (the metrics are read
at 15-second boundaries, so that moment is not when the traffic changed). The
route must be back on the baseline within 2 × interval + the restore time of it.
Once the database is back, the audit must hold the rollback exactly once: one
transition, one route restore, one outbox message, one Slack message.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from controller.analysis.verdicts import Verdict
from controller.engine.state import RolloutState
from controller.metrics.prometheus import PrometheusProvider
from controller.policy import load_text
from controller.runtime.observer import JudgingObserver
from controller.store.sql import SqlStore, migrate
from tests.kube import KubeApi
from tests.metrics.servers import (
    LOOPBACK,
    ContractExporter,
    ExporterServer,
    PrometheusServer,
    free_port,
)
from tests.notify import fake_slack
from tests.notify.fake_slack import TOKEN, FakeSlack
from tests.outage import BlackHoleProxy, PostgresCluster
from tests.routing.cases import HTTP_ROUTES
from tests.runtime.live import CANARYCTL, NAMESPACE, route

pytestmark = pytest.mark.long(seconds=30)

NAME = "outage"
KEY = f"{NAMESPACE}/{NAME}"
INTERVAL = 1.0
#: a restore is one read and one patch of the HTTPRoute on kmock (tens of ms); allowance
RESTORE_SECONDS = 0.5
BOUND = 2 * INTERVAL + RESTORE_SECONDS

POLICY = f"""\
apiVersion: canary.ai/v1alpha1
kind: ModelRollout
metadata: {{name: {NAME}, namespace: {NAMESPACE}}}
spec:
  model: {NAME}
  baseline: {{version: v1, service: {NAME}-v1}}
  candidate: {{version: v2, service: {NAME}-v2}}
  owners: {{slack: {{channel: "#bot"}}}}
  traffic: {{router: gateway-api, route: {NAME}}}
  steps:
    - {{weight: 10, hold: 30m}}
    - {{weight: 100}}
  analysis:
    interval: 1s
    window: 1m
    confidence: 0.9
    minSamples: 50
    noData: {{action: hold, timeout: 30m, then: pause}}
    metrics:
      - {{template: refusal-rate, maxIncrease: 0.05}}
"""


class Traffic(threading.Thread):
    """Requests to both versions; the candidate refuses `candidate_refusals` of them."""

    def __init__(self, exporter: ContractExporter) -> None:
        super().__init__(daemon=True)
        self.exporter = exporter
        self.candidate_refusals = 0.05
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.2):
            for version, refusals in (("v1", 0.05), ("v2", self.candidate_refusals)):
                labels = {"model": NAME, "version": version, "cohort": "all"}
                self.exporter.add_counter("llm_requests", 100, outcome="ok", **labels)
                self.exporter.add_counter("llm_refusals", 100 * refusals, **labels)


@dataclass
class World:
    cluster: PostgresCluster
    proxy: BlackHoleProxy
    kube: KubeApi
    slack: FakeSlack
    traffic: Traffic
    prometheus: PrometheusServer
    env: dict[str, str]
    log: Path
    api: str

    def weight(self) -> int:
        """The candidate's share on the route, as the API server has it."""
        found = self.kube.server.get(HTTP_ROUTES, NAMESPACE, NAME)
        assert found is not None
        shares = [0]
        for rule in found["spec"]["rules"]:
            weights = {ref["name"]: int(ref.get("weight", 1)) for ref in rule["backendRefs"]}
            if f"{NAME}-v2" in weights:
                shares.append(round(100 * weights[f"{NAME}-v2"] / sum(weights.values())))
        return max(shares)

    def store(self) -> SqlStore:
        """The database itself, not through the proxy."""
        return SqlStore(self.cluster.url)

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        with urllib.request.urlopen(f"{self.api}/metrics", timeout=5) as answer:
            text = answer.read().decode()
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    cluster = PostgresCluster()
    proxy = BlackHoleProxy(cluster.port)
    migrate(cluster.url)
    exporter = ContractExporter()
    exporter_server = ExporterServer(exporter)
    traffic = Traffic(exporter)
    traffic.start()
    (tmp_path / "prom").mkdir()
    prometheus = PrometheusServer(tmp_path / "prom", exporter_server.port)
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / f"{NAME}.yaml").write_text(POLICY)
    port = free_port()
    try:
        with (
            KubeApi() as kube,
            fake_slack.running(FakeSlack(channels={"bot": "C0BOT0001"})) as slack,
        ):
            kube.server.register(HTTP_ROUTES, "HTTPRoute")
            kube.server.put(HTTP_ROUTES, route(NAME))
            kubeconfig = tmp_path / "kubeconfig"
            kube.write_kubeconfig(kubeconfig)
            env = {
                **os.environ,
                "CANARY_SOURCE": "directory",
                "CANARY_POLICY_DIR": str(policies),
                "CANARY_DATABASE_URL": (
                    f"postgresql+psycopg://postgres@{LOOPBACK}:{proxy.port}/postgres"
                ),
                "CANARY_DATABASE_CONNECT_TIMEOUT_SECONDS": "2",
                "CANARY_DATABASE_STATEMENT_TIMEOUT_SECONDS": "0.5",
                "CANARY_DATABASE_POOL_TIMEOUT_SECONDS": "1",
                "CANARY_DATABASE_KEEPALIVE_SECONDS": "2",
                "CANARY_TICK_STORE_WAIT_SECONDS": "0.3",
                "CANARY_KUBECONFIG": str(kubeconfig),
                "CANARY_PROMETHEUS_URL": prometheus.url,
                "CANARY_PROMETHEUS_TIMEOUT_SECONDS": "2",
                "CANARY_SLACK_TOKEN": TOKEN,
                "CANARY_SLACK_BASE_URL": slack.base_url,
                "CANARY_REPLICA_ID": "outage-test",
                "CANARY_SYNC_SECONDS": "1",
                "CANARY_API_PORT": str(port),
                "CANARY_API_HOST": LOOPBACK,
            }
            yield World(
                cluster,
                proxy,
                kube,
                slack,
                traffic,
                prometheus,
                env,
                tmp_path / "run.log",
                f"http://{LOOPBACK}:{port}",
            )
    finally:
        traffic.stopping.set()
        prometheus.stop()
        exporter_server.close()
        proxy.close()
        cluster.close()


def _wait(what: str, condition: object, seconds: float, log: Path) -> float:
    """Poll `condition()` every 20 ms until it is true; returns when (monotonic)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if condition():  # type: ignore[operator]
                return time.monotonic()
        except Exception:  # the database is starting, the route is being written...
            pass
        time.sleep(0.02)
    raise AssertionError(f"{what} did not happen in {seconds} s; log:\n{log.read_text()[-4000:]}")


class Probe(threading.Thread):
    """Judges the candidate as the controller does, and notes when it first fails."""

    def __init__(self, world: World, state: RolloutState) -> None:
        super().__init__(daemon=True)
        self.rollout = load_text(POLICY)[0].rollout
        self.state = state
        self.observer = JudgingObserver(PrometheusProvider(world.prometheus.url, timeout_seconds=2))
        self.failed_at: float | None = None
        self.stopping = threading.Event()

    def run(self) -> None:
        while self.failed_at is None and not self.stopping.wait(0.05):
            look = self.observer.observe(self.rollout, self.state, datetime.now(UTC)).look
            if any(c.verdict is Verdict.FAIL for c in look.cells):
                self.failed_at = time.monotonic()


def _value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.mark.parametrize("outage", ["stopped", "black-holed"])
def test_a_bad_candidate_is_rolled_back_without_the_database_and_recorded_once(
    world: World, outage: str
) -> None:
    with world.log.open("ab") as log:
        process = subprocess.Popen(
            [CANARYCTL, "run"], env=world.env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        _run(world, outage, process)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
    assert process.returncode == 0, world.log.read_text()[-4000:]
    _check_audit(world)


def _run(world: World, outage: str, process: subprocess.Popen[bytes]) -> None:
    _wait("the first step", lambda: world.weight() == 10, 60, world.log)
    store = world.store()
    try:
        # a few committed ticks: the controller knows the rollout's state
        _wait("three ticks", lambda: store.get(KEY).state["tick"] >= 3, 30, world.log)  # type: ignore[union-attr]
        stored = store.get(KEY)
        assert stored is not None and stored.phase == "Progressing"
        # The messages so far ("started", maybe "holding") are delivered and recorded:
        # an outage in the middle of a delivery would hold the rollout's next message
        # until the delivery's claim runs out (the notification worker's rule).
        _wait(
            "the messages so far delivered",
            lambda: {m.status for m in store.outbox(KEY)} == {"sent"},
            30,
            world.log,
        )
    finally:
        store.close()
    before = world.metrics()
    if outage == "stopped":
        world.cluster.stop()
    else:
        world.proxy.black_hole()
    probe = Probe(world, RolloutState.from_json(stored.state))
    probe.start()
    world.traffic.candidate_refusals = 0.9
    bad_at = time.monotonic()
    restored_at = _wait(
        "the route back on the baseline", lambda: world.weight() == 0, 60, world.log
    )
    probe.join(10)
    assert probe.failed_at is not None, "the probe never saw the candidate fail"
    delay = restored_at - probe.failed_at
    print(
        f"\n{outage}: route back on the baseline {delay:.2f} s after the failure was visible"
        f" ({restored_at - bad_at:.1f} s after the candidate went bad)"
    )
    assert delay <= BOUND, f"{delay:.2f} s > {BOUND} s"
    time.sleep(3 * INTERVAL)  # more ticks without the database: none may repeat anything
    during = world.metrics()
    assert _value(during, "canary_store_pending_writes") == 1
    assert _value(during, "canary_store_down_endings_total", phase="RolledBack") == 1
    errors = _value(during, "canary_ticks_total", outcome="error") - _value(
        before, "canary_ticks_total", outcome="error"
    )
    assert errors >= 3
    assert _value(during, "canary_ticks_total", outcome="skipped") == _value(
        before, "canary_ticks_total", outcome="skipped"
    )
    assert world.weight() == 0
    if outage == "stopped":
        world.cluster.start()
    else:
        world.proxy.restore()
    store = world.store()
    try:
        _wait("the rollback recorded", lambda: store.get(KEY).phase == "RolledBack", 30, world.log)  # type: ignore[union-attr]
    finally:
        store.close()
    _wait(
        "the Slack message",
        lambda: any(_event(m) == "rolled-back" for m in world.slack.posted()),
        30,
        world.log,
    )
    time.sleep(2 * INTERVAL)  # and ticks after it repeat nothing
    assert _value(world.metrics(), "canary_store_pending_writes") == 0
    assert process.poll() is None


def _event(message: dict[str, object]) -> object:
    metadata = message.get("metadata") or {}
    return metadata.get("event_payload", {}).get("event")  # type: ignore[union-attr]


def _check_audit(world: World) -> None:
    store = world.store()
    try:
        transitions = store.transitions(KEY)
        assert [t.to_phase for t in transitions] == ["Progressing", "RolledBack"]
        assert "decidedWithoutStore" in transitions[-1].details
        restores = [a for a in store.route_actions(KEY) if a.action == "restore"]
        assert len(restores) == 1 and restores[0].changed
        events = [m.event for m in store.outbox(KEY)]
        assert events.count("rolled-back") == 1
    finally:
        store.close()
    assert [_event(m) for m in world.slack.posted()].count("rolled-back") == 1
    log = world.log.read_text()
    assert "Traceback" not in log, log[-4000:]
