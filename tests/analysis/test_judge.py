"""The judge, as tables: one row per situation a platform engineer will meet."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from controller.analysis import (
    FailureKind,
    Histogram,
    Limit,
    MeasurementFailure,
    Method,
    MetricObservation,
    NoDataReason,
    Sample,
    Verdict,
    VersionData,
    judge,
    worst,
)
from controller.analysis.judge import alpha_per_test, count_tests, plan_metric
from controller.policy import OVERALL, MetricKind
from tests.analysis.cases import AT, analysis, gauge, latency, metric, observation, p, run, scores

ERROR_MAX = metric(template="error-rate", max=0.01)
REFUSAL_INCREASE = metric(template="refusal-rate", maxIncrease=0.02)
REFUSAL_RATIO = metric(template="refusal-rate", maxRatio=1.5)
SUCCESS = metric(
    name="task-success",
    kind="proportion",
    query='sum by (cohort) (increase(ok_total{version="{{version}}"}[{{window}}]))',
    trials='sum by (cohort) (increase(all_total{version="{{version}}"}[{{window}}]))',
    min=0.9,
    maxDecrease=0.02,
)
QUALITY_DROP = metric(template="quality-score", maxDecrease=0.03)
QUALITY_MIN = metric(template="quality-score", min=0.75)
QUALITY_SHARE = metric(template="quality-score", threshold=0.5, max=0.1)
P95_MAX = metric(template="latency-p95", max="2.5s")
P95_MAX_BETWEEN = metric(template="latency-p95", max=2.2)
P95_MAX_TOO_HIGH = metric(template="latency-p95", max=6.0)
P95_RATIO = metric(template="latency-p95", maxRatio=1.25)
P95_INCREASE = metric(template="latency-p95", maxIncrease="500ms")
P95_MIN = metric(template="latency-p95", min=0.5)
TOKENS_MAX = metric(template="tokens-per-request", max=300)
TOKENS_RATIO = metric(template="tokens-per-request", maxRatio=1.2)
CACHE_MIN = metric(name="cache-hit", kind="gauge", query='avg(hit{version="{{version}}"})', min=0.5)

BASE_REFUSALS = {"all": p(500, 10_000)}
BASE_SUCCESS = {"all": p(9_500, 10_000)}
BASE_SCORES = {"all": scores(20_000, 8, 2)}
BASE_LATENCY = {"all": latency(20_000, 1.0)}


def one(sample: Sample) -> dict[str, Sample]:
    return {"all": sample}


CASES = [
    # --- a proportion against an absolute limit (exact test) ---
    pytest.param(
        ERROR_MAX, {}, one(p(10, 10_000)), Verdict.PASS, Limit.MAX, id="error-clearly-within"
    ),
    pytest.param(
        ERROR_MAX, {}, one(p(300, 10_000)), Verdict.FAIL, Limit.MAX, id="error-clearly-above"
    ),
    pytest.param(
        # 0.95 % against max 1 % with no baseline: tolerance 0.5 %, so a candidate
        # this close to the limit is harm the judge must catch
        ERROR_MAX,
        {},
        one(p(95, 10_000)),
        Verdict.FAIL,
        Limit.MAX,
        id="error-near-the-limit",
    ),
    pytest.param(
        ERROR_MAX, {}, one(p(0, 150)), Verdict.INCONCLUSIVE, None, id="below-min-samples-never-pass"
    ),
    pytest.param(
        ERROR_MAX, {}, one(p(15, 25)), Verdict.FAIL, Limit.BREAKER, id="breaker-gross-errors"
    ),
    pytest.param(
        ERROR_MAX, {}, one(p(12, 19)), Verdict.INCONCLUSIVE, None, id="breaker-needs-20-requests"
    ),
    pytest.param(
        ERROR_MAX, {}, one(p(1, 25)), Verdict.INCONCLUSIVE, None, id="breaker-ignores-non-gross"
    ),
    pytest.param(
        ERROR_MAX,
        {},
        one(p(4, 25)),
        Verdict.FAIL,
        Limit.BREAKER,
        id="breaker-five-times-the-allowed-share-is-gross",
    ),
    # --- relative limits on a proportion (normal mixture) ---
    pytest.param(
        REFUSAL_INCREASE,
        BASE_REFUSALS,
        one(p(500, 10_000)),
        Verdict.PASS,
        Limit.MAX_INCREASE,
        id="refusals-unchanged",
    ),
    pytest.param(
        REFUSAL_INCREASE,
        BASE_REFUSALS,
        one(p(1_000, 10_000)),
        Verdict.FAIL,
        Limit.MAX_INCREASE,
        id="refusals-up-5-points",
    ),
    pytest.param(
        REFUSAL_INCREASE,
        BASE_REFUSALS,
        one(p(700, 10_000)),
        Verdict.FAIL,
        Limit.MAX_INCREASE,
        id="refusals-up-exactly-the-limit-is-caught",
    ),
    pytest.param(
        REFUSAL_INCREASE,
        {"all": p(5, 100)},
        one(p(50, 1_000)),
        Verdict.INCONCLUSIVE,
        Limit.MAX_INCREASE,
        id="baseline-too-small-to-compare",
    ),
    pytest.param(
        REFUSAL_INCREASE,
        BASE_REFUSALS,
        one(p(20, 30)),
        Verdict.FAIL,
        Limit.BREAKER,
        id="breaker-relative-gross",
    ),
    pytest.param(
        REFUSAL_RATIO,
        BASE_REFUSALS,
        one(p(500, 10_000)),
        Verdict.PASS,
        Limit.MAX_RATIO,
        id="ratio-unchanged",
    ),
    pytest.param(
        REFUSAL_RATIO,
        BASE_REFUSALS,
        one(p(1_200, 10_000)),
        Verdict.FAIL,
        Limit.MAX_RATIO,
        id="ratio-2.4x",
    ),
    pytest.param(
        SUCCESS,
        BASE_SUCCESS,
        one(p(9_500, 10_000)),
        Verdict.PASS,
        Limit.MIN,
        id="success-unchanged",
    ),
    pytest.param(
        SUCCESS,
        BASE_SUCCESS,
        one(p(8_800, 10_000)),
        Verdict.FAIL,
        Limit.MIN,
        id="success-below-min",
    ),
    pytest.param(
        SUCCESS,
        {"all": p(9_900, 10_000)},
        one(p(9_500, 10_000)),
        Verdict.FAIL,
        Limit.MAX_DECREASE,
        id="success-drops-4-points",
    ),
    # --- a 0..1 score (mean from _sum/_count, variance bounded by the buckets) ---
    pytest.param(
        QUALITY_DROP,
        BASE_SCORES,
        one(scores(20_000, 8, 2)),
        Verdict.PASS,
        Limit.MAX_DECREASE,
        id="quality-unchanged",
    ),
    pytest.param(
        QUALITY_DROP,
        BASE_SCORES,
        one(scores(20_000, 7, 3)),
        Verdict.FAIL,
        Limit.MAX_DECREASE,
        id="quality-drops-0.1",
    ),
    pytest.param(
        QUALITY_MIN,
        one(scores(20_000, 8, 2)),
        one(scores(5_000, 8, 2)),
        Verdict.PASS,
        Limit.MIN,
        id="quality-above-min",
    ),
    pytest.param(
        QUALITY_MIN, {}, one(scores(5_000, 6, 4)), Verdict.FAIL, Limit.MIN, id="quality-below-min"
    ),
    pytest.param(
        QUALITY_SHARE, {}, one(scores(5_000, 8, 2)), Verdict.PASS, Limit.MAX, id="few-low-scores"
    ),
    pytest.param(
        QUALITY_SHARE,
        {},
        one(scores(5_000, 3, 3)),
        Verdict.FAIL,
        Limit.BREAKER,  # five times the allowed share of low scores: gross
        id="half-low-scores",
    ),
    # --- latency tails as exceedance shares ---
    pytest.param(
        P95_MAX, {}, one(latency(5_000, 1.0)), Verdict.PASS, Limit.MAX, id="p95-below-limit"
    ),
    pytest.param(
        P95_MAX, {}, one(latency(5_000, 1.6)), Verdict.FAIL, Limit.MAX, id="p95-above-limit"
    ),
    pytest.param(
        P95_MAX_BETWEEN,
        {},
        one(latency(5_000, 1.0)),
        Verdict.PASS,
        Limit.MAX,
        id="p95-limit-between-buckets",
    ),
    pytest.param(
        P95_MAX_TOO_HIGH,
        {},
        one(latency(5_000, 1.0)),
        Verdict.INCONCLUSIVE,
        Limit.MAX,
        id="p95-limit-beyond-buckets",
    ),
    pytest.param(
        P95_RATIO,
        BASE_LATENCY,
        one(latency(5_000, 1.0)),
        Verdict.PASS,
        Limit.MAX_RATIO,
        id="p95-ratio-unchanged",
    ),
    pytest.param(
        P95_RATIO,
        BASE_LATENCY,
        one(latency(5_000, 1.5)),
        Verdict.FAIL,
        Limit.MAX_RATIO,
        id="p95-ratio-1.5x",
    ),
    pytest.param(
        P95_RATIO,
        {"all": latency(20_000, 4.0)},
        one(latency(5_000, 4.0)),
        Verdict.INCONCLUSIVE,
        Limit.MAX_RATIO,
        id="baseline-p95-in-inf-bucket",
    ),
    pytest.param(
        P95_INCREASE,
        BASE_LATENCY,
        one(latency(5_000, 1.0)),
        Verdict.PASS,
        Limit.MAX_INCREASE,
        id="p95-increase-unchanged",
    ),
    pytest.param(
        P95_INCREASE,
        BASE_LATENCY,
        one(latency(5_000, 1.6)),
        Verdict.FAIL,
        Limit.MAX_INCREASE,
        id="p95-up-1.2s",
    ),
    pytest.param(
        P95_MIN, {}, one(latency(5_000, 1.0)), Verdict.PASS, Limit.MIN, id="p95-above-min"
    ),
    pytest.param(
        P95_MIN, {}, one(latency(5_000, 0.24)), Verdict.FAIL, Limit.MIN, id="p95-below-min"
    ),
    # --- gauges: compared as they are ---
    pytest.param(
        TOKENS_MAX, {}, one(gauge(250, 5_000)), Verdict.PASS, Limit.MAX, id="tokens-within"
    ),
    pytest.param(
        TOKENS_MAX, {}, one(gauge(350, 5_000)), Verdict.FAIL, Limit.MAX, id="tokens-above"
    ),
    pytest.param(
        TOKENS_MAX,
        {},
        one(gauge(350, 50)),
        Verdict.INCONCLUSIVE,
        None,
        id="tokens-too-few-requests",
    ),
    pytest.param(
        TOKENS_RATIO,
        one(gauge(250, 50_000)),
        one(gauge(320, 5_000)),
        Verdict.FAIL,
        Limit.MAX_RATIO,
        id="tokens-ratio-above",
    ),
    pytest.param(
        TOKENS_RATIO,
        one(gauge(250, 50_000)),
        one(gauge(260, 5_000)),
        Verdict.PASS,
        Limit.MAX_RATIO,
        id="tokens-ratio-within",
    ),
    pytest.param(
        CACHE_MIN,
        VersionData(total=gauge(0.7)),
        VersionData(total=gauge(0.4)),
        Verdict.FAIL,
        Limit.MIN,
        id="gauge-without-samples-fails-as-is",
    ),
    pytest.param(
        CACHE_MIN,
        VersionData(total=gauge(0.7)),
        VersionData(total=gauge(0.6)),
        Verdict.PASS,
        Limit.MIN,
        id="gauge-without-samples-passes-as-is",
    ),
    # --- nothing to judge yet ---
    pytest.param(
        ERROR_MAX, {}, one(p(0, 0)), Verdict.INCONCLUSIVE, None, id="candidate-without-traffic"
    ),
    pytest.param(ERROR_MAX, {}, {}, Verdict.NO_DATA, None, id="query-returned-no-series"),
]


@pytest.mark.parametrize(("spec", "baseline", "candidate", "verdict", "decided_by"), CASES)
def test_overall_verdict(
    spec: object,
    baseline: Mapping[str, Sample] | VersionData,
    candidate: Mapping[str, Sample] | VersionData,
    verdict: Verdict,
    decided_by: Limit | None,
) -> None:
    result = run(spec, baseline, candidate)  # type: ignore[arg-type]
    cell = result.cell(spec.metric_name, OVERALL)  # type: ignore[attr-defined]
    assert cell.verdict is verdict, cell.reason
    assert cell.decided_by is decided_by
    assert cell.reason
    if verdict is Verdict.INCONCLUSIVE and decided_by is None:
        assert cell.reason.startswith(("not enough traffic yet", "no candidate requests yet"))
        assert cell.waiting_for_traffic
    else:
        assert not cell.waiting_for_traffic


@pytest.mark.parametrize(
    ("failure", "side"),
    [
        pytest.param(FailureKind.UNREACHABLE, "candidate", id="prometheus-down"),
        pytest.param(FailureKind.BAD_QUERY, "candidate", id="bad-query"),
        pytest.param(FailureKind.NO_DATA, "baseline", id="baseline-no-data"),
        pytest.param(FailureKind.AMBIGUOUS, "baseline", id="ambiguous"),
    ],
)
def test_a_failed_measurement_is_no_data_never_a_rollback(failure: FailureKind, side: str) -> None:
    broken = MeasurementFailure(failure, "it broke", query="up")
    healthy = VersionData({"all": p(30, 30)})  # would trip the breaker if judged
    obs = MetricObservation(
        "error-rate",
        broken if side == "baseline" else healthy,
        broken if side == "candidate" else healthy,
    )
    result = judge(analysis(ERROR_MAX), ["mobile"], {"error-rate": obs}, at=AT)
    assert {c.verdict for c in result.cells} == {Verdict.NO_DATA}
    assert all(c.no_data is NoDataReason.QUERY_FAILED for c in result.cells)
    assert all("it broke" in c.reason and c.query == "up" for c in result.cells)
    assert result.verdict is Verdict.NO_DATA


def test_a_metric_that_was_not_measured_is_no_data() -> None:
    result = judge(analysis(ERROR_MAX), [], {}, at=AT)
    assert result.cell("error-rate", OVERALL).verdict is Verdict.NO_DATA


def test_every_cohort_and_overall_get_a_verdict() -> None:
    baseline = {"mobile": p(50, 5_000), "web": p(50, 5_000), "default": p(100, 10_000)}
    candidate = {"mobile": p(400, 4_000), "web": p(5, 500)}
    result = run(ERROR_MAX, baseline, candidate, cohorts=["mobile", "web", "tablets"])
    verdicts = {c.cohort: c.verdict for c in result.cells}
    assert verdicts == {
        "mobile": Verdict.FAIL,  # 10 % errors
        "web": Verdict.INCONCLUSIVE,  # 1 % of 500: cannot tell yet
        "tablets": Verdict.INCONCLUSIVE,  # no requests yet: no evidence, not a failure
        OVERALL: Verdict.FAIL,
    }
    tablets = result.cell("error-rate", "tablets")
    assert tablets.no_data is None
    assert tablets.waiting_for_traffic
    assert tablets.reason == "no candidate requests yet"
    assert result.verdict is Verdict.FAIL
    assert [c.cohort for c in result.failures] == ["mobile", OVERALL]


def test_overall_is_standardised_so_a_different_mix_is_not_a_regression() -> None:
    """Simpson: the candidate serves mostly the hard cohort (cohortWeights), same rates."""
    baseline = {"hard": p(400, 2_000), "easy": p(160, 8_000)}  # 20 % and 2 %
    candidate = {"hard": p(1_600, 8_000), "easy": p(40, 2_000)}  # the same rates
    # pooled, the candidate would have 16.4 % refusals against the baseline's 5.6 %
    result = run(REFUSAL_INCREASE, baseline, candidate, cohorts=["hard", "easy"])
    overall = result.cell("refusal-rate", OVERALL)
    assert overall.verdict is Verdict.PASS, overall.reason
    check = overall.checks[0]
    assert check.estimate == pytest.approx(0.0, abs=1e-12)


def test_a_query_without_cohort_split_judges_overall_only() -> None:
    baseline = VersionData(total=p(500, 10_000))
    candidate = VersionData(total=p(500, 10_000))
    result = run(REFUSAL_INCREASE, baseline, candidate, cohorts=["mobile"])
    assert result.cell("refusal-rate", OVERALL).verdict is Verdict.PASS
    mobile = result.cell("refusal-rate", "mobile")
    assert mobile.verdict is Verdict.NO_DATA
    assert mobile.no_data is NoDataReason.NO_SERIES


def test_advisory_metrics_are_recorded_but_never_decide() -> None:
    advisory = metric(template="error-rate", max=0.01, critical=False)
    critical = metric(template="refusal-rate", maxIncrease=0.02)
    obs = {
        **observation("error-rate", {"all": p(0, 10_000)}, {"all": p(500, 10_000)}),
        **observation("refusal-rate", {"all": p(500, 10_000)}, {"all": p(500, 10_000)}),
    }
    result = judge(analysis(advisory, critical), [], obs, at=AT)
    assert result.cell("error-rate", OVERALL).verdict is Verdict.FAIL
    assert result.verdict is Verdict.PASS
    assert result.failures == ()
    assert [c.metric for c in result.advisories] == ["error-rate"]


@pytest.mark.parametrize(
    ("verdicts", "expected"),
    [
        pytest.param([Verdict.PASS, Verdict.PASS], Verdict.PASS, id="all-pass"),
        pytest.param([Verdict.PASS, Verdict.INCONCLUSIVE], Verdict.INCONCLUSIVE, id="one-unsure"),
        pytest.param(
            [Verdict.INCONCLUSIVE, Verdict.NO_DATA], Verdict.NO_DATA, id="no-data-over-unsure"
        ),
        pytest.param([Verdict.NO_DATA, Verdict.FAIL, Verdict.PASS], Verdict.FAIL, id="fail-wins"),
        pytest.param([], Verdict.PASS, id="nothing-to-judge"),
    ],
)
def test_the_worst_verdict_wins(verdicts: list[Verdict], expected: Verdict) -> None:
    assert worst(verdicts) is expected


def test_the_budget_is_split_over_critical_tests_and_gauges_spend_none() -> None:
    plans = [
        plan_metric(metric(template="refusal-rate", maxIncrease=0.02, max=0.1)),  # 2 limits
        plan_metric(metric(template="latency-p95", maxRatio=1.25)),  # 1 limit
        plan_metric(TOKENS_MAX),  # a gauge: no statistics, no budget
        plan_metric(metric(template="error-rate", max=0.01, critical=False)),  # advisory
    ]
    assert count_tests(plans, 4, critical=True) == 12
    assert count_tests(plans, 4, critical=False) == 4
    assert alpha_per_test(0.05, 12) == pytest.approx(0.05 / 12)
    result = judge(analysis(*(p_.spec for p_ in plans)), ["a", "b", "c"], {}, at=AT)
    assert result.tests == 12
    assert result.alpha == pytest.approx(0.05)
    # FAIL's Bonferroni-equivalent share: a tenth of alpha is the circuit breaker's
    assert result.alpha_per_test == pytest.approx(0.05 * 0.9 / 12)


def test_evidence_of_a_failure_carries_the_numbers() -> None:
    result = run(REFUSAL_INCREASE, BASE_REFUSALS, one(p(1_000, 10_000)))
    cell = result.cell("refusal-rate", OVERALL)
    check = cell.deciding_check
    assert check is not None
    assert check.method is Method.GAUSSIAN_SPRT
    assert check.estimate == pytest.approx(0.05)
    assert check.lower is not None and check.upper is not None
    assert check.allowed is not None and check.lower > check.allowed
    assert check.log_e_fail is not None and check.log_threshold is not None
    assert check.log_e_fail >= check.log_threshold
    assert cell.baseline is not None and cell.baseline.value == pytest.approx(0.05)
    assert cell.candidate is not None and cell.candidate.samples == 10_000
    assert "5.00%" in cell.reason and "maxIncrease" in cell.reason


def test_evidence_of_a_pass_bounds_the_value_within_the_limit() -> None:
    result = run(ERROR_MAX, {}, one(p(10, 10_000)))
    check = result.cell("error-rate", OVERALL).checks[0]
    assert check.method is Method.BERNOULLI_SPRT
    assert check.upper is not None and check.upper < 0.01
    assert check.lower is not None and check.lower <= 0.001 <= check.upper


def test_the_judge_is_a_pure_function() -> None:
    args = (
        analysis(P95_RATIO),
        ["a"],
        observation("latency-p95", BASE_LATENCY, {"all": latency(5_000, 1.3)}),
    )
    assert judge(*args, at=AT) == judge(*args, at=AT)


def test_custom_histogram_uses_its_quantile() -> None:
    spec = metric(
        name="extraction-p90",
        kind=MetricKind.HISTOGRAM,
        quantile=0.9,
        query='sum by (le, cohort) (increase(x_bucket{version="{{version}}"}[{{window}}]))',
        max=1.5,
    )
    h: Histogram = latency(5_000, 1.0)
    result = run(spec, {}, one(h))
    check = result.cell("extraction-p90", OVERALL).checks[0]
    assert "p90" in check.statement
    assert check.allowed == pytest.approx(0.1)


def test_per_cohort_gauges_combine_into_overall_by_traffic() -> None:
    baseline = {"a": gauge(200, 9_000), "b": gauge(400, 1_000)}
    candidate = {"a": gauge(210, 1_000), "b": gauge(1_000, 10)}  # b: few requests, wild
    result = run(TOKENS_MAX, baseline, candidate, cohorts=["a", "b"])
    overall = result.cell("tokens-per-request", OVERALL)
    assert overall.candidate is not None
    # cohorts weighted by all their traffic (a: 10,000, b: 1,010), not by the candidate's
    assert overall.candidate.value == pytest.approx((210 * 10_000 + 1_000 * 1_010) / 11_010)
    assert overall.candidate.samples == 1_010
    assert result.cell("tokens-per-request", "b").verdict is Verdict.INCONCLUSIVE
    assert result.cell("tokens-per-request", "a").verdict is Verdict.PASS


DRIFT_LIMIT = metric(template="refusal-rate", maxIncrease=0.01)


def _refusals(rate_early: float, rate_late: float) -> tuple[dict[str, MetricObservation], ...]:
    """Refusals drift from 5 % to 8 % for both versions; the weight goes from 1 % to 50 %."""
    early_b, early_c = p(99_000 * 0.05, 99_000), p(1_000 * rate_early, 1_000)
    late_b, late_c = p(50_000 * 0.08, 50_000), p(50_000 * rate_late, 50_000)
    at_step_2 = observation("refusal-rate", {"all": early_b}, {"all": early_c})
    now = observation("refusal-rate", {"all": early_b + late_b}, {"all": early_c + late_c})
    return at_step_2, now


def test_a_drifting_baseline_is_compared_step_by_step() -> None:
    """Pooled, the candidate's requests come mostly from the late, worse period."""
    at_step_2, now = _refusals(0.05, 0.08)
    policy = analysis(DRIFT_LIMIT)
    pooled = judge(policy, [], now, at=AT).cell("refusal-rate", OVERALL)
    by_step = judge(policy, [], now, at=AT, step_starts=[at_step_2]).cell("refusal-rate", OVERALL)
    assert pooled.verdict is Verdict.FAIL  # 7.9 % against 6.0 %: a regression that is not
    assert by_step.verdict is Verdict.PASS, by_step.reason
    check = by_step.checks[0]
    assert check.estimate == pytest.approx(0.0, abs=1e-9)


