"""The simulated provider: seeded, faithful to its settings, read like Prometheus."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controller.analysis import Gauge, Histogram, Proportion, Verdict, judge
from controller.metrics import (
    BadQueryError,
    MetricsUnreachableError,
    NoSeriesError,
    QueryContext,
    collect,
)
from controller.metrics.simulated import (
    Behaviour,
    CohortTraffic,
    SimulatedProvider,
    TrafficSimulator,
)
from controller.policy import OVERALL, TEMPLATES, Analysis, MetricSpec

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def simulator(
    seed: int = 7, candidate: Behaviour | None = None, rps: float = 50.0
) -> TrafficSimulator:
    return TrafficSimulator(
        model="bot",
        baseline="v1",
        candidate="v2",
        cohorts=[
            CohortTraffic("mobile", 0.3, {"v2": candidate or Behaviour()}),
            CohortTraffic("other", 0.7),
        ],
        requests_per_second=rps,
        start=T0,
        seed=seed,
    )


def context(minutes: float, start_minutes: float = 0.0) -> QueryContext:
    return QueryContext(
        model="bot",
        namespace="llm",
        start=T0 + timedelta(minutes=start_minutes),
        end=T0 + timedelta(minutes=minutes),
        cohorts=("mobile",),
    )


def test_the_same_seed_gives_the_same_requests() -> None:
    spec = MetricSpec(template="latency-p95", max=2.0)
    answers = []
    for _ in range(2):
        sim = simulator(seed=3)
        sim.set_weights(20)
        sim.advance_to(T0 + timedelta(minutes=10))
        answers.append(SimulatedProvider(sim).fetch(spec, "v2", context(10)))
    assert answers[0] == answers[1]
    other = simulator(seed=4)
    other.set_weights(20)
    other.advance_to(T0 + timedelta(minutes=10))
    assert SimulatedProvider(other).fetch(spec, "v2", context(10)) != answers[0]


def test_weights_rates_and_cohort_shares_are_honoured() -> None:
    sim = simulator(candidate=Behaviour(refusal_rate=0.2))
    sim.set_weights(10, {"mobile": 50})
    sim.advance_to(T0 + timedelta(minutes=30))
    provider = SimulatedProvider(sim)
    spec = MetricSpec(template="refusal-rate", max=0.5)
    cand = provider.fetch(spec, "v2", context(30)).by_cohort
    base = provider.fetch(spec, "v1", context(30)).by_cohort
    total = 50 * 1800
    mobile_c, other_c = cand["mobile"], cand["other"]
    assert isinstance(mobile_c, Proportion) and isinstance(other_c, Proportion)
    assert mobile_c.trials == pytest.approx(0.3 * 0.5 * total, rel=0.05)
    assert other_c.trials == pytest.approx(0.7 * 0.1 * total, rel=0.05)
    assert mobile_c.rate == pytest.approx(0.2, abs=0.01)
    assert other_c.rate == pytest.approx(0.05, abs=0.01)
    assert base["mobile"].samples + mobile_c.trials == pytest.approx(0.3 * total, rel=0.05)


def test_counts_run_from_the_start_of_the_analysis() -> None:
    sim = simulator()
    sim.set_weights(50)
    sim.advance_to(T0 + timedelta(minutes=20))
    provider = SimulatedProvider(sim)
    spec = MetricSpec(template="error-rate", max=0.1)
    whole = provider.fetch(spec, "v2", context(20)).by_cohort["other"]
    first = provider.fetch(spec, "v2", context(10)).by_cohort["other"]
    second = provider.fetch(spec, "v2", context(20, start_minutes=10)).by_cohort["other"]
    assert isinstance(first, Proportion) and isinstance(second, Proportion)
    assert first + second == whole


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_every_template_is_simulated(template: str) -> None:
    sim = simulator()
    sim.set_weights(50)
    sim.advance_to(T0 + timedelta(minutes=5))
    spec = MetricSpec(template=template, max=1.0 if TEMPLATES[template].bounded else 1e9)
    sample = SimulatedProvider(sim).fetch(spec, "v2", context(5)).by_cohort["mobile"]
    kind = {"proportion": Proportion, "histogram": Histogram, "gauge": Gauge}[
        TEMPLATES[template].kind
    ]
    assert isinstance(sample, kind)
    assert sample.samples is not None and sample.samples > 1000


def test_failures_are_typed() -> None:
    sim = simulator()
    provider = SimulatedProvider(sim)
    with pytest.raises(NoSeriesError):
        provider.fetch(MetricSpec(template="error-rate", max=0.1), "v9", context(1))
    custom = MetricSpec(name="c", kind="gauge", query='x{v="{{version}}"}', max=1.0)
    with pytest.raises(BadQueryError):
        provider.fetch(custom, "v1", context(1))
    provider.down = True
    with pytest.raises(MetricsUnreachableError):
        provider.fetch(MetricSpec(template="error-rate", max=0.1), "v1", context(1))


def test_shares_must_add_up() -> None:
    with pytest.raises(ValueError, match="add up to 1"):
        TrafficSimulator(
            model="m",
            baseline="a",
            candidate="b",
            cohorts=[CohortTraffic("x", 0.5)],
            requests_per_second=1,
            start=T0,
        )


def test_a_rollout_against_the_simulator_catches_a_cohort_regression() -> None:
    """End to end: simulator -> collect -> judge, one look every 30 s."""
    sim = simulator(seed=11, candidate=Behaviour(refusal_rate=0.15), rps=40)
    provider = SimulatedProvider(sim)
    policy = Analysis(
        metrics=[
            MetricSpec(template="refusal-rate", maxIncrease=0.02),
            MetricSpec(template="error-rate", max=0.01),
        ]
    )
    sim.set_weights(20)
    verdict = Verdict.INCONCLUSIVE
    for look in range(1, 121):
        now = T0 + timedelta(seconds=30 * look)
        sim.advance_to(now)
        observations = collect(
            provider, policy.metrics, baseline="v1", candidate="v2", context=context(look / 2)
        )
        result = judge(policy, ["mobile"], observations, at=now)
        verdict = result.verdict
        if verdict is Verdict.FAIL:
            break
    assert verdict is Verdict.FAIL
    failed = {(c.metric, c.cohort) for c in result.failures}
    assert ("refusal-rate", "mobile") in failed
    assert result.cell("refusal-rate", OVERALL).verdict is not Verdict.PASS
