"""A seeded traffic simulator, and a provider that reads it as Prometheus would.

The demo and the engine's tests need a rollout to watch without a cluster, a
model server or a Prometheus. `TrafficSimulator` generates requests second by
second (a Poisson stream split into cohorts, each cohort routed to the
candidate at the current weight) and keeps the counters a model server
following the metric contract would export: requests by outcome, refusals,
quality-score, latency and time-to-first-token histograms, output tokens.
It records a snapshot of every counter at each scrape, like Prometheus, and
the exemplar a model server would attach to each bad-outcome counter (a refusal,
an error, a feedback event) at each scrape: the trace ID of its latest bad
request, so a rollback can name the requests that broke it.

`SimulatedProvider` answers `fetch` for every built-in template with the
counters' increase between the snapshots at the start and the end of the
analysis: the same counts the Prometheus provider returns for a real server;
its `trace_ids` answers the exemplar question as Prometheus' `query_exemplars`
would.
Everything is driven by the simulated clock (`advance_to`) and one seed, so a
run is reproducible to the request.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from controller.analysis import Gauge, Histogram, Proportion, Sample, VersionData
from controller.metrics import promql
from controller.metrics.base import (
    BadQueryError,
    MetricsUnreachableError,
    NoSeriesError,
    QueryContext,
)
from controller.metrics.exemplars import TraceIds, TraceQuery, exemplar_selector
from controller.metrics.templates import QUERIES
from controller.policy import MetricSpec
from controller.policy.templates import FEEDBACK_KINDS, FEEDBACK_TEMPLATES

#: buckets fine enough to judge a 25 % latency ratio (see docs/judge.md, How the judge decides)
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10.0)
TTFT_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
QUALITY_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
#: exemplars kept per (version, cohort, counter), as Prometheus' exemplar storage keeps
#: a bounded number
MAX_EXEMPLARS = 500


@dataclass(frozen=True)
class Behaviour:
    """How one version treats one cohort's requests."""

    refusal_rate: float = 0.05
    error_rate: float = 0.002
    #: quality scores ~ Beta(a, b): mean a / (a + b)
    quality: tuple[float, float] = (8.0, 2.0)
    #: request latency ~ lognormal(median, sigma)
    latency_median: float = 1.0
    latency_sigma: float = 0.5
    ttft_median: float = 0.3
    ttft_sigma: float = 0.4
    output_tokens: float = 250.0
    #: the share of answered requests drawing each kind of feedback (`FEEDBACK_KINDS`)
    feedback: Mapping[str, float] = field(
        default_factory=lambda: {
            "regenerate": 0.04,
            "thumbs_down": 0.02,
            "thumbs_up": 0.06,
            "abandon": 0.03,
            "escalate": 0.01,
        }
    )


@dataclass(frozen=True)
class CohortTraffic:
    """A cohort: its share of all requests and each version's behaviour in it."""

    name: str
    share: float
    behaviour: Mapping[str, Behaviour] = field(default_factory=dict)

    def of(self, version: str) -> Behaviour:
        return self.behaviour.get(version, Behaviour())


