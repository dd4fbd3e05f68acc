"""The detection benchmark's traffic: seeded, coupled request streams, read as Prometheus would.

One rollout's traffic is generated up front, one analysis interval at a time
(the policy's `analysis.interval`: 1 minute in the benchmark's world, 30 s in
the README's), for every cohort and for both versions' behaviour, so that every
engine judges the *same* stream however its own decisions move the weight:

- arrivals are Poisson with a ±30 % diurnal swing, split over the cohorts by
  their shares;
- each interval's requests of a cohort are split into nested *groups* by the
  ladder of step weights (1 %, 5 %, 20 %, 50 %, 100 %): the requests that go to
  the candidate at 1 % also go to it at 5 %, and so on. At weight `w_j` the
  candidate serves groups `0..j-1` and the baseline the rest, so any path
  through the steps sees counts with exactly the right distribution, coupled
  across engines (common random numbers);
- every group's requests are served twice on paper, once as the candidate
  would and once as the baseline would (errors, refusals among successful
  requests, a judge score for 10 % of the successful ones, time to first token),
  and the engine's weight picks which one the world saw.

Counters are per (version, cohort) with the metric contract's histograms
(`llm_time_to_first_token_seconds` and `llm_quality_score` with the buckets of
`controller.metrics.simulated`, `_sum` included; `llm_request_duration_seconds`
too in a `World` that has request latencies).

A `World` is the population: its cohorts, their shares and baseline levels.
`BENCH_WORLD` is the benchmark's own (8 cohorts, no request-latency histogram);
`README_WORLD` is the README's example (non-English 15 %, mobile 20 %, power
users 10 %, the rest 55 %, with request latencies for `latency-p95`). The look
period is not the world's but its policy's (`simulate(look_seconds=...)`, read by
`bench.detection_engines.look_seconds` from `analysis.interval`): a stream
carries it, and everything that counts looks counts them in it. A shadow
phase is one more way of reading a stream (`Stream.mirrored`): the candidate
answers a mirrored copy of the requests of the mirror share (measured, not
served to users) while the baseline serves them all. `PrometheusView` turns the true
cumulative counters into what a Prometheus scraping them every interval holds:
exact, or, with infrastructure noise, with missed scrapes (the last scrape
stands) and pod restarts whose increments since the last scrape are lost.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from controller.metrics.simulated import LATENCY_BUCKETS, QUALITY_BUCKETS, TTFT_BUCKETS

#: Prometheus scrapes every 15 s (four scrapes per look of a 1-minute interval, two of 30 s)
SCRAPE_SECONDS = 15
#: the candidate's weight at each step, and the groups that nest inside them
WEIGHTS = (0.01, 0.05, 0.20, 0.50, 1.00)
GROUP_SHARES = np.diff(np.array((0.0, *WEIGHTS)))
COHORT_SHARES = (0.30, 0.20, 0.15, 0.10, 0.10, 0.05, 0.05, 0.05)
COHORTS = tuple(f"cohort-{i}" for i in range(len(COHORT_SHARES)))
#: the cohort of 10 % share whose refusals regress in `refusal-one-cohort`
REGRESSED_COHORT = 3
JUDGED_SHARE = 0.10
DIURNAL_SWING = 0.30
DAY_SECONDS = 86_400

# Per-cohort baseline levels: refusal around 5 % (the regressed cohort exactly
# 5 %), errors 0.5 %, judge score around 0.8, TTFT medians around 0.3 s.
BASE_REFUSAL = (0.05, 0.04, 0.06, 0.05, 0.07, 0.03, 0.05, 0.06)
BASE_ERROR = 0.005
BASE_QUALITY_MEAN = (0.80, 0.82, 0.78, 0.80, 0.76, 0.84, 0.80, 0.79)
QUALITY_CONCENTRATION = 10.0  # Beta(a, b) with a + b = 10
BASE_TTFT_MEDIAN = (0.30, 0.28, 0.32, 0.30, 0.35, 0.25, 0.30, 0.33)
TTFT_SIGMA = 0.40
#: request latency (the whole answer) ~ lognormal with this spread: p95 = 1.93 × median
LATENCY_SIGMA = 0.40

# Field layout of one counter vector (one version, one cohort, one group).
Q_BUCKETS = len(QUALITY_BUCKETS) + 1  # with +Inf
T_BUCKETS = len(TTFT_BUCKETS) + 1
L_BUCKETS = len(LATENCY_BUCKETS) + 1
REQUESTS, ERRORS, REFUSALS = 0, 1, 2
Q0 = 3
QSUM = Q0 + Q_BUCKETS
T0 = QSUM + 1
TSUM = T0 + T_BUCKETS
L0 = TSUM + 1
LSUM = L0 + L_BUCKETS
FIELDS = LSUM + 1
CANDIDATE, BASELINE = 0, 1


@dataclass(frozen=True)
class World:
    """The population a stream is drawn from: cohorts, shares and baseline levels."""

    name: str
    cohorts: tuple[str, ...]
    shares: tuple[float, ...]
    refusal: tuple[float, ...]
    quality_mean: tuple[float, ...]
    ttft_median: tuple[float, ...]
    #: request latency medians (s); None: the world exports no request-latency histogram
    latency_median: tuple[float, ...] | None = None


BENCH_WORLD = World(
    "bench", COHORTS, COHORT_SHARES, BASE_REFUSAL, BASE_QUALITY_MEAN, BASE_TTFT_MEDIAN
)
#: the README's example: three named cohorts and the traffic none of them matches
#: (`other`), judged in `overall` only; latencies with p95 around 1.5 s, so that the
#: policy's `maxRatio: 1.25` is the nearer latency limit and `max: 2.5s` the farther
README_WORLD = World(
    "readme",
    ("non-english", "mobile", "power-users", "other"),
    (0.15, 0.20, 0.10, 0.55),
    (0.05, 0.04, 0.06, 0.05),
    (0.80, 0.82, 0.78, 0.80),
    (0.30, 0.28, 0.32, 0.30),
    (0.80, 0.75, 0.90, 0.80),
)
WORLDS = {w.name: w for w in (BENCH_WORLD, README_WORLD)}


@dataclass(frozen=True)
class Behaviour:
    """How one version treats one cohort's requests."""

    refusal: float
    error: float
    quality_mean: float
    ttft_median: float
    ttft_sigma: float = TTFT_SIGMA
    latency_median: float | None = None


