"""CANARY_CUSTOM_QUERIES=deny in the controller: a rollout with a custom query never moves."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import pytest

from controller.metrics.prometheus import PrometheusProvider
from controller.policy.queries import CustomQueries
from controller.runtime.admission import QueryAdmission
from controller.runtime.controller import Controller
from controller.runtime.observer import JudgingObserver
from controller.runtime.sources import DirectorySource
from controller.settings import Settings
from controller.store.memory import MemoryStore
from tests.kube import KubeApi
from tests.policy.base import BASE, policy
from tests.runtime.modelrollouts import (  # noqa: F401  (fixtures)
    Rollouts,
    client_fixture,
    kube_fixture,
    rollout,
    rollouts_fixture,
    wait_for,
)
from tests.runtime.test_controller import KEY, Clock, Passing, Routes

CUSTOM = policy(
    (
        "{template: error-rate, max: 0.01}",
        "{name: peek, kind: gauge, query: 'sum(x{version=\"{{version}}\"})', max: 1}",
    )
)


def _controller(
    source: QueryAdmission, store: MemoryStore, clock: Clock, routes: Routes
) -> Controller:
    return Controller(
        store=store,
        source=source,
        routes=routes,
        observer=Passing(),
        clock=clock,
        replica="a",
        lease_ttl=timedelta(seconds=15),
    )


def test_deny_never_starts_a_rollout_with_a_custom_query(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "bot.yaml").write_text(CUSTOM)
    store, clock, routes = MemoryStore(), Clock(), Routes()
    source = QueryAdmission(DirectorySource(tmp_path), CustomQueries.DENY)
    controller = _controller(source, store, clock, routes)
    with caplog.at_level(logging.ERROR, logger="controller.runtime.admission"):
        for _ in range(3):
            controller.sync()
            controller.tick(KEY)
            clock.at += timedelta(seconds=5)
    assert store.get(KEY) is None  # never started: no state, no audit
    assert routes.routers == {}  # no route was touched
    snapshot = source.snapshot()
    assert KEY in snapshot.invalid
    [problem] = [p for p in snapshot.problems if "custom queries are turned off" in p.message]
    assert problem.path == "spec.analysis.metrics[1].query"
    # said once, not at every sync
    assert sum("custom queries are turned off" in r.getMessage() for r in caplog.records) == 1


def test_a_rollout_under_way_never_advances_when_deny_is_switched_on(tmp_path: Path) -> None:
    """Refused like any invalid spec: ticked on its last committed policy in hold mode,
    so it never advances and is not ended (a failing look still rolls it back; the
    Prometheus provider refuses to run the denied query, which reads as no data)."""
    (tmp_path / "bot.yaml").write_text(CUSTOM)
    store, clock, routes = MemoryStore(), Clock(), Routes()
    running = _controller(
        QueryAdmission(DirectorySource(tmp_path), CustomQueries.SCOPED), store, clock, routes
    )
    running.sync()
    running.tick(KEY)
    assert routes.weight(KEY) == 5
    denied = _controller(
        QueryAdmission(DirectorySource(tmp_path), CustomQueries.DENY), store, clock, routes
    )
    for _ in range(40):  # 20 minutes of passing looks: past the first step's 10m hold
        clock.at += timedelta(seconds=30)
        denied.sync()
        denied.tick(KEY)
    stored = store.get(KEY)
    assert stored is not None and (stored.phase, stored.step) == ("Progressing", 0)
    assert routes.weight(KEY) == 5


@pytest.mark.parametrize("mode", [CustomQueries.SCOPED, CustomQueries.ALLOW])
def test_other_modes_pass_every_rollout_through(tmp_path: Path, mode: CustomQueries) -> None:
    (tmp_path / "bot.yaml").write_text(CUSTOM)
    snapshot = QueryAdmission(DirectorySource(tmp_path), mode).snapshot()
    assert list(snapshot.rollouts) == [KEY]
    assert snapshot.invalid == frozenset()


def test_templates_pass_deny(tmp_path: Path) -> None:
    (tmp_path / "bot.yaml").write_text(BASE)
    snapshot = QueryAdmission(DirectorySource(tmp_path), CustomQueries.DENY).snapshot()
    assert list(snapshot.rollouts) == [KEY]


def test_the_settings_default_is_scoped_on_the_namespace_label() -> None:
    settings = Settings()
    assert settings.custom_queries is CustomQueries.SCOPED
    assert settings.tenant_label == "namespace"


def test_the_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANARY_CUSTOM_QUERIES", "deny")
    monkeypatch.setenv("CANARY_TENANT_LABEL", "kubernetes_namespace")
    settings = Settings()
    assert settings.custom_queries is CustomQueries.DENY
    assert settings.tenant_label == "kubernetes_namespace"
    monkeypatch.setenv("CANARY_TENANT_LABEL", "not-a-label")
    with pytest.raises(ValueError, match="tenant_label"):
        Settings()


def test_the_composition_root_puts_the_rule_in_front_of_every_source(tmp_path: Path) -> None:
    from controller.app import build
    from controller.store.sql import migrate

    database = f"sqlite:///{tmp_path / 'canary.db'}"
    migrate(database)
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "bot.yaml").write_text(CUSTOM)
    settings = Settings(database_url=database, source="directory", custom_queries="deny")
    wiring = build(
        settings, source=DirectorySource(tmp_path / "policies"), routes=Routes(), observer=Passing()
    )
    try:
        source = wiring.controller.source
        assert isinstance(source, QueryAdmission)
        assert source.custom_queries is CustomQueries.DENY
        assert KEY in source.snapshot().invalid
    finally:
        wiring.store.close()


def test_a_modelrollout_refused_by_deny_says_why_on_its_status(
    kube: KubeApi, rollouts: Rollouts, tmp_path: Path
) -> None:
    from controller.app import build
    from controller.store.sql import migrate

    database = f"sqlite:///{tmp_path / 'canary.db'}"
    migrate(database)
    refused = rollout("peek")
    refused["spec"]["analysis"]["metrics"].append(
        {"name": "peek", "kind": "gauge", "query": 'sum(x{version="{{version}}"})', "max": 1}
    )
    rollouts.create(refused)
    settings = Settings(
        database_url=database,
        source="kubernetes",
        kubeconfig=kube.write_kubeconfig(tmp_path / "kubeconfig"),
        namespace="llm",
        replica_id="replica-a",
        sync_seconds=0.2,
        custom_queries="deny",
    )
    routes = Routes()
    wiring = build(settings, routes=routes, observer=Passing())
    try:
        wiring.controller.start()
        wait_for(
            "the Valid condition",
            lambda: any(
                c["type"] == "Valid"
                for c in (rollouts.stored("llm", "peek") or {})
                .get("status", {})
                .get("conditions", [])
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
    conditions = {
        c["type"]: c for c in (rollouts.stored("llm", "peek") or {})["status"]["conditions"]
    }
    assert conditions["Valid"]["status"] == "False"
    assert "spec.analysis.metrics[2].query" in conditions["Valid"]["message"]
    assert "custom queries are turned off" in conditions["Valid"]["message"]
    assert "llm/peek" not in routes.routers  # nothing moved


def test_a_denied_query_is_never_run_and_no_data_can_still_roll_back(tmp_path: Path) -> None:
    """Under deny, the rollout ticks on its last committed policy, whose custom query
    the Prometheus provider refuses to send: the look is NO_DATA, and the policy's
    `noData: rollback` (a move toward the baseline) is carried out."""
    only_custom = policy(
        ("      - {template: refusal-rate, maxIncrease: 0.02}\n", ""),
        (
            "{template: error-rate, max: 0.01}",
            "{name: peek, kind: gauge, query: 'sum(x{version=\"{{version}}\"})', max: 1}\n"
            "    noData: {action: rollback, timeout: 10m, then: rollback}",
        ),
    )
    (tmp_path / "bot.yaml").write_text(only_custom)
    store, clock, routes = MemoryStore(), Clock(), Routes()
    running = _controller(
        QueryAdmission(DirectorySource(tmp_path), CustomQueries.SCOPED), store, clock, routes
    )
    running.sync()
    running.tick(KEY)  # the first tick starts the rollout without a look
    assert routes.weight(KEY) == 5
    sent: list[str | None] = []
    provider = PrometheusProvider(  # a closed port: any query sent would be counted
        "http://127.0.0.1:9",
        custom_queries=CustomQueries.DENY,
        on_query=lambda seconds, error: sent.append(error),
    )
    denied = Controller(
        store=store,
        source=QueryAdmission(DirectorySource(tmp_path), CustomQueries.DENY),
        routes=routes,
        observer=JudgingObserver(provider),
        clock=clock,
        replica="a",
        lease_ttl=timedelta(seconds=15),
    )
    clock.at += timedelta(seconds=30)
    denied.sync()
    denied.tick(KEY)
    assert sent == []  # the denied query never ran
    stored = store.get(KEY)
    assert stored is not None and stored.phase == "RolledBack"
    assert routes.weight(KEY) == 0
    last = store.transitions(KEY)[-1]
    assert last.cause == "NoData" and "latest policy is invalid" in last.reason, last
