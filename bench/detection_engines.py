"""Ours, as the detection benchmark drives it over a stream; the peers are in `detection_peers`.

`ours` is the product itself. Every look runs the real metric collection
(`controller.metrics.base.collect`, through a provider that answers with the
counts Prometheus would hold, now and when each step began), the real judge
(`controller.analysis.judge`, with the steps' start counts, as the controller's
observer calls it), the observer's `engine_cell` and the real pure engine
(`controller.engine.decide.decide`), each through its public function, so a
change to the judge or the engine shows in the next run; the route the engine
wants sets the next interval's weight. Nothing is re-implemented, and nothing
is tuned: it runs the benchmark's policy below.

Until 2026-12-06 the benchmark built the engine's cells itself and left out
`powered`, `waiting_for_traffic` and the breaker flag, and passed no step start
counts: the engine then advanced steps below `minSamples` and never promoted on
a powered cell, unlike the controller. `Outcome.blocked_by` records which cells
held a step past its hold, and for how many looks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

import numpy as np

from bench.detection_sim import (
    BASELINE,
    BENCH_WORLD,
    CANDIDATE,
    COHORTS,
    ERRORS,
    L0,
    LSUM,
    Q0,
    QSUM,
    README_WORLD,
    REFUSALS,
    REQUESTS,
    T0,
    TSUM,
    WEIGHTS,
    PrometheusView,
    Stream,
    World,
)
from controller.analysis import (
    Histogram,
    MetricObservation,
    Proportion,
    Sample,
    VersionData,
    judge,
)
from controller.engine.decide import decide, start
from controller.engine.phases import Phase
from controller.engine.state import Look, RolloutState
from controller.metrics.base import NoSeriesError, QueryContext, collect
from controller.metrics.simulated import LATENCY_BUCKETS, QUALITY_BUCKETS, TTFT_BUCKETS
from controller.policy import MetricSpec, ModelRollout, RolloutSpec, load_text
from controller.runtime.observer import engine_cell

REFUSAL_MARGIN = 0.01
QUALITY_MARGIN = 0.015
TTFT_RATIO = 1.15
ERROR_MAX = 0.02
HOLD_MINUTES = (10, 15, 30, 30)  # steps 1, 5, 20, 50 %; then 100 %


def policy() -> str:
    """The benchmark's rollout policy for ours.

    It is configured as a user would after `canaryctl plan`: for this policy (8
    cohorts down to 5 % of the traffic, a judge score on a tenth of the requests,
    no shadow) the plan warns that step 1's hold is far shorter than the time to
    reach `minSamples` in every cell (a 5 % cohort's candidate gets 0.3 scores a
    minute at 1 %) and names the remedies; the benchmark takes `advanceOn: hold`
    (steps before 100 % advance on their hold and no FAIL; 100 % still needs every
    critical cell PASSed or powered). Whatever else it does not set (the deadline,
    the judge's tolerance) is the product's default, so a run measures the
    defaults of the code checked out.
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
    advanceOn: hold
    noData: {{action: hold, timeout: 1h, then: pause}}
    metrics:
      - {{template: refusal-rate,  maxIncrease: {REFUSAL_MARGIN}}}
      - {{template: quality-score, maxDecrease: {QUALITY_MARGIN}}}
      - {{template: ttft-p95,      maxRatio: {TTFT_RATIO}}}
      - {{template: error-rate,    max: {ERROR_MAX}}}
"""
    )


POLICY = policy()
#: the README's example policy, as a file of the repository: the README-policy family
#: runs ours with it unchanged
README_POLICY_PATH = (
    Path(__file__).resolve().parent.parent / "policies" / "gateway-api-cohorts.yaml"
)
#: per world, the policy ours runs there
POLICY_BY_WORLD = {BENCH_WORLD.name: POLICY, README_WORLD.name: README_POLICY_PATH.read_text()}

PROMOTED, ROLLED_BACK, PAUSED, UNFINISHED = "promoted", "rolled-back", "paused", "unfinished"


@dataclass(frozen=True)
class Outcome:
    """How one engine's rollout of one stream ended."""

    result: str  # PROMOTED | ROLLED_BACK | PAUSED (waiting for a human) | UNFINISHED
    seconds: float  # when it ended (the horizon if it did not)
    affected_served: float  # requests of the harmed cohorts the candidate served until then
    weight: int  # the candidate's weight (%) when it ended: how far the rollout got
    #: ours only: (metric, cohort, looks) for each cell that held a step past its hold
    blocked_by: tuple[tuple[str, str, int], ...] = ()


def bench_rollout(world: World = BENCH_WORLD) -> ModelRollout:
    """The rollout ours runs in `world` (the benchmark's policy, or the README's)."""
    return _rollout(world.name)


@cache
def _rollout(world: str) -> ModelRollout:
    [loaded] = load_text(POLICY_BY_WORLD[world], f"<{world} policy>")
    return loaded.rollout


def look_seconds(world: World = BENCH_WORLD) -> int:
    """How often ours looks in `world`: its policy's `analysis.interval` (1 minute in the
    benchmark's world, 30 s in the README's). The world's streams are drawn, scraped and
    windowed at that resolution."""
    seconds = bench_rollout(world).spec.analysis.interval.total_seconds()
    if seconds != int(seconds):
        raise ValueError(f"the {world.name} policy's interval is not whole seconds")
    return int(seconds)


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
    if template.startswith("latency-"):
        buckets = counters[L0:LSUM]
        if buckets.sum() <= 0:
            return None
        return _histogram(buckets, LATENCY_BUCKETS, counters[LSUM])
    raise ValueError(f"the benchmark has no counters for {template!r}")


class StreamProvider:
    """A `MetricProvider` over the counts Prometheus holds, at any look so far.

    `context.end` picks the look: the counts as scraped at the end of that
    interval, cumulative since the start (as Prometheus evaluated at `time=end`
    gives them). The observer asks for the current look and, once per step, for
    the counts when each step began.
    """

    def __init__(
        self,
        versions: Mapping[str, int],
        t0: datetime,
        cohorts: Sequence[str] = COHORTS,
        look_seconds: int = 60,
    ) -> None:
        self.versions = versions
        self.t0 = t0
        self.look_seconds = look_seconds
        self.cohorts = tuple(cohorts)
        self.views: dict[int, PrometheusView] = {}

    def fetch(self, metric: MetricSpec, version: str, context: QueryContext) -> VersionData:
        assert metric.template is not None
        look = round((context.end - self.t0).total_seconds() / self.look_seconds) - 1
        counters = self.views[self.versions[version]].history[look]
        query = f"bench {metric.template} {{version={version!r}}}"
        samples = {}
        for k, cohort in enumerate(self.cohorts):
            sample = sample_of(metric.template, counters[k])
            if sample is not None:
                samples[cohort] = sample
        if not samples:
            raise NoSeriesError(f"no series for version {version!r}", query=query)
        return VersionData(by_cohort=samples, query=query)


_WEIGHT_INDEX = {0: 0, **{round(w * 100): i + 1 for i, w in enumerate(WEIGHTS)}}


class Ours:
    """The real judge and the real engine, one look per analysis interval.

    Each look does what the controller's observer
    (`controller.runtime.observer.JudgingObserver`) does, through the same
    public functions: `collect` the counts, hand the judge the counts as they
    were when each later step began (asked for once per step, so the judge
    compares the versions step by step), `judge`, and give the engine the cells
    `engine_cell` makes of the verdicts (with `powered`, `waiting_for_traffic`,
    the circuit breaker). Only the audit records are left out.

    In a shadow phase (the README's policy) the candidate answers the mirrored
    requests (`Stream.mirrored`): they are judged, and harm no user.
    """

    name = "ours"

    def __init__(self, world: World = BENCH_WORLD) -> None:
        self.world = world
        self.rollout = bench_rollout(world)
        spec = self.rollout.spec
        self.cohorts = tuple(c.name for c in spec.cohorts)

    def run(self, stream: Stream, harmed: tuple[int, ...]) -> Outcome:
        spec = self.rollout.spec
        world = self.world
        t0 = datetime(2026, 1, 1, tzinfo=UTC)
        every = stream.look_seconds
        if every != look_seconds(world):
            raise ValueError(
                f"the {world.name} policy looks every {look_seconds(world)} s; "
                f"this stream's looks are {every} s"
            )
        provider = StreamProvider(
            {spec.candidate.version: CANDIDATE, spec.baseline.version: BASELINE},
            t0,
            world.cohorts,
            stream.look_seconds,
        )
        state = decide(spec, start(spec, 1, t0), None, (), t0).state  # Pending -> step 1
        provider.views = {
            role: PrometheusView.empty((len(world.cohorts), stream.served.shape[-1]))
            for role in (0, 1)
        }
        snapshots: dict[datetime, dict[str, MetricObservation]] = {}
        affected = 0.0
        weight = 0
        blocking: dict[tuple[str, str], int] = {}
        for t in range(stream.looks):
            weight = state.route.weight or weight  # a paused route keeps its weight
            index = np.full(len(world.cohorts), _WEIGHT_INDEX[state.route.weight])
            for name, cohort_weight in state.route.cohorts:
                index[world.cohorts.index(name)] = _WEIGHT_INDEX[cohort_weight]
            if state.route.mirror_percent and not state.route.weight:
                mirror = _WEIGHT_INDEX[state.route.mirror_percent]
                candidate, baseline = stream.mirrored(t, mirror)  # no user is served
            else:
                candidate, baseline = stream.increments(t, index)
                affected += float(candidate[list(harmed), REQUESTS].sum())
            for role, inc in ((CANDIDATE, candidate), (BASELINE, baseline)):
                provider.views[role].scrape(
                    inc,
                    bool(stream.scrape_ok[role, t]),
                    bool(stream.restart[role, t]),
                    int(stream.fresh[role, t]),
                )
            now = t0 + timedelta(seconds=(t + 1) * every)
            look = self._look(state, provider, snapshots, now)
            before = state
            state = decide(spec, state, look, (), now).state
            _count_blocking(spec, before, state, look, now, blocking)
            seconds = (t + 1) * every
            if state.phase is Phase.ROLLED_BACK:
                return Outcome(ROLLED_BACK, seconds, affected, weight, _blocked(blocking))
            if state.phase is Phase.PROMOTED or state.route.weight == 100:
                return Outcome(PROMOTED, seconds, affected, 100, _blocked(blocking))
            if state.phase is Phase.PAUSED:
                # waiting for a human (the deadline, or no data): nothing moves until one
                # acts, so the traffic it holds is served to the end of the horizon
                rest = stream.looks - (t + 1)
                served = affected + rest * _per_look(stream, harmed, index, t)
                return Outcome(PAUSED, seconds, served, weight, _blocked(blocking))
        return Outcome(UNFINISHED, stream.looks * every, affected, weight, _blocked(blocking))

    def _look(
        self,
        state: RolloutState,
        provider: StreamProvider,
        snapshots: dict[datetime, dict[str, MetricObservation]],
        now: datetime,
    ) -> Look:
        """One look as the controller's observer takes it (without the audit records)."""
        spec = self.rollout.spec
        context = QueryContext(
            model=spec.model,
            namespace=self.rollout.metadata.namespace,
            start=state.analysis_since,
            end=now,
            window=spec.analysis.window,
            cohorts=self.cohorts,
        )

        def counts(end: datetime) -> dict[str, MetricObservation]:
            return collect(
                provider,
                spec.analysis.metrics,
                baseline=spec.baseline.version,
                candidate=spec.candidate.version,
                context=replace(context, end=end),
            )

        starts = []
        for at in state.step_starts:
            if at not in snapshots:
                snapshots[at] = counts(at)  # asked for once: they never change
            starts.append(snapshots[at])
        judgement = judge(spec.analysis, self.cohorts, counts(now), at=now, step_starts=starts)
        return Look(tuple(engine_cell(c) for c in judgement.cells))


def _per_look(stream: Stream, harmed: tuple[int, ...], index: np.ndarray, t: int) -> float:
    """The harmed cohorts' requests the candidate serves per look at `index` (the mean so far)."""
    served = [stream.increments(u, index)[0][list(harmed), REQUESTS].sum() for u in range(t + 1)]
    return float(np.mean(served)) if served else 0.0


def _count_blocking(
    spec: RolloutSpec,
    before: RolloutState,
    after: RolloutState,
    look: Look,
    now: datetime,
    blocking: dict[tuple[str, str], int],
) -> None:
    """Count a look against each cell that kept a step whose hold had passed from moving on.

    The rule is the engine's (`decide`): before 100 % every critical cell must
    PASS or be powered; before any other step each must have its `minSamples`.
    """
    if before.phase is not Phase.PROGRESSING or after.phase is not Phase.PROGRESSING:
        return
    if after.step != before.step or now - before.step_since < spec.steps[before.step].hold:
        return
    last = before.step + 1 >= len(spec.steps) - 1
    for cell in look.cells:
        if not cell.critical:
            continue
        if (not cell.decided_enough_to_promote) if last else cell.waiting_for_traffic:
            blocking[cell.metric, cell.cohort] = blocking.get((cell.metric, cell.cohort), 0) + 1


def _blocked(blocking: dict[tuple[str, str], int]) -> tuple[tuple[str, str, int], ...]:
    return tuple(sorted((m, c, n) for (m, c), n in blocking.items()))


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