@dataclass(frozen=True)
class Change:
    """What the candidate does differently from the baseline, and to whom.

    `cohorts` None means every cohort.
    """

    refusal_add: float = 0.0
    error_to: float | None = None
    quality_add: float = 0.0
    #: the candidate's TTFT p95 over the baseline's, median unchanged (a fatter tail)
    ttft_tail_ratio: float = 1.0
    cohorts: tuple[int, ...] | None = None

    def applies_to(self, cohort: int) -> bool:
        return self.cohorts is None or cohort in self.cohorts

    @property
    def harmful_cohorts(self) -> tuple[int, ...]:
        return self.cohorts if self.cohorts is not None else tuple(range(len(COHORTS)))

    def harmed_in(self, world: World) -> tuple[int, ...]:
        """The harmed cohorts of `world` (every one of its cohorts if `cohorts` is None)."""
        return self.cohorts if self.cohorts is not None else tuple(range(len(world.cohorts)))


@dataclass(frozen=True)
class Noise:
    """Infrastructure noise between the model servers and the engines."""

    scrape_miss: float = 0.0  # share of scrapes (per version) that fail
    restart_per_hour: float = 0.0  # pod restarts (counter resets) per version per hour


def baseline_behaviour(cohort: int, world: World = BENCH_WORLD) -> Behaviour:
    return Behaviour(
        refusal=world.refusal[cohort],
        error=BASE_ERROR,
        quality_mean=world.quality_mean[cohort],
        ttft_median=world.ttft_median[cohort],
        latency_median=None if world.latency_median is None else world.latency_median[cohort],
    )