def test_a_real_regression_is_still_caught_step_by_step() -> None:
    at_step_2, now = _refusals(0.07, 0.10)
    result = judge(analysis(DRIFT_LIMIT), [], now, at=AT, step_starts=[at_step_2])
    cell = result.cell("refusal-rate", OVERALL)
    assert cell.verdict is Verdict.FAIL
    assert cell.checks[0].estimate == pytest.approx(0.02, abs=1e-9)


def test_a_failed_step_snapshot_falls_back_to_cumulative_counts() -> None:
    _, now = _refusals(0.05, 0.08)
    failed = {
        "refusal-rate": MetricObservation(
            "refusal-rate",
            MeasurementFailure(FailureKind.UNREACHABLE, "down"),
            MeasurementFailure(FailureKind.UNREACHABLE, "down"),
        )
    }
    policy = analysis(DRIFT_LIMIT)
    with_failed = judge(policy, [], now, at=AT, step_starts=[failed])
    assert with_failed.cells == judge(policy, [], now, at=AT).cells


# --- each limit kind at its tolerance, in the zone, at the limit and beyond ---------

SUCCESS_MIN = metric(
    name="task-success",
    kind="proportion",
    query='sum by (cohort) (increase(ok_total{version="{{version}}"}[{{window}}]))',
    trials='sum by (cohort) (increase(all_total{version="{{version}}"}[{{window}}]))',
    min=0.9,
)
SUCCESS_DROP = metric(
    name="task-success",
    kind="proportion",
    query='sum by (cohort) (increase(ok_total{version="{{version}}"}[{{window}}]))',
    trials='sum by (cohort) (increase(all_total{version="{{version}}"}[{{window}}]))',
    maxDecrease=0.02,
)
#: (spec, the baseline's rate, the candidate's rate at: tolerance, 1/4 into the zone,
#: 3/4 into it, the limit, beyond it); each default tolerance is the judge's
ZONES = {
    "max": (ERROR_MAX, 0.002, (0.006, 0.007, 0.009, 0.010, 0.020)),
    "min": (SUCCESS_MIN, 0.96, (0.93, 0.9225, 0.9075, 0.90, 0.85)),
    "maxIncrease": (REFUSAL_INCREASE, 0.05, (0.06, 0.0625, 0.0675, 0.07, 0.09)),
    "maxDecrease": (SUCCESS_DROP, 0.96, (0.95, 0.9475, 0.9425, 0.94, 0.92)),
    "maxRatio": (REFUSAL_RATIO, 0.05, (0.0625, 0.065625, 0.071875, 0.075, 0.10)),
}
ZONE_POINTS = ("at-tolerance", "near-tolerance", "near-limit", "at-limit", "beyond")
ALLOWED = {
    "at-tolerance": {Verdict.PASS},
    "near-tolerance": {Verdict.PASS, Verdict.INCONCLUSIVE},
    "near-limit": {Verdict.FAIL, Verdict.INCONCLUSIVE},
    "at-limit": {Verdict.FAIL},
    "beyond": {Verdict.FAIL},
}


