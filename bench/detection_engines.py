"""The engines the detection benchmark compares, each driven over the same stream.

- `ours`: the product itself. Every look runs the real metric collection
  (`controller.metrics.base.collect`, through a provider that answers with the
  counts Prometheus would hold), the real judge (`controller.analysis.judge`) and
  the real pure engine (`controller.engine.decide.decide`); the route the engine
  wants sets the next interval's weight. Nothing is re-implemented.
  `ours-no-failure` is the same with the policy's `analysis.advanceOn: no-failure`.
- `flagger-tN`: Flagger's model. Every look, each metric's canary-only value over
  the last minute (`[{{ interval }}]`) is compared to an absolute range; a metric
  with no value counts as a failed check (Flagger's "no values found"). The
  failed-check counter is never reset by a passing check; at `threshold` the
  canary is rolled back. A step advances once its hold has passed and the last
  check passed.
- `argo-fl0`: Argo Rollouts' background analysis with `failureLimit: 0`: every
  look measures the canary over the last 5 minutes against the same range; the
  first failed measurement aborts. An empty result is an Error, and more than
  `consecutiveErrorLimit` (4) errors in a row abort too. Steps advance on time.
- `naive-z`: at the end of each step, a one-sided two-sample z-test (alpha 0.05,
  no correction) per metric on that step's counts, all cohorts pooled; any
  significant degradation rolls back.

The absolute ranges of `flagger-*` and `argo-fl0` are the policy's limits made
absolute with the true (simulated) baseline: `refusal <= baseline + 1 point`,
`score >= baseline - 0.015`, `TTFT p95 <= 1.15 x baseline`, `errors <= 2 %` — the
best a user of those tools could write down.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import numpy as np

from bench.detection_sim import (
    BASELINE,
    CANDIDATE,
    COHORT_SHARES,
    COHORTS,
    ERRORS,
    LOOK_SECONDS,
    Q0,
    QSUM,
    REFUSALS,
    REQUESTS,
    T0,
    TSUM,
    WEIGHTS,
    PrometheusView,
    Stream,
    baseline_behaviour,
    quality_model,
    ttft_model,
)
from controller.analysis import Histogram, Proportion, Sample, VersionData, judge
from controller.engine.decide import decide, start
from controller.engine.phases import Phase
from controller.engine.state import Cell, Look, RolloutState
from controller.metrics.base import NoSeriesError, QueryContext, collect
from controller.metrics.simulated import QUALITY_BUCKETS, TTFT_BUCKETS
from controller.policy import MetricSpec, ModelRollout, load_text

REFUSAL_MARGIN = 0.01
QUALITY_MARGIN = 0.015
TTFT_RATIO = 1.15
ERROR_MAX = 0.02
HOLD_MINUTES = (10, 15, 30, 30)  # steps 1, 5, 20, 50 %; then 100 %


def policy(advance_on: str = "pass") -> str:
    """The benchmark's rollout policy for ours; `advance_on` is `analysis.advanceOn`."""
    return (
        """\
apiVersion: canary.ai/v1alpha1
kind: ModelRollout
metadata: {name: bench-v2, namespace: bench}
spec:
  model: bench
  baseline:  {version: v1, service: bench-v1}
  candidate: {version: v2, service: bench-v2}
  traffic: {router: gateway-api, route: bench}
  cohorts:
"""
        + "".join(
            f"    - {{name: {c}, match: {{header: x-cohort, value: {c}}}}}\n" for c in COHORTS
        )
        + f"""\
  steps:
    - {{weight: 1, hold: {HOLD_MINUTES[0]}m}}
    - {{weight: 5, hold: {HOLD_MINUTES[1]}m}}
    - {{weight: 20, hold: {HOLD_MINUTES[2]}m}}
    - {{weight: 50, hold: {HOLD_MINUTES[3]}m}}
    - {{weight: 100}}
  analysis:
    interval: 1m
    window: 5m
    confidence: 0.95
    minSamples: 200
    noData: {{action: hold, timeout: 1h, then: pause}}
    advanceOn: {advance_on}
    metrics:
      - {{template: refusal-rate,  maxIncrease: {REFUSAL_MARGIN}}}
      - {{template: quality-score, maxDecrease: {QUALITY_MARGIN}}}
      - {{template: ttft-p95,      maxRatio: {TTFT_RATIO}}}
      - {{template: error-rate,    max: {ERROR_MAX}}}
"""
    )