class _Counters:
    """Every counter of one (version, cohort), cumulative since the simulation began."""

    def __init__(self) -> None:
        self.requests = 0.0
        self.errors = 0.0
        self.refusals = 0.0
        self.tokens = 0.0
        self.quality = np.zeros(len(QUALITY_BUCKETS) + 1)
        self.quality_sum = 0.0
        self.latency = np.zeros(len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.ttft = np.zeros(len(TTFT_BUCKETS) + 1)
        self.ttft_sum = 0.0
        self.feedback = np.zeros(len(FEEDBACK_KINDS))

    def copy(self) -> _Counters:
        out = _Counters()
        out.__dict__.update(
            {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in self.__dict__.items()}
        )
        return out


def _bucket_counts(values: np.ndarray, bounds: Sequence[float]) -> np.ndarray:
    """Per-bucket (not cumulative) counts, with +Inf last; `le` means <=."""
    index = np.searchsorted(np.asarray(bounds), values, side="left")
    return np.bincount(index, minlength=len(bounds) + 1).astype(float)


class TrafficSimulator:
    """Seeded requests over simulated time, routed between two versions."""

    def __init__(
        self,
        *,
        model: str,
        baseline: str,
        candidate: str,
        cohorts: Sequence[CohortTraffic],
        requests_per_second: float,
        start: datetime,
        seed: int = 0,
        scrape_interval: timedelta = timedelta(seconds=5),
    ) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        total_share = sum(c.share for c in cohorts)
        if not cohorts or not math.isclose(total_share, 1.0, abs_tol=1e-9):
            raise ValueError(f"cohort shares must add up to 1 (they add up to {total_share:g})")
        self.model = model
        self.baseline = baseline
        self.candidate = candidate
        self.cohorts = tuple(cohorts)
        self.rps = requests_per_second
        self.scrape_interval = scrape_interval
        self._rng = np.random.default_rng(seed)
        self._now = start
        self._weight = 0.0
        self._cohort_weights: dict[str, float] = {}
        self._counters = {(v, c.name): _Counters() for v in (baseline, candidate) for c in cohorts}
        self._times: list[datetime] = [start]
        self._snapshots = [self._snapshot()]
        # Trace IDs come from a stream of their own: the traffic is the same with or
        # without them, request for request.
        self._traces = np.random.default_rng([seed, 1])
        #: per (version, cohort, bad-outcome counter): the exemplars scraped, oldest first
        self._exemplars: dict[tuple[str, str, str], deque[tuple[datetime, str]]] = {}

    @property
    def now(self) -> datetime:
        return self._now

    def set_weights(
        self, candidate_percent: float, cohort_percents: Mapping[str, float] | None = None
    ) -> None:
        """Route `candidate_percent` of traffic to the candidate from now on.

        `cohort_percents` overrides the weight for named cohorts, as a step's
        `cohortWeights` does.
        """
        self._weight = candidate_percent / 100.0
        self._cohort_weights = {k: v / 100.0 for k, v in (cohort_percents or {}).items()}

    def advance_to(self, until: datetime) -> None:
        """Generate the traffic up to `until`, one scrape interval at a time."""
        while self._now + self.scrape_interval <= until:
            before = self._snapshots[-1]
            self._tick(self.scrape_interval.total_seconds())
            self._now += self.scrape_interval
            self._times.append(self._now)
            self._snapshots.append(self._snapshot())
            self._scrape_exemplars(before, self._snapshots[-1])

    def _scrape_exemplars(
        self,
        before: Mapping[tuple[str, str], _Counters],
        after: Mapping[tuple[str, str], _Counters],
    ) -> None:
        """One exemplar per bad-outcome counter that grew since the last scrape: the
        trace ID of its latest bad request, as a client library keeps it."""
        for key, now in after.items():
            then = before[key]
            grew = {
                "refusals": now.refusals > then.refusals,
                "errors": now.errors > then.errors,
                **{
                    f"feedback:{kind}": now.feedback[i] > then.feedback[i]
                    for i, kind in enumerate(FEEDBACK_KINDS)
                },
            }
            for counter, increased in grew.items():
                if increased:
                    kept = self._exemplars.setdefault((*key, counter), deque(maxlen=MAX_EXEMPLARS))
                    kept.append((self._now, self._traces.bytes(16).hex()))

    def exemplars(
        self, version: str, cohort: str, counter: str, start: datetime, end: datetime
    ) -> list[tuple[datetime, str]]:
        """The exemplars of a bad-outcome counter (`refusals`, `errors`,
        `feedback:<kind>`) scraped in (start, end], oldest first."""
        kept = self._exemplars.get((version, cohort, counter), ())
        return [(at, trace) for at, trace in kept if start < at <= end]

    def _snapshot(self) -> dict[tuple[str, str], _Counters]:
        return {key: counters.copy() for key, counters in self._counters.items()}

    def _tick(self, seconds: float) -> None:
        rng = self._rng
        arrivals = rng.poisson(self.rps * seconds)
        shares = [c.share for c in self.cohorts]
        per_cohort = rng.multinomial(arrivals, shares)
        for cohort, n in zip(self.cohorts, per_cohort, strict=True):
            weight = self._cohort_weights.get(cohort.name, self._weight)
            to_candidate = rng.binomial(n, min(max(weight, 0.0), 1.0))
            for version, count in (
                (self.candidate, to_candidate),
                (self.baseline, n - to_candidate),
            ):
                if count:
                    self._serve(
                        self._counters[(version, cohort.name)], cohort.of(version), int(count)
                    )

    def _serve(self, c: _Counters, b: Behaviour, n: int) -> None:
        rng = self._rng
        errors = rng.binomial(n, b.error_rate)
        ok = n - errors
        c.requests += n
        c.errors += errors
        c.refusals += rng.binomial(ok, b.refusal_rate)
        c.tokens += rng.poisson(b.output_tokens * ok)
        scores = rng.beta(b.quality[0], b.quality[1], size=ok)
        c.quality += _bucket_counts(scores, QUALITY_BUCKETS)
        c.quality_sum += float(scores.sum())
        latency = rng.lognormal(math.log(b.latency_median), b.latency_sigma, size=n)
        c.latency += _bucket_counts(latency, LATENCY_BUCKETS)
        c.latency_sum += float(latency.sum())
        ttft = rng.lognormal(math.log(b.ttft_median), b.ttft_sigma, size=ok)
        c.ttft += _bucket_counts(ttft, TTFT_BUCKETS)
        c.ttft_sum += float(ttft.sum())
        # drawn from the trace stream: adding feedback left the other counters as they were
        for i, kind in enumerate(FEEDBACK_KINDS):
            c.feedback[i] += self._traces.binomial(ok, b.feedback.get(kind, 0.0))

    def counters_between(
        self, version: str, start: datetime, end: datetime
    ) -> dict[str, _Counters] | None:
        """Per cohort, the counters' increase from `start` to `end` (latest scrape at or before)."""
        if all(v != version for v, _ in self._counters):
            return None
        first = self._at(start)
        last = self._at(end)
        out = {}
        for cohort in self.cohorts:
            a, b = first[(version, cohort.name)], last[(version, cohort.name)]
            diff = _Counters()
            for key, value in b.__dict__.items():
                diff.__dict__[key] = value - a.__dict__[key]
            out[cohort.name] = diff
        return out

    def _at(self, when: datetime) -> dict[tuple[str, str], _Counters]:
        index = bisect.bisect_right(self._times, when) - 1
        return self._snapshots[max(index, 0)]


def _histogram(bucket_counts: np.ndarray, bounds: Sequence[float], total_sum: float) -> Histogram:
    cumulative = np.cumsum(bucket_counts)
    return Histogram((*bounds, math.inf), tuple(float(x) for x in cumulative), total_sum)


class SimulatedProvider:
    """A `MetricProvider` over a `TrafficSimulator`, for the built-in templates.

    Set `down = True` to make every fetch fail as an unreachable Prometheus would.
    """

    def __init__(self, simulator: TrafficSimulator) -> None:
        self.simulator = simulator
        self.down = False

    def fetch(self, metric: MetricSpec, version: str, context: QueryContext) -> VersionData:
        name = metric.template
        query = _query_text(metric, version, context)
        if self.down:
            raise MetricsUnreachableError("the simulated Prometheus is down", query=query)
        if name is None or name not in QUERIES:
            raise BadQueryError(
                "the simulated provider answers the built-in templates only", query=query
            )
        counters = self.simulator.counters_between(version, context.start, context.end)
        if counters is None:
            raise NoSeriesError(f"no series for version {version!r}", query=query)
        samples = {cohort: _sample(name, c) for cohort, c in counters.items()}
        return VersionData(
            by_cohort={k: v for k, v in samples.items() if v is not None},
            query=query,
            cohort_queries={k: _query_text(metric, version, context, k) for k in samples},
        )

    def trace_ids(self, query: TraceQuery) -> TraceIds:
        """The exemplars' trace IDs of the bad-outcome counter behind `query.metric`,
        newest first: what Prometheus' `query_exemplars` returns for a real server."""
        if self.down:
            raise MetricsUnreachableError("the simulated Prometheus is down")
        selector = exemplar_selector(query)
        text = f"simulated exemplars of {selector.text}" if selector else ""
        counter = _bad_counter(query.metric.template or "")
        if selector is None or counter is None:
            return TraceIds(
                (),
                query=text,
                reason="the simulator attaches trace IDs to refusals, errors and feedback "
                f"events only, not to {query.metric.metric_name}",
            )
        context = query.context
        cohorts = (
            [query.cohort] if query.cohort is not None else [c.name for c in self.simulator.cohorts]
        )
        found = [
            e
            for cohort in cohorts
            for e in self.simulator.exemplars(
                query.version, cohort, counter, context.start, context.end
            )
        ]
        found.sort(reverse=True)
        traces = tuple(dict.fromkeys(t for _, t in found))[: query.limit]
        if not traces:
            return TraceIds((), query=text, reason="no bad request of the candidate in the window")
        return TraceIds(traces, query=text)


def _bad_counter(template: str) -> str | None:
    """The simulator's bad-outcome counter that a template's events count."""
    if template == "refusal-rate":
        return "refusals"
    if template == "error-rate":
        return "errors"
    if template in FEEDBACK_TEMPLATES:
        return f"feedback:{FEEDBACK_TEMPLATES[template][0]}"
    return None


def _query_text(
    metric: MetricSpec, version: str, context: QueryContext, cohort: str | None = None
) -> str:
    """The selectors the built-in template reads, filled in as Prometheus would see them,
    narrowed to `cohort` when given (all cohorts otherwise), so the evidence of a cell
    shows which series were judged: `simulated llm_refusals_total{model="m",...}`."""
    template = QUERIES.get(metric.template or "")
    if template is None:
        return f"simulated {metric.template or metric.metric_name} {{version={version!r}}}"
    values: dict[str, promql.Value] = {"model": context.model, "version": version}
    values["cohort"] = promql.OneOf(context.cohorts) if cohort is None else cohort
    matcher = ',cohort=~"{{cohort}}"}' if cohort is None else ',cohort="{{cohort}}"}'
    # every built-in selector ends with its label matchers' closing brace
    selectors = [promql.render(s[:-1] + matcher, values) for s in template.counters]
    return "simulated " + " / ".join(selectors)


def _sample(template: str, c: _Counters) -> Sample | None:
    if template == "refusal-rate":
        return Proportion(c.refusals, c.requests)
    if template == "error-rate":
        return Proportion(c.errors, c.requests)
    if template == "quality-score":
        return _histogram(c.quality, QUALITY_BUCKETS, c.quality_sum)
    if template.startswith("latency-"):
        return _histogram(c.latency, LATENCY_BUCKETS, c.latency_sum)
    if template.startswith("ttft-"):
        return _histogram(c.ttft, TTFT_BUCKETS, c.ttft_sum)
    if template in FEEDBACK_TEMPLATES:
        kind = FEEDBACK_KINDS.index(FEEDBACK_TEMPLATES[template][0])
        return Proportion(float(c.feedback[kind]), c.requests)
    if template == "tokens-per-request":
        return Gauge(c.tokens / c.requests, c.requests) if c.requests > 0 else None
    raise BadQueryError(f"the simulator has no counters for {template!r}")
