"""End to end: `build()` with the Kubernetes source against kmock, as `canaryctl run` wires it.

The ModelRollouts come from the kmock API server through a kubeconfig; the
controller runs its scheduler, ticks them, and the status and Events appear on
the objects. Routes and metrics are in memory (the routers and the judge have
tests of their own).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import pytest

from controller.app import build, run
from controller.settings import Settings
from controller.store.sql import migrate
from tests.kube import KubeApi
from tests.runtime.modelrollouts import (  # noqa: F401  (fixtures)
    Rollouts,
    client_fixture,
    kube_fixture,
    rollout,
    rollouts_fixture,
    wait_for,
)
from tests.runtime.test_controller import Passing, Routes


def test_build_watches_modelrollouts_and_reports_on_them(
    kube: KubeApi, rollouts: Rollouts, tmp_path: Path
) -> None:
    database = f"sqlite:///{tmp_path / 'canary.db'}"
    migrate(database)
    bad = rollout("bad")
    bad["spec"]["steps"][-1]["weight"] = 90
    rollouts.create(bad)
    rollouts.create(rollout("bot-v2"))
    rollouts.create(rollout("elsewhere", namespace="other"))
    settings = Settings(
        database_url=database,
        source="kubernetes",
        kubeconfig=kube.write_kubeconfig(tmp_path / "kubeconfig"),
        namespace="llm",
        replica_id="replica-a",
        sync_seconds=0.2,
    )
    routes = Routes()
    wiring = build(settings, routes=routes, observer=Passing())
    try:
        assert wiring.kube_source is not None
        wiring.controller.start()
        wait_for("readiness", lambda: wiring.readiness.evaluate().ready, 10)
        wait_for(
            "the status",
            lambda: (
                (rollouts.stored("llm", "bot-v2") or {}).get("status", {}).get("phase")
                == "Progressing"
            ),
            10,
        )
    finally:
        wiring.controller.stop()
        if wiring.kube_source is not None:
            wiring.kube_source.stop()
        wiring.store.close()
        if wiring.api_client is not None:
            wiring.api_client.close()
    status = (rollouts.stored("llm", "bot-v2") or {})["status"]
    assert (status["step"], status["weight"], status["observedGeneration"]) == (1, 5, 1)
    assert routes.weight("llm/bot-v2") == 5
    events = rollouts.events()
    assert [
        (e["reason"], e["involvedObject"]["name"]) for e in events if e["type"] == "Normal"
    ] == [("Started", "bot-v2")]
    # the invalid one: a condition and a warning, no route, no tick
    conditions = {
        c["type"]: c for c in (rollouts.stored("llm", "bad") or {})["status"]["conditions"]
    }
    assert conditions["Valid"]["status"] == "False"
    assert "spec.steps[2].weight" in conditions["Valid"]["message"]
    assert [e["reason"] for e in events if e["involvedObject"]["name"] == "bad"] == ["InvalidSpec"]
    assert "llm/bad" not in routes.routers
    # another namespace is not watched
    assert "status" not in (rollouts.stored("other", "elsewhere") or {})


@pytest.mark.usefixtures("signals_restored")
def test_run_answers_sigterm_from_its_first_modelrollout_list(
    kube: KubeApi, tmp_path: Path
) -> None:
    """The watch lists ModelRollouts while the rest is still being built: a SIGTERM
    arriving then must already be handled (an orderly stop), not kill the process."""
    stop = threading.Event()
    seen: list[object] = []

    def on_first_list() -> None:
        wait_for("the first list", lambda: bool(kube.server.lists("modelrollouts")), 30)
        seen.append(signal.getsignal(signal.SIGTERM))
        stop.set()

    before = signal.getsignal(signal.SIGTERM)
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'canary.db'}",
        source="kubernetes",
        kubeconfig=kube.write_kubeconfig(tmp_path / "kubeconfig"),
        prometheus_url="http://127.0.0.1:9",
        replica_id="replica-a",
        api_host="127.0.0.1",
        api_port=0,
    )
    watcher = threading.Thread(target=on_first_list)
    watcher.start()
    try:
        run(settings, stop=stop)
    finally:
        stop.set()
        watcher.join(5)
    [handler] = seen
    assert callable(handler) and handler not in (before, signal.SIG_DFL)
