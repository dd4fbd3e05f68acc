"""A live world for `canaryctl run` as a subprocess: real Postgres, Prometheus, kmock.

Two rollouts, `good` and `bad` (whose v2 refuses four times as often), on the
Gateway API router against the kmock API server, with a real Prometheus scraping
an exporter fed by a `Traffic` thread. Used by the crash test and the test of
the running controller's endpoints.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.store.sql import migrate
from tests.databases import postgres_test_url  # noqa: F401  (fixture)
from tests.kube import KubeApi
from tests.metrics.servers import ContractExporter, ExporterServer, PrometheusServer
from tests.routing.cases import HTTP_ROUTE, HTTP_ROUTES

NAMESPACE = "llm"
CANARYCTL = str(Path(sys.executable).with_name("canaryctl"))


def policy(name: str, model: str) -> str:
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


def route(name: str) -> dict[str, object]:
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
def world(tmp_path: Path, postgres_test_url: str) -> Iterator[dict[str, object]]:  # noqa: F811
    migrate(postgres_test_url)
    exporter = ContractExporter()
    exporter_server = ExporterServer(exporter)
    traffic = Traffic(exporter)
    traffic.start()
    (tmp_path / "prom").mkdir()
    prometheus = PrometheusServer(tmp_path / "prom", exporter_server.port)
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "good.yaml").write_text(policy("good", "good"))
    (policies / "bad.yaml").write_text(policy("bad", "bad"))
    with KubeApi() as kube:
        kube.server.register(HTTP_ROUTES, "HTTPRoute")
        for name in ("good", "bad"):
            kube.server.put(HTTP_ROUTES, route(name))
        kubeconfig = tmp_path / "kubeconfig"
        kube.write_kubeconfig(kubeconfig)
        env = {
            **os.environ,
            "CANARY_SOURCE": "directory",
            "CANARY_POLICY_DIR": str(policies),
            "CANARY_DATABASE_URL": postgres_test_url,
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
                "url": postgres_test_url,
                "log": tmp_path / "run.log",
                "exporter": exporter,
            }
        finally:
            traffic.stopping.set()
            prometheus.stop()
            exporter_server.close()


def start(world: dict[str, object]) -> subprocess.Popen[bytes]:
    with Path(str(world["log"])).open("ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            [CANARYCTL, "run"],
            env=world["env"],  # type: ignore[arg-type]
            stdout=log,
            stderr=subprocess.STDOUT,
        )