@pytest.mark.parametrize("point", ZONE_POINTS)
@pytest.mark.parametrize("kind", list(ZONES))
def test_each_limit_kind_around_its_zone(kind: str, point: str) -> None:
    """Plenty of traffic: within the tolerance PASSes, at or beyond the limit FAILs, and
    in between either may happen, towards the side the candidate is nearer."""
    spec, base_rate, rates = ZONES[kind]
    rate = rates[ZONE_POINTS.index(point)]
    baseline = {"all": p(1_000_000 * base_rate, 1_000_000)}
    result = run(spec, baseline, {"all": p(200_000 * rate, 200_000)})
    cell = result.cell(spec.metric_name, OVERALL)
    assert cell.verdict in ALLOWED[point], cell.reason
    check = cell.checks[0]
    assert check.tolerance is not None
    if cell.verdict is Verdict.INCONCLUSIVE:
        side = "the tolerance" if point == "near-tolerance" else "the limit"
        assert f"leans towards {side}" in cell.reason
        assert cell.powered  # 200,000 requests are far more than the power needs
    if cell.verdict is Verdict.PASS:
        assert cell.powered


def test_an_undecided_cell_says_how_much_more_it_needs() -> None:
    result = run(REFUSAL_INCREASE, BASE_REFUSALS, one(p(300 * 0.055, 300)))
    cell = result.cell("refusal-rate", OVERALL)
    assert cell.verdict is Verdict.INCONCLUSIVE
    assert not cell.powered
    assert cell.needed_samples is not None and cell.needed_samples > 0
    assert "leans towards the tolerance" in cell.reason


