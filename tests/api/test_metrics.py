"""Recording through ControllerMetrics shows up in /metrics with the right values."""

from __future__ import annotations

import pytest

from controller.telemetry import ControllerMetrics, LeaseChange, TickOutcome
from tests.api.conftest import Running


def value(running: Running, name: str, **labels: str) -> float:
    return running.samples()[(name, tuple(sorted(labels.items())))]


def test_rollouts_by_phase_count_and_fall_to_zero(running: Running) -> None:
    m = running.metrics
    m.set_rollout_phases(["Progressing", "Progressing", "Shadowing", "Promoted"])
    assert value(running, "canary_rollouts", phase="Progressing") == 2
    assert value(running, "canary_rollouts", phase="Shadowing") == 1
    m.set_rollout_phases(["Promoted", "Promoted", "RolledBack"])
    assert value(running, "canary_rollouts", phase="Progressing") == 0
    assert value(running, "canary_rollouts", phase="Shadowing") == 0
    assert value(running, "canary_rollouts", phase="Promoted") == 2
    assert value(running, "canary_rollouts", phase="RolledBack") == 1


def test_ticks_count_by_outcome_and_fill_the_histogram(running: Running) -> None:
    m = running.metrics
    m.record_tick(0.03)
    m.record_tick(0.3, TickOutcome.SKIPPED)
    with m.time_tick():
        pass
    with pytest.raises(RuntimeError), m.time_tick():
        raise RuntimeError("boom")
    assert value(running, "canary_ticks_total", outcome="ok") == 2
    assert value(running, "canary_ticks_total", outcome="skipped") == 1
    assert value(running, "canary_ticks_total", outcome="error") == 1
    assert value(running, "canary_tick_duration_seconds_count") == 4
    assert value(running, "canary_tick_duration_seconds_bucket", le="0.025") == 2
    assert value(running, "canary_tick_duration_seconds_bucket", le="0.05") == 3
    assert value(running, "canary_tick_duration_seconds_bucket", le="+Inf") == 4
    assert 0.33 <= value(running, "canary_tick_duration_seconds_sum") < 0.5


def test_rollbacks_promotions_and_weights_are_per_rollout(running: Running) -> None:
    m = running.metrics
    m.record_rollback("llm", "bot-v7")
    m.record_rollback("llm", "bot-v7")
    m.record_promotion("search", "ranker-v2")
    m.set_candidate_weight("llm", "bot-v7", 5)
    assert value(running, "canary_rollbacks_total", rollout_namespace="llm", rollout="bot-v7") == 2
    assert (
        value(running, "canary_promotions_total", rollout_namespace="search", rollout="ranker-v2")
        == 1
    )
    key = (
        "canary_rollout_candidate_weight_percent",
        (("rollout", "bot-v7"), ("rollout_namespace", "llm")),
    )
    assert running.samples()[key] == 5
    m.forget_rollout("llm", "bot-v7")
    m.forget_rollout("llm", "bot-v7")  # forgetting twice is harmless
    assert key not in running.samples()
    # counters keep their history: a rollback stays counted after the rollout is gone
    assert value(running, "canary_rollbacks_total", rollout_namespace="llm", rollout="bot-v7") == 2


def test_verdicts_by_kind_and_metric(running: Running) -> None:
    m = running.metrics
    for verdict in ("pass", "pass", "fail", "inconclusive"):
        m.record_verdict(verdict, "refusal-rate")
    m.record_verdict("pass", "latency-p95")
    assert value(running, "canary_verdicts_total", verdict="pass", metric="refusal-rate") == 2
    assert value(running, "canary_verdicts_total", verdict="fail", metric="refusal-rate") == 1
    assert (
        value(running, "canary_verdicts_total", verdict="inconclusive", metric="refusal-rate") == 1
    )
    assert value(running, "canary_verdicts_total", verdict="pass", metric="latency-p95") == 1


def test_prometheus_queries_record_latency_and_errors_by_class(running: Running) -> None:
    m = running.metrics
    m.record_prometheus_query(0.004)
    m.record_prometheus_query(10.0, error="Timeout")
    with m.time_prometheus_query():
        pass
    with pytest.raises(ConnectionError), m.time_prometheus_query():
        raise ConnectionError("refused")
    assert value(running, "canary_prometheus_query_duration_seconds_count") == 4
    assert value(running, "canary_prometheus_query_duration_seconds_bucket", le="0.005") == 3
    assert value(running, "canary_prometheus_query_errors_total", error="Timeout") == 1
    assert value(running, "canary_prometheus_query_errors_total", error="ConnectionError") == 1


def test_route_retries_outbox_and_deliveries(running: Running) -> None:
    m = running.metrics
    m.record_route_write_retry("gateway-api", "conflict")
    m.record_route_write_retry("gateway-api", "conflict")
    m.record_route_write_retry("nginx-ingress", "unavailable")
    m.set_outbox_depth(7)
    m.set_outbox_depth(3)
    m.record_delivery_failure("slack")
    assert (
        value(running, "canary_route_write_retries_total", router="gateway-api", reason="conflict")
        == 2
    )
    assert (
        value(
            running,
            "canary_route_write_retries_total",
            router="nginx-ingress",
            reason="unavailable",
        )
        == 1
    )
    assert value(running, "canary_outbox_depth") == 3
    assert value(running, "canary_notification_delivery_failures_total", channel="slack") == 1


def test_lease_ownership(running: Running) -> None:
    m = running.metrics
    m.set_leases_held(4)
    m.record_lease_change(LeaseChange.ACQUIRED)
    m.record_lease_change(LeaseChange.LOST)
    m.record_lease_change(LeaseChange.RELEASED)
    m.record_lease_change(LeaseChange.RELEASED)
    m.set_leases_held(2)
    assert value(running, "canary_leases_held") == 2
    assert value(running, "canary_lease_changes_total", change="acquired") == 1
    assert value(running, "canary_lease_changes_total", change="lost") == 1
    assert value(running, "canary_lease_changes_total", change="released") == 2


def test_process_metrics_are_served_beside_ours(running: Running) -> None:
    names = {name for name, _ in running.samples()}
    assert "process_resident_memory_bytes" in names
    assert "python_info" in names


def test_instances_do_not_share_state() -> None:
    first, second = ControllerMetrics(), ControllerMetrics()
    first.record_rollback("llm", "bot")
    assert (
        first.registry.get_sample_value(
            "canary_rollbacks_total", {"rollout_namespace": "llm", "rollout": "bot"}
        )
        == 1
    )
    assert (
        second.registry.get_sample_value(
            "canary_rollbacks_total", {"rollout_namespace": "llm", "rollout": "bot"}
        )
        is None
    )