def candidate_behaviour(cohort: int, change: Change, world: World = BENCH_WORLD) -> Behaviour:
    base = baseline_behaviour(cohort, world)
    if not change.applies_to(cohort):
        return base
    # p95 = median * exp(1.645 sigma): a ratio r on p95 with the same median
    # widens sigma by ln(r) / 1.645.
    sigma = base.ttft_sigma + math.log(change.ttft_tail_ratio) / 1.6448536269514722
    return Behaviour(
        refusal=base.refusal + change.refusal_add,
        error=change.error_to if change.error_to is not None else base.error,
        quality_mean=base.quality_mean + change.quality_add,
        ttft_median=base.ttft_median,
        ttft_sigma=sigma,
        latency_median=base.latency_median,
    )


@dataclass(frozen=True)
class BucketModel:
    """A continuous distribution seen through histogram buckets.

    Per bucket (with +Inf): probability, conditional mean and variance, so a
    bucket's `_sum` can be drawn consistently with its count.
    """

    probs: np.ndarray
    means: np.ndarray
    variances: np.ndarray

    @property
    def mean(self) -> float:
        return float((self.probs * self.means).sum())


def _bucket_model(draws: np.ndarray, bounds: Sequence[float]) -> BucketModel:
    index = np.searchsorted(np.asarray(bounds), draws, side="left")  # `le` is <=
    n = len(bounds) + 1
    counts = np.bincount(index, minlength=n).astype(float)
    sums = np.bincount(index, weights=draws, minlength=n)
    squares = np.bincount(index, weights=draws * draws, minlength=n)
    safe = np.maximum(counts, 1.0)
    means = sums / safe
    variances = np.maximum(squares / safe - means * means, 0.0)
    return BucketModel(counts / counts.sum(), means, variances)


@lru_cache(maxsize=256)
def quality_model(mean: float) -> BucketModel:
    """Judge scores ~ Beta with the given mean (a + b = 10), through the score buckets."""
    rng = np.random.default_rng(12345)
    a = mean * QUALITY_CONCENTRATION
    draws = rng.beta(a, QUALITY_CONCENTRATION - a, size=400_000)
    return _bucket_model(draws, QUALITY_BUCKETS)


@lru_cache(maxsize=256)
def ttft_model(median: float, sigma: float) -> BucketModel:
    """TTFT ~ lognormal(median, sigma), through the TTFT buckets."""
    rng = np.random.default_rng(54321)
    draws = rng.lognormal(math.log(median), sigma, size=400_000)
    return _bucket_model(draws, TTFT_BUCKETS)


@lru_cache(maxsize=256)
def latency_model(median: float, sigma: float) -> BucketModel:
    """Request latency ~ lognormal(median, sigma), through the latency buckets."""
    rng = np.random.default_rng(65432)
    draws = rng.lognormal(math.log(median), sigma, size=400_000)
    return _bucket_model(draws, LATENCY_BUCKETS)


