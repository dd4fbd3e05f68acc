"""Ours, as the detection benchmark drives it over a stream; the peers are in `detection_peers`.

`ours` is the product itself. Every look runs the real metric collection
(`controller.metrics.base.collect`, through a provider that answers with the
counts Prometheus would hold), the real judge (`controller.analysis.judge`) and
the real pure engine (`controller.engine.decide.decide`), each through its
public function, so a change to the judge or the engine shows in the next run;
the route the engine wants sets the next interval's weight. Nothing is
re-implemented, and nothing is tuned: it runs the benchmark's policy below.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from bench.detection_sim import (
    BASELINE,
    CANDIDATE,
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


def policy() -> str:
    """The benchmark's rollout policy for ours.

    Whatever it does not set (`advanceOn`, the deadline, the judge's tolerance)
    is the product's default, so a run measures the defaults of the code checked
    out.
    """
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
    metrics:
      - {{template: refusal-rate,  maxIncrease: {REFUSAL_MARGIN}}}
      - {{template: quality-score, maxDecrease: {QUALITY_MARGIN}}}
      - {{template: ttft-p95,      maxRatio: {TTFT_RATIO}}}
      - {{template: error-rate,    max: {ERROR_MAX}}}
"""
    )


POLICY = policy()

PROMOTED, ROLLED_BACK, PAUSED, UNFINISHED = "promoted", "rolled-back", "paused", "unfinished"


@dataclass(frozen=True)
class Outcome:
    """How one engine's rollout of one stream ended."""

    result: str  # PROMOTED | ROLLED_BACK | PAUSED (waiting for a human) | UNFINISHED
    seconds: float  # when it ended (the horizon if it did not)
    affected_served: float  # requests of the harmed cohorts the candidate served until then
    weight: int  # the candidate's weight (%) when it ended: how far the rollout got


def bench_rollout() -> ModelRollout:
    [loaded] = load_text(policy(), "<bench policy>")
    return loaded.rollout


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

    def __init__(self) -> None:
        self.rollout = bench_rollout()
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