POLICY = policy()

PROMOTED, ROLLED_BACK, PAUSED, UNFINISHED = "promoted", "rolled-back", "paused", "unfinished"
NO_FAILURE = "ours-no-failure"


@dataclass(frozen=True)
class Outcome:
    """How one engine's rollout of one stream ended."""

    result: str  # PROMOTED | ROLLED_BACK | PAUSED (waiting for a human) | UNFINISHED
    seconds: float  # when it ended (the horizon if it did not)
    affected_served: float  # requests of the harmed cohorts the candidate served until then
    weight: int  # the candidate's weight (%) when it ended: how far the rollout got


class Engine(Protocol):
    name: str

    def run(self, stream: Stream, harmed: tuple[int, ...]) -> Outcome: ...


def bench_rollout(advance_on: str = "pass") -> ModelRollout:
    [loaded] = load_text(policy(advance_on), "<bench policy>")
    return loaded.rollout


def _hold_looks() -> list[int]:
    return [m * 60 // LOOK_SECONDS for m in HOLD_MINUTES]


# --- ours -----------------------------------------------------------------------------


def _histogram(counts: np.ndarray, bounds: tuple[float, ...], total: float) -> Histogram:
    cumulative = np.cumsum(counts)
    return Histogram((*bounds, math.inf), tuple(float(x) for x in cumulative), float(total))


def sample_of(template: str, counters: np.ndarray) -> Sample | None:
    """One cohort's counters as Prometheus would give them for `template`; None: no series."""
    if template in ("refusal-rate", "error-rate"):
        if counters[REQUESTS] <= 0:
            return None
        events = counters[REFUSALS if template == "refusal-rate" else ERRORS]
        return Proportion(float(events), float(counters[REQUESTS]))
    if template == "quality-score":
        buckets = counters[Q0:QSUM]
        if buckets.sum() <= 0:
            return None
        return _histogram(buckets, QUALITY_BUCKETS, counters[QSUM])
    if template.startswith("ttft-"):
        buckets = counters[T0:TSUM]
        if buckets.sum() <= 0:
            return None
        return _histogram(buckets, TTFT_BUCKETS, counters[TSUM])
    raise ValueError(f"the benchmark has no counters for {template!r}")


class StreamProvider:
    """A `MetricProvider` over the counts Prometheus holds at this look (since the start)."""

    def __init__(self, versions: Mapping[str, int]) -> None:
        self.versions = versions
        self.seen: dict[int, np.ndarray] = {}

    def fetch(self, metric: MetricSpec, version: str, context: QueryContext) -> VersionData:
        assert metric.template is not None
        counters = self.seen[self.versions[version]]
        query = f"bench {metric.template} {{version={version!r}}}"
        samples = {}
        for k, cohort in enumerate(COHORTS):
            sample = sample_of(metric.template, counters[k])
            if sample is not None:
                samples[cohort] = sample
        if not samples:
            raise NoSeriesError(f"no series for version {version!r}", query=query)
        return VersionData(by_cohort=samples, query=query)


_WEIGHT_INDEX = {0: 0, **{round(w * 100): i + 1 for i, w in enumerate(WEIGHTS)}}


class Ours:
    """The real judge and the real engine, one look per analysis interval."""

    name = "ours"
    advance_on = "pass"

    def __init__(self) -> None:
        self.rollout = bench_rollout(self.advance_on)
        spec = self.rollout.spec
        self.cohorts = tuple(c.name for c in spec.cohorts)

    def run(self, stream: Stream, harmed: tuple[int, ...]) -> Outcome:
        spec = self.rollout.spec
        t0 = datetime(2026, 1, 1, tzinfo=UTC)
        provider = StreamProvider(
            {spec.candidate.version: CANDIDATE, spec.baseline.version: BASELINE}
        )
        state = decide(spec, start(spec, 1, t0), None, (), t0).state  # Pending -> step 1
        views = {
            role: PrometheusView.empty((len(COHORTS), stream.served.shape[-1])) for role in (0, 1)
        }
        affected = 0.0
        weight = 1
        for t in range(stream.looks):
            weight = state.route.weight or weight  # a paused route keeps its weight
            index = np.full(len(COHORTS), _WEIGHT_INDEX[state.route.weight])
            for name, weight in state.route.cohorts:
                index[self.cohorts.index(name)] = _WEIGHT_INDEX[weight]
            candidate, baseline = stream.increments(t, index)
            affected += float(candidate[list(harmed), REQUESTS].sum())
            for role, inc in ((CANDIDATE, candidate), (BASELINE, baseline)):
                provider.seen[role] = views[role].scrape(
                    inc,
                    bool(stream.scrape_ok[role, t]),
                    bool(stream.restart[role, t]),
                    int(stream.fresh[role, t]),
                )
            now = t0 + timedelta(seconds=(t + 1) * LOOK_SECONDS)
            state = self._tick(state, provider, now)
            seconds = (t + 1) * LOOK_SECONDS
            if state.phase is Phase.ROLLED_BACK:
                return Outcome(ROLLED_BACK, seconds, affected, weight)
            if state.phase is Phase.PROMOTED or state.route.weight == 100:
                return Outcome(PROMOTED, seconds, affected, 100)
        result = PAUSED if state.phase is Phase.PAUSED else UNFINISHED
        return Outcome(result, stream.looks * LOOK_SECONDS, affected, weight)

    def _tick(self, state: RolloutState, provider: StreamProvider, now: datetime) -> RolloutState:
        """One look: collect the counts, judge them, and let the engine decide."""
        spec = self.rollout.spec
        context = QueryContext(
            model=spec.model,
            namespace=self.rollout.metadata.namespace,
            start=state.analysis_since,
            end=now,
            window=spec.analysis.window,
            cohorts=self.cohorts,
        )
        observations = collect(
            provider,
            spec.analysis.metrics,
            baseline=spec.baseline.version,
            candidate=spec.candidate.version,
            context=context,
        )
        judgement = judge(spec.analysis, self.cohorts, observations, at=now)
        look = Look(
            tuple(
                Cell(c.metric, c.cohort, c.verdict, c.critical, summary=c.reason)
                for c in judgement.cells
            )
        )
        return decide(spec, state, look, (), now).state


# --- canary-only range checks (Flagger, Argo) ------------------------------------------


@dataclass(frozen=True)
class Ranges:
    """Absolute limits on canary-only values, from the true baseline and the policy's margins."""

    refusal_max: float
    quality_min: float
    ttft_p95_max: float
    error_max: float

    @classmethod
    def from_baseline(cls) -> Ranges:
        shares = np.array(COHORT_SHARES)
        behaviours = [baseline_behaviour(k) for k in range(len(COHORTS))]
        refusal = float(sum(s * b.refusal for s, b in zip(shares, behaviours, strict=True)))
        quality = float(
            sum(
                s * quality_model(round(b.quality_mean, 6)).mean
                for s, b in zip(shares, behaviours, strict=True)
            )
        )
        probs = sum(
            s * ttft_model(round(b.ttft_median, 6), round(b.ttft_sigma, 6)).probs
            for s, b in zip(shares, behaviours, strict=True)
        )
        p95 = histogram_quantile(0.95, np.asarray(probs))
        assert p95 is not None
        return cls(
            refusal_max=refusal + REFUSAL_MARGIN,
            quality_min=quality - QUALITY_MARGIN,
            ttft_p95_max=TTFT_RATIO * p95,
            error_max=ERROR_MAX,
        )


def histogram_quantile(q: float, buckets: np.ndarray) -> float | None:
    """Prometheus' `histogram_quantile` over per-bucket TTFT counts (with +Inf last)."""
    total = float(buckets.sum())
    if total <= 0:
        return None
    cumulative = np.cumsum(buckets)
    rank = q * total
    i = int(np.searchsorted(cumulative, rank, side="left"))
    if i >= len(TTFT_BUCKETS):
        return TTFT_BUCKETS[-1]
    lower = TTFT_BUCKETS[i - 1] if i > 0 else 0.0
    below = cumulative[i - 1] if i > 0 else 0.0
    inside = cumulative[i] - below
    return lower + (TTFT_BUCKETS[i] - lower) * (rank - below) / inside if inside > 0 else lower


def range_checks(window: np.ndarray | None, ranges: Ranges) -> dict[str, bool | None]:
    """Each metric of the canary over a window: within range, or None when it has no value."""
    if window is None:
        return dict.fromkeys(("refusal", "error", "score", "ttft-p95"))
    total = window.sum(axis=0)  # every cohort together: these tools do not see cohorts
    requests, judged = total[REQUESTS], total[Q0:QSUM].sum()
    p95 = histogram_quantile(0.95, total[T0:TSUM])
    return {
        "refusal": bool(total[REFUSALS] / requests <= ranges.refusal_max) if requests else None,
        "error": bool(total[ERRORS] / requests <= ranges.error_max) if requests else None,
        "score": bool(total[QSUM] / judged >= ranges.quality_min) if judged else None,
        "ttft-p95": bool(p95 <= ranges.ttft_p95_max) if p95 is not None else None,
    }


def range_check(window: np.ndarray | None, ranges: Ranges) -> bool | None:
    """All metrics of the canary over a window within range; None when a value is missing."""
    checks = range_checks(window, ranges).values()
    if any(c is None for c in checks):
        return None
    return all(checks)


class _Stepper:
    """The shared step schedule: the weight index, and when each step's hold ends."""

    def __init__(self) -> None:
        self.step = 0
        self.since = 0
        self.holds = _hold_looks()

    @property
    def index(self) -> int:
        return self.step + 1  # groups the candidate serves

    @property
    def weight(self) -> int:
        return round(WEIGHTS[self.step] * 100)

    def hold_passed(self, t: int) -> bool:
        return t + 1 - self.since >= self.holds[self.step]

    def advance(self, t: int) -> bool:
        """Go to the next step; True when that step is 100 % (promoted)."""
        self.step += 1
        self.since = t + 1
        return self.step >= len(self.holds)


def _serve(
    stream: Stream, t: int, index: int, views: dict[int, PrometheusView]
) -> tuple[np.ndarray, np.ndarray]:
    candidate, baseline = stream.increments(t, np.full(len(COHORTS), index))
    for role, inc in ((CANDIDATE, candidate), (BASELINE, baseline)):
        views[role].scrape(
            inc,
            bool(stream.scrape_ok[role, t]),
            bool(stream.restart[role, t]),
            int(stream.fresh[role, t]),
        )
    return candidate, baseline


def _views(stream: Stream) -> dict[int, PrometheusView]:
    return {r: PrometheusView.empty((len(COHORTS), stream.served.shape[-1])) for r in (0, 1)}


class Flagger:
    """Flagger-style: canary-only range check every look, failed-check counter threshold."""

    def __init__(self, threshold: int, window_looks: int = 1) -> None:
        self.threshold = threshold
        self.window_looks = window_looks
        self.name = f"flagger-t{threshold}"
        self.ranges = Ranges.from_baseline()

    def run(self, stream: Stream, harmed: tuple[int, ...]) -> Outcome:
        steps, views = _Stepper(), _views(stream)
        failed, affected = 0, 0.0
        for t in range(stream.looks):
            candidate, _ = _serve(stream, t, steps.index, views)
            affected += float(candidate[list(harmed), REQUESTS].sum())
            seconds = (t + 1) * LOOK_SECONDS
            ok = range_check(views[CANDIDATE].window(self.window_looks), self.ranges)
            if not ok:  # a failed check, or no values found
                failed += 1
                if failed >= self.threshold:
                    return Outcome(ROLLED_BACK, seconds, affected, steps.weight)
            if steps.hold_passed(t) and ok and steps.advance(t):
                return Outcome(PROMOTED, seconds, affected, 100)
        return Outcome(UNFINISHED, stream.looks * LOOK_SECONDS, affected, steps.weight)


class Argo:
    """Argo-style background analysis: `failureLimit`, `consecutiveErrorLimit` 4."""

    def __init__(self, failure_limit: int = 0, window_looks: int = 5) -> None:
        self.failure_limit = failure_limit
        self.window_looks = window_looks
        self.name = f"argo-fl{failure_limit}"
        self.ranges = Ranges.from_baseline()

    def run(self, stream: Stream, harmed: tuple[int, ...]) -> Outcome:
        steps, views = _Stepper(), _views(stream)
        failed, errors, affected = 0, 0, 0.0
        for t in range(stream.looks):
            candidate, _ = _serve(stream, t, steps.index, views)
            affected += float(candidate[list(harmed), REQUESTS].sum())
            seconds = (t + 1) * LOOK_SECONDS
            ok = range_check(views[CANDIDATE].window(self.window_looks), self.ranges)
            if ok is None:
                errors += 1
                if errors > 4:
                    return Outcome(ROLLED_BACK, seconds, affected, steps.weight)
            else:
                errors = 0
                if not ok:
                    failed += 1
                    if failed > self.failure_limit:
                        return Outcome(ROLLED_BACK, seconds, affected, steps.weight)
            if steps.hold_passed(t) and steps.advance(t):
                return Outcome(PROMOTED, seconds, affected, 100)
        return Outcome(UNFINISHED, stream.looks * LOOK_SECONDS, affected, steps.weight)


# --- a fixed-sample test per step ---------------------------------------------------------

Z_95 = 1.6448536269514722


def _z_proportion(x_c: float, n_c: float, x_b: float, n_b: float) -> float:
    """Two-proportion z (pooled): positive when the candidate's rate is higher."""
    if n_c <= 0 or n_b <= 0:
        return 0.0
    p = (x_c + x_b) / (n_c + n_b)
    se = math.sqrt(p * (1 - p) * (1 / n_c + 1 / n_b))
    return (x_c / n_c - x_b / n_b) / se if se > 0 else 0.0


def _bucket_moments(counts: np.ndarray, total: float, bounds: tuple[float, ...]) -> float:
    """A variance estimate of a histogram from its bucket midpoints (the sum gives the mean)."""
    n = counts.sum()
    if n <= 1:
        return 0.0
    edges = np.array((0.0, *bounds))
    mids = np.append((edges[:-1] + edges[1:]) / 2, bounds[-1])
    mean = total / n
    return float(max((counts * mids * mids).sum() / n - mean * mean, 0.0))


def naive_degraded(c: np.ndarray, b: np.ndarray) -> bool:
    """Any metric significantly worse on this step's counts (every cohort pooled)?"""
    c, b = c.sum(axis=0), b.sum(axis=0)
    if _z_proportion(c[REFUSALS], c[REQUESTS], b[REFUSALS], b[REQUESTS]) > Z_95:
        return True
    if _z_proportion(c[ERRORS], c[REQUESTS], b[ERRORS], b[REQUESTS]) > Z_95:
        return True
    nq_c, nq_b = c[Q0:QSUM].sum(), b[Q0:QSUM].sum()
    if nq_c > 1 and nq_b > 1:
        var_c = _bucket_moments(c[Q0:QSUM], c[QSUM], QUALITY_BUCKETS)
        var_b = _bucket_moments(b[Q0:QSUM], b[QSUM], QUALITY_BUCKETS)
        se = math.sqrt(var_c / nq_c + var_b / nq_b)
        if se > 0 and (b[QSUM] / nq_b - c[QSUM] / nq_c) / se > Z_95:
            return True
    # TTFT tail: the share slower than the bucket bound nearest the baseline's p95
    tb, tc = b[T0:TSUM], c[T0:TSUM]
    if tb.sum() > 0 and tc.sum() > 0:
        cumulative = np.cumsum(tb) / tb.sum()
        i = int(np.searchsorted(cumulative[:-1], 0.95))
        i = min(i, len(TTFT_BUCKETS) - 1)
        above_c, above_b = tc[i + 1 :].sum(), tb[i + 1 :].sum()
        if _z_proportion(above_c, tc.sum(), above_b, tb.sum()) > Z_95:
            return True
    return False


class NaiveZ:
    """A two-sample z-test per metric at the end of each step, on that step's counts."""

    name = "naive-z"

    def run(self, stream: Stream, harmed: tuple[int, ...]) -> Outcome:
        steps, views = _Stepper(), _views(stream)
        affected = 0.0
        at_step = {r: np.zeros_like(views[r].seen) for r in (0, 1)}
        for t in range(stream.looks):
            candidate, _ = _serve(stream, t, steps.index, views)
            affected += float(candidate[list(harmed), REQUESTS].sum())
            seconds = (t + 1) * LOOK_SECONDS
            if steps.hold_passed(t):
                c = views[CANDIDATE].seen - at_step[CANDIDATE]
                b = views[BASELINE].seen - at_step[BASELINE]
                if naive_degraded(c, b):
                    return Outcome(ROLLED_BACK, seconds, affected, steps.weight)
                at_step = {r: views[r].seen.copy() for r in (0, 1)}
                if steps.advance(t):
                    return Outcome(PROMOTED, seconds, affected, 100)
        return Outcome(UNFINISHED, stream.looks * LOOK_SECONDS, affected, steps.weight)


class OursNoFailure(Ours):
    """The product with `analysis.advanceOn: no-failure`: a step advances once its hold
    has passed unless a critical cell FAILs, except into 100 %, which needs every PASS."""

    name = NO_FAILURE
    advance_on = "no-failure"


#: engines run only when asked for (`--extra`)
EXTRA: dict[str, type[Ours]] = {NO_FAILURE: OursNoFailure}


def all_engines(extra: tuple[str, ...] = ()) -> list[Engine]:
    engines: list[Engine] = [Ours(), Flagger(1), Flagger(5), Flagger(10), Argo(0), NaiveZ()]
    engines.extend(EXTRA[name]() for name in extra)
    return engines


ENGINE_NAMES = ("ours", "flagger-t1", "flagger-t5", "flagger-t10", "argo-fl0", "naive-z")


def _explain_ranges(streams: int = 40) -> None:
    """Why range checks fail on healthy canaries: per metric, at the 1 % step, per look."""
    from bench.detection_sim import Change, Noise, simulate

    ranges = Ranges.from_baseline()
    print(f"ranges: {ranges}")
    for rps in (10.0, 100.0):
        for name, looks in (("flagger [1m]", 1), ("argo [5m]", 5)):
            failed: dict[str, int] = {}
            missing: dict[str, int] = {}
            n = 0
            for seed in range(streams):
                stream = simulate(rps=rps, looks=10, change=Change(), noise=Noise(), seed=seed)
                views = _views(stream)
                for t in range(stream.looks):
                    _serve(stream, t, 1, views)
                    if t + 1 < looks:
                        continue
                    n += 1
                    checks = range_checks(views[CANDIDATE].window(looks), ranges)
                    for metric, ok in checks.items():
                        missing[metric] = missing.get(metric, 0) + (ok is None)
                        failed[metric] = failed.get(metric, 0) + (ok is False)
            print(
                f"{rps:g} req/s, 1 % weight, {name}, {n} healthy checks: "
                + ", ".join(
                    f"{m} out of range {failed[m] / n:.0%} / no value {missing[m] / n:.0%}"
                    for m in failed
                )
            )


if __name__ == "__main__":
    _explain_ranges()