@dataclass(frozen=True)
class Stream:
    """One rollout's traffic, every interval, cohort and group, served both ways.

    `served[role, t, k, g, field]` are the increments of interval `t` (from
    `t` to `t + 1` looks of `look_seconds`); `prefix` sums them over groups so that a
    weight index `j` (candidate serves groups `< j`) is one subtraction.
    """

    served: np.ndarray
    prefix: np.ndarray  # [role, t, k, G + 1, field]
    scrape_ok: np.ndarray  # [role, t] the last scrape before look t succeeded
    fresh: np.ndarray  # [role, t] successful scrapes during interval t (of scrapes_per_look)
    restart: np.ndarray  # [role, t] the pod restarted just before the look's scrape
    #: the baseline's counters over the hour before the rollout (all traffic, every cohort
    #: together): what a user of a canary-only tool measures to write its ranges
    pre: np.ndarray | None = None
    #: the policy's analysis interval: interval `t` runs from `t` to `t + 1` of these
    look_seconds: int = 60

    @property
    def scrapes_per_look(self) -> int:
        return self.look_seconds // SCRAPE_SECONDS

    @property
    def looks(self) -> int:
        return int(self.served.shape[1])

    def increments(self, t: int, weight_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(candidate, baseline) increments of interval `t`, shape [cohort, field].

        `weight_index[k]` is the number of groups cohort k's candidate serves
        (0: none, len(WEIGHTS): all).
        """
        k = np.arange(self.prefix.shape[2])
        candidate = self.prefix[CANDIDATE, t, k, weight_index]
        baseline = self.prefix[BASELINE, t, k, -1] - self.prefix[BASELINE, t, k, weight_index]
        return candidate, baseline

    def mirrored(self, t: int, mirror_index: int) -> tuple[np.ndarray, np.ndarray]:
        """(candidate, baseline) increments of interval `t` in a shadow phase.

        The baseline serves every request; the candidate answers a copy of the
        requests of the first `mirror_index` groups (the mirror share), measured
        and discarded: the same groups it would serve at that weight, so a shadow
        is coupled to the steps like any weight.
        """
        candidate = self.prefix[CANDIDATE, t, :, mirror_index]
        return candidate, self.prefix[BASELINE, t, :, -1]


def _serve(
    rng: np.random.Generator, n: np.ndarray, b: Behaviour, drift: np.ndarray | None = None
) -> np.ndarray:
    """Counter increments for `n` requests (any shape) served with behaviour `b`.

    `drift` (broadcast against `n`) is added to the refusal rate: a level that
    moves during the rollout for both versions alike.
    """
    out = np.zeros((*n.shape, FIELDS))
    errors = rng.binomial(n, b.error)
    ok = n - errors
    out[..., REQUESTS] = n
    out[..., ERRORS] = errors
    refusal = b.refusal if drift is None else b.refusal + drift
    out[..., REFUSALS] = rng.binomial(ok, np.clip(refusal, 0.0, 1.0))
    judged = rng.binomial(ok, JUDGED_SHARE)
    histograms = [
        (Q0, judged, QSUM, quality_model(round(b.quality_mean, 6))),
        (T0, ok, TSUM, ttft_model(round(b.ttft_median, 6), round(b.ttft_sigma, 6))),
    ]
    if b.latency_median is not None:  # drawn last: a world without it keeps its streams
        # the answer's latency widens with the TTFT tail (the same factor on p95)
        sigma = LATENCY_SIGMA + (b.ttft_sigma - TTFT_SIGMA)
        latency = latency_model(round(b.latency_median, 6), round(sigma, 6))
        histograms.append((L0, n, LSUM, latency))
    for lo, count, total, model in histograms:
        buckets = rng.multinomial(count, model.probs)
        out[..., lo : lo + len(model.probs)] = buckets
        mean = (buckets * model.means).sum(axis=-1)
        sd = np.sqrt((buckets * model.variances).sum(axis=-1))
        out[..., total] = np.maximum(mean + sd * rng.standard_normal(mean.shape), 0.0)
    return out


def simulate(
    *,
    rps: float,
    looks: int,
    change: Change,
    noise: Noise,
    seed: int,
    drift_per_hour: float = 0.0,
    world: World = BENCH_WORLD,
    look_seconds: int,
) -> Stream:
    """Generate one rollout's stream: `looks` intervals of `look_seconds` at `rps` mean
    requests/s (`look_seconds`: the policy's `analysis.interval`, a multiple of the scrape).

    `drift_per_hour` raises the refusal rate of both versions by that much per
    hour from the start of the rollout (the baseline's own level moves).
    """
    if look_seconds % SCRAPE_SECONDS or look_seconds <= 0:
        raise ValueError(f"a look of {look_seconds} s is not a whole number of scrapes")
    scrapes_per_look = look_seconds // SCRAPE_SECONDS
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0.0, DAY_SECONDS)
    t = (np.arange(looks) + 0.5) * look_seconds
    rate = rps * (1.0 + DIURNAL_SWING * np.sin(2.0 * math.pi * (t + phase) / DAY_SECONDS))
    arrivals = rng.poisson(rate[:, None] * look_seconds * np.array(world.shares)[None, :])
    groups = rng.multinomial(arrivals, GROUP_SHARES)  # [t, k, g]
    drift = (drift_per_hour * t / 3600.0)[:, None] if drift_per_hour else None
    cohorts = len(world.cohorts)
    served = np.zeros((2, looks, cohorts, len(WEIGHTS), FIELDS))
    for k in range(cohorts):
        candidate = candidate_behaviour(k, change, world)
        served[CANDIDATE, :, k] = _serve(rng, groups[:, k], candidate, drift)
        served[BASELINE, :, k] = _serve(rng, groups[:, k], baseline_behaviour(k, world), drift)
    prefix = np.zeros((2, looks, cohorts, len(WEIGHTS) + 1, FIELDS))
    prefix[:, :, :, 1:] = served.cumsum(axis=3)
    scrape_ok = rng.random((2, looks)) >= noise.scrape_miss
    fresh = scrape_ok + rng.binomial(scrapes_per_look - 1, 1.0 - noise.scrape_miss, (2, looks))
    per_look = noise.restart_per_hour * look_seconds / 3600.0
    restart = rng.random((2, looks)) < per_look
    pre = _pre_rollout(rps, seed, world)
    return Stream(served, prefix, scrape_ok, fresh, restart, pre, look_seconds)


#: how long the baseline is watched before the rollout to measure its levels, a minute
#: at a time (whatever the rollout's interval)
PRE_MINUTES = 60


def _pre_rollout(rps: float, seed: int, world: World = BENCH_WORLD) -> np.ndarray:
    """The baseline's counters over the hour before the rollout, every cohort together.

    Drawn from a generator of its own, so the rollout's stream is the same with
    or without it.
    """
    rng = np.random.default_rng([seed, 1])
    arrivals = rng.poisson(rps * 60 * np.array(world.shares), (PRE_MINUTES, len(world.cohorts)))
    total = np.zeros(FIELDS)
    for k in range(len(world.cohorts)):
        total += _serve(rng, arrivals[:, k], baseline_behaviour(k, world)).sum(axis=0)
    return total


@dataclass
class PrometheusView:
    """What Prometheus holds for one version, fed the true counters look by look.

    `seen` is the counter as scraped, corrected for resets the way `increase()`
    and our provider's exact count do: after a restart the new pod counts from
    zero, and whatever the old pod served after its last successful scrape is
    never seen. A missed scrape leaves the last value standing (the look reads
    the previous look's value when the scrape just before it failed: a
    pessimistic lag). `fresh_history` counts each interval's successful scrapes:
    a windowed query (`rate(x[1m])`) needs two samples in its window.
    """

    true: np.ndarray
    lost: np.ndarray
    mark: np.ndarray  # true counters when the live pod's unseen increments began
    seen: np.ndarray
    history: list[np.ndarray] = field(default_factory=list)
    fresh_history: list[int] = field(default_factory=list)

    @classmethod
    def empty(cls, shape: tuple[int, ...]) -> PrometheusView:
        zero = np.zeros(shape)
        return cls(zero.copy(), zero.copy(), zero.copy(), zero.copy())

    def scrape(self, increment: np.ndarray, ok: bool, restarted: bool, fresh: int) -> np.ndarray:
        self.true = self.true + increment
        if restarted:
            self.lost = self.lost + (self.true - self.mark)
            self.mark = self.true.copy()
        if ok:
            self.seen = self.true - self.lost
            self.mark = self.true.copy()
        self.history.append(self.seen)
        self.fresh_history.append(fresh)
        return self.seen

    def window(self, looks: int) -> np.ndarray | None:
        """The increase over the last `looks` intervals, or None without two fresh scrapes."""
        now = len(self.history) - 1
        start = now - looks
        fresh = sum(self.fresh_history[max(start + 1, 0) : now + 1]) + 1  # + the sample at start
        if fresh < 2:
            return None
        before = self.history[start] if start >= 0 else np.zeros_like(self.seen)
        increase: np.ndarray = self.seen - before
        return increase