def test_an_explicit_tolerance_moves_the_zone() -> None:
    # +0.8 points against maxIncrease 1.2: nearer the default tolerance (0.6) than the
    # limit, but nearer the limit than to a tolerance of 0.2
    default = metric(template="refusal-rate", maxIncrease=0.012)
    strict = metric(template="refusal-rate", maxIncrease=0.012, tolerance=0.002)
    baseline = {"all": p(50_000, 1_000_000)}
    candidate = one(p(200_000 * 0.058, 200_000))
    assert run(default, baseline, candidate).verdict is Verdict.PASS
    assert run(strict, baseline, candidate).verdict is Verdict.FAIL


def _score_mean(mean: float) -> Histogram:
    """50,000 Beta scores of this mean, as concentrated as the baseline's Beta(8, 2)."""
    return scores(50_000, 10 * mean, 10 * (1 - mean))


@pytest.mark.parametrize(
    ("spec", "candidate", "allowed"),
    [
        # scores: baseline mean 0.80, maxDecrease 0.03, tolerance 0.015
        pytest.param(QUALITY_DROP, _score_mean(0.785), {Verdict.PASS}, id="score-at-tolerance"),
        pytest.param(
            QUALITY_DROP,
            _score_mean(0.7775),
            {Verdict.PASS, Verdict.INCONCLUSIVE},
            id="score-mid-zone",
        ),
        pytest.param(QUALITY_DROP, _score_mean(0.77), {Verdict.FAIL}, id="score-at-limit"),
        pytest.param(QUALITY_DROP, _score_mean(0.74), {Verdict.FAIL}, id="score-beyond"),
        # latency p95 maxRatio 1.25 (tolerance 1.125): the candidate's latencies scaled
        pytest.param(
            P95_RATIO, latency(50_000, 1.125), {Verdict.PASS}, id="p95-ratio-at-tolerance"
        ),
        pytest.param(P95_RATIO, latency(50_000, 1.25), {Verdict.FAIL}, id="p95-ratio-at-limit"),
        pytest.param(P95_RATIO, latency(50_000, 1.5), {Verdict.FAIL}, id="p95-ratio-beyond"),
        # latency p95 max 2.5 s: the baseline's p95 is 1.93 s, so the tolerance is 2.23 s
        pytest.param(P95_MAX, latency(50_000, 1.155), {Verdict.PASS}, id="p95-max-at-tolerance"),
        pytest.param(P95_MAX, latency(50_000, 1.294), {Verdict.FAIL}, id="p95-max-at-limit"),
    ],
)
def test_scores_and_latency_around_their_zones(
    spec: object, candidate: Histogram, allowed: set[Verdict]
) -> None:
    baseline = {"all": scores(200_000, 8, 2) if spec is QUALITY_DROP else latency(200_000, 1.0)}
    result = run(spec, baseline, one(candidate))  # type: ignore[arg-type]
    cell = result.cell(spec.metric_name, OVERALL)  # type: ignore[attr-defined]
    assert cell.verdict in allowed, cell.reason
    assert cell.powered
