"""Detection benchmark: how fast each engine rolls back bad models, how often good ones.

    python -m bench.detection            # the full run (make bench-detection)
    python -m bench.detection --quick    # a reduced run, a few minutes on 2 cores

Every rollout is one seeded stream of simulated traffic (`bench.detection_sim`)
judged by every engine: ours (the real judge and the real engine,
`bench.detection_engines`) and four peers modelled on Flagger, Argo Rollouts,
Kayenta and a naive z-test (`bench.detection_peers`).

A peer is only as good as its configuration, so each is tuned first, per
traffic rate, on streams of its own (seeds kept apart from the evaluation's):
every configuration of its users' knobs rolls out A/A and regressed streams,
and the configuration with the fastest median detection among those that roll
back at most 5 % of the A/A rollouts is kept (when none does, the one with the
fewest false rollbacks, flagged as such). Then every engine, peers at their
chosen configuration, rolls out the same evaluation streams.

Scenarios are healthy (A/A, a change exactly at the judge's tolerance, a small
change, a baseline drifting under both versions, infrastructure noise) or
regressions, at 2, 10 and 100 req/s. Figures per engine and scenario: the
false-rollback rate (Wilson interval), the time to detect (median, p90) and the
share caught, the harmed requests served, the time to promote healthy
candidates; and two floors per regression: the fixed-sample two-sample test
of the hypotheses the limit tests (null at the tolerance, the cell's alpha, the
baseline estimated from its own requests) and the same with null "no change" at
alpha 0.05 (the oracle). Ours looks once per its world's policy interval (1
minute in the benchmark's world, 30 s in the README's); the peers once a minute.

Output: `bench/results/detection.json`, `detection.md` and `detection.png`
(`--out` to change the directory); `--quick` writes `detection-quick.*` and ends
its stdout with one JSON line. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats  # type: ignore[import-untyped]

from bench.detection_engines import (
    ERROR_MAX,
    HOLD_MINUTES,
    POLICY,
    PROMOTED,
    QUALITY_MARGIN,
    REFUSAL_MARGIN,
    ROLLED_BACK,
    TTFT_RATIO,
    Ours,
    Outcome,
    bench_rollout,
    look_seconds,
)
from bench.detection_peers import PEERS, Prepared, Run, config_text
from bench.detection_peers import Config as PeerConfig
from bench.detection_sim import (
    BASE_ERROR,
    BENCH_WORLD,
    JUDGED_SHARE,
    QUALITY_CONCENTRATION,
    README_WORLD,
    REGRESSED_COHORT,
    TTFT_SIGMA,
    WORLDS,
    Change,
    Noise,
    World,
    candidate_behaviour,
    simulate,
)

RESULTS = Path(__file__).resolve().parent / "results"
RATES = (2.0, 10.0, 100.0)
ENGINE_NAMES = ("ours", *(p.name for p in PEERS))
#: a peer's configuration qualifies when it rolls back at most this share of A/A rollouts
MAX_FALSE_ROLLBACKS = 0.05

#: the benchmark policy's `analysis.deadline` (its default: twice the sum of the holds)
DEADLINE_S = 2 * sum(HOLD_MINUTES) * 60
#: how far past the README policy's deadline its family is followed
README_HORIZON_PAST_DEADLINE_MINUTES = 10
#: the README policy's holds, shadow included (115 min): its goal is a median time to
#: 100 % within 1.5 times that, and 95 % promoted before the deadline
README_SPEC_HOLDS_MINUTES = bench_rollout(README_WORLD).spec.holds.total_seconds() / 60
README_GOAL_FACTOR = 1.5

# The judge's default tolerance: half of each limit's distance from "no change".
TOLERANCE_REFUSAL = REFUSAL_MARGIN / 2
TOLERANCE_QUALITY = QUALITY_MARGIN / 2
TOLERANCE_TTFT_RATIO = 1 + (TTFT_RATIO - 1) / 2
TOLERANCE_ERROR = BASE_ERROR + (ERROR_MAX - BASE_ERROR) / 2


@dataclass(frozen=True)
class Scenario:
    name: str
    change: Change
    healthy: bool
    noise: Noise = field(default_factory=Noise)
    drift_per_hour: float = 0.0
    description: str = ""
    #: the population and policy: `bench` (8 cohorts, every engine) or `readme` (the
    #: README's example policy and cohorts, ours alone)
    world: str = BENCH_WORLD.name

    @property
    def in_world(self) -> World:
        return WORLDS[self.world]

    @property
    def harmed(self) -> tuple[int, ...]:
        return self.change.harmed_in(self.in_world)


SCENARIOS = (
    Scenario("aa", Change(), True, description="A/A: the candidate is the baseline"),
    Scenario(
        "harmless",
        Change(
            refusal_add=TOLERANCE_REFUSAL,
            quality_add=-TOLERANCE_QUALITY,
            ttft_tail_ratio=TOLERANCE_TTFT_RATIO,
            error_to=TOLERANCE_ERROR,
        ),
        True,
        description="every metric exactly at the tolerance (half of each limit): refusals "
        "+0.5 points, score -0.0075, TTFT p95 x1.075, errors 1.25 %",
    ),
    Scenario(
        "small-change",
        Change(refusal_add=0.003, quality_add=-0.005),
        True,
        description="refusals +0.3 points, score -0.005: well inside the policy's limits",
    ),
    Scenario(
        "drifting-baseline",
        Change(),
        True,
        drift_per_hour=0.01,
        description="A/A while the refusals of both versions rise 1 point per hour",
    ),
    Scenario(
        "infra-noise",
        Change(),
        True,
        Noise(scrape_miss=0.05, restart_per_hour=2.0),
        description="A/A with 5 % missed scrapes and 2 pod restarts per hour per version",
    ),
    Scenario(
        "refusal-one-cohort",
        Change(refusal_add=0.02, cohorts=(REGRESSED_COHORT,)),
        False,
        description="refusals 5 % -> 7 % in one cohort of 10 % share",
    ),
    Scenario(
        "refusal-all",
        Change(refusal_add=0.02),
        False,
        description="refusals +2 points in every cohort",
    ),
    Scenario(
        "ttft-tail-one-cohort",
        Change(ttft_tail_ratio=1.3, cohorts=(REGRESSED_COHORT,)),
        False,
        description="TTFT p95 +30 % (same median) in one cohort of 10 % share",
    ),
    Scenario(
        "score-overall",
        Change(quality_add=-0.03),
        False,
        description="judge score -0.03 in every cohort",
    ),
    Scenario(
        "gross-errors",
        Change(error_to=0.20),
        False,
        description="errors 0.5 % -> 20 % everywhere",
    ),
    # The README's example policy (policies/gateway-api-cohorts.yaml, loaded as it is:
    # a 30-minute shadow at mirrorPercent 100, steps 1/5/20/50/100 % with holds
    # 10/15/30/30 min, deadline 4 h) on its own cohorts; ours alone.
    Scenario(
        "readme-aa",
        Change(),
        True,
        description="the README's policy and cohorts (non-English 15 %, mobile 20 %, power "
        "users 10 %, the rest 55 %): A/A, ours alone",
        world=README_WORLD.name,
    ),
    Scenario(
        "readme-refusals-non-english",
        Change(refusal_add=0.05, cohorts=(0,)),
        False,
        description="the README's policy and cohorts: refusals of non-English doubled, "
        "5 % -> 10 % (the README's own story), ours alone",
        world=README_WORLD.name,
    ),
)
SCENARIO_BY_NAME = {s.name: s for s in SCENARIOS}


@dataclass(frozen=True)
class Config:
    aa_rollouts: int  # evaluation, per rate, every engine
    rollouts: int  # evaluation, per rate, every other scenario
    tune_aa_rollouts: int  # tuning, per rate
    tune_rollouts: int  # tuning, per regression scenario and rate
    horizon_minutes: int
    rates: tuple[float, ...] = RATES
    scenarios: tuple[str, ...] = tuple(s.name for s in SCENARIOS)
    seed: int = 20261206
    workers: int = 2
    #: the reduced grids of the peers' knobs
    small_grids: bool = False
    #: A/A rollouts per rate for ours alone (the peers keep `aa_rollouts`): the false
    #: rollbacks of ours are measured on more rollouts than the peers need
    ours_aa_rollouts: int = 0
    #: rollouts per rate of `readme-aa` (0: `aa_rollouts`)
    readme_aa_rollouts: int = 0


#: the horizon reaches past the benchmark policy's `analysis.deadline` (twice the holds,
#: 170 minutes), so what ours does with an undecided rollout is seen
FULL = Config(
    aa_rollouts=200,
    rollouts=40,
    tune_aa_rollouts=300,
    tune_rollouts=20,
    horizon_minutes=180,
    ours_aa_rollouts=1000,
)
QUICK = Config(
    aa_rollouts=8,
    rollouts=2,
    tune_aa_rollouts=20,
    tune_rollouts=3,
    horizon_minutes=90,
    small_grids=True,
)


def key(scenario: str, rate: float) -> str:
    return f"{scenario}@{rate:g}rps"


def rate_key(rate: float) -> str:
    return f"{rate:g}rps"


# --- running -------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    scenario: str
    rate: float
    index: int
    seed: int
    looks: int
    #: tuning: every configuration of every peer; evaluation: ours and the chosen ones
    tuning: bool = False
    small_grids: bool = False
    chosen: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()
    #: the peers roll this stream out too (False: ours alone, an extra A/A stream)
    peers: bool = True


def _stream(task: Task) -> Any:
    scenario = SCENARIO_BY_NAME[task.scenario]
    return simulate(
        rps=task.rate,
        looks=task.looks,
        change=scenario.change,
        noise=scenario.noise,
        seed=task.seed,
        drift_per_hour=scenario.drift_per_hour,
        world=scenario.in_world,
        look_seconds=look_seconds(scenario.in_world),
    )


def run_tuning(task: Task) -> tuple[Task, dict[str, list[tuple[str, float]]]]:
    """Every configuration of every peer on one stream: (result, seconds) per configuration."""
    stream = _stream(task)
    prepared = Prepared(stream, SCENARIO_BY_NAME[task.scenario].change.harmful_cohorts)
    out = {}
    for peer in PEERS:
        runs = peer.run(prepared, peer.configs(task.small_grids))
        out[peer.name] = [(r.result, r.seconds) for r in runs]
    return task, out


_OURS: dict[str, Ours] = {}


def run_evaluation(task: Task) -> tuple[Task, dict[str, Outcome], float]:
    """Ours and every peer at its chosen configuration on one stream; the CPU time of ours."""
    scenario = SCENARIO_BY_NAME[task.scenario]
    if scenario.world not in _OURS:
        _OURS[scenario.world] = Ours(scenario.in_world)
    stream = _stream(task)
    harmed = scenario.harmed
    began = time.process_time()
    outcomes = {"ours": _OURS[scenario.world].run(stream, harmed)}
    ours_seconds = time.process_time() - began
    if not task.peers:
        return task, outcomes, ours_seconds
    prepared = Prepared(stream, harmed)
    chosen = {name: dict(items) for name, items in task.chosen}
    for peer in PEERS:
        [run] = peer.run(prepared, [chosen[peer.name]])
        outcomes[peer.name] = _outcome(run)
    return task, outcomes, ours_seconds


def _outcome(run: Run) -> Outcome:
    return Outcome(run.result, run.seconds, run.affected_served, run.weight)


def _seed(config: Config, phase: int, scenario: str, rate: float, index: int) -> int:
    """Tuning (phase 1) and evaluation (phase 0) streams come from disjoint seed sequences."""
    s_index = [s.name for s in SCENARIOS].index(scenario)
    entropy = [config.seed, phase, s_index, int(rate * 10), index]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def _looks(config: Config, scenario: Scenario) -> int:
    """The benchmark's horizon; a family with a policy of its own is followed a little past
    its deadline, so that what ours does with an undecided rollout is seen."""
    minutes = config.horizon_minutes
    if scenario.world != BENCH_WORLD.name:
        deadline = bench_rollout(scenario.in_world).spec.deadline.total_seconds() / 60
        minutes = max(minutes, int(deadline) + README_HORIZON_PAST_DEADLINE_MINUTES)
    return minutes * 60 // look_seconds(scenario.in_world)


def tuning_tasks(config: Config) -> list[Task]:
    looks = config.horizon_minutes * 60 // look_seconds(BENCH_WORLD)
    out = []
    for name in config.scenarios:
        scenario = SCENARIO_BY_NAME[name]
        if (scenario.healthy and name != "aa") or scenario.world != BENCH_WORLD.name:
            continue
        count = config.tune_aa_rollouts if name == "aa" else config.tune_rollouts
        for rate in config.rates:
            for i in range(count):
                seed = _seed(config, 1, name, rate, i)
                out.append(Task(name, rate, i, seed, looks, True, config.small_grids))
    return out


def evaluation_tasks(config: Config, chosen: dict[str, dict[str, PeerConfig]]) -> list[Task]:
    out = []
    for name in config.scenarios:
        scenario = SCENARIO_BY_NAME[name]
        looks = _looks(config, scenario)
        count = config.aa_rollouts if name == "aa" else config.rollouts
        if name == "readme-aa":
            count = config.readme_aa_rollouts or config.aa_rollouts
        ours_only = max(config.ours_aa_rollouts - count, 0) if name == "aa" else 0
        peers = scenario.world == BENCH_WORLD.name  # the peers run the benchmark's world only
        for rate in config.rates:
            picked = tuple(
                (peer, tuple(chosen[peer].get(rate_key(rate), {}).items()))
                for peer in sorted(chosen)
            )
            for i in range(count + ours_only):
                seed = _seed(config, 0, name, rate, i)
                out.append(
                    Task(name, rate, i, seed, looks, chosen=picked, peers=peers and i < count)
                )
    return out


def _parallel(
    fn: Callable[[Task], Any], todo: Sequence[Task], workers: int, label: str, log: Any
) -> Iterator[Any]:
    began = time.monotonic()
    every = max(1, len(todo) // 20)

    def report(items: Iterable[Any]) -> Iterator[Any]:
        for n, item in enumerate(items, 1):
            if n % every == 0 or n == len(todo):
                print(
                    f"[detection] {label}: {n}/{len(todo)} streams, "
                    f"{time.monotonic() - began:.0f}s",
                    file=log,
                    flush=True,
                )
            yield item

    if workers > 1:
        context = multiprocessing.get_context("fork")
        chunks = max(1, len(todo) // (workers * 20))
        with context.Pool(workers) as pool:
            yield from report(pool.imap_unordered(fn, todo, chunksize=chunks))
    else:
        yield from report(fn(t) for t in todo)


# --- tuning ---------------------------------------------------------------------------


def _objective(times: Sequence[float]) -> tuple[float, float, float]:
    """Fastest median detection first (a miss counts as never), then more caught, then faster."""
    array = np.array(times)
    caught = array[np.isfinite(array)]
    mean_log = float(np.mean(np.log(caught))) if len(caught) else math.inf
    return (float(np.median(array)), -len(caught) / len(array), mean_log)


def choose(
    config: Config, results: Sequence[tuple[Task, dict[str, list[tuple[str, float]]]]]
) -> tuple[dict[str, dict[str, PeerConfig]], dict[str, dict[str, Any]]]:
    """Per peer and rate, the chosen configuration; and what the tuning saw of it."""
    chosen: dict[str, dict[str, PeerConfig]] = {}
    tuning: dict[str, dict[str, Any]] = {}
    for peer in PEERS:
        configs = peer.configs(config.small_grids)
        chosen[peer.name], tuning[peer.name] = {}, {}
        for rate in config.rates:
            aa = [r[peer.name] for t, r in results if t.rate == rate and t.scenario == "aa"]
            if not aa:  # no scenario of the benchmark's world: the peers do not run
                continue
            regressed = [r[peer.name] for t, r in results if t.rate == rate and t.scenario != "aa"]
            false_rate = [
                sum(runs[c][0] == ROLLED_BACK for runs in aa) / max(len(aa), 1)
                for c in range(len(configs))
            ]
            objective = [
                _objective(
                    [runs[c][1] if runs[c][0] == ROLLED_BACK else math.inf for runs in regressed]
                    or [math.inf]
                )
                for c in range(len(configs))
            ]
            feasible = [c for c in range(len(configs)) if false_rate[c] <= MAX_FALSE_ROLLBACKS]
            if feasible:
                best = min(feasible, key=lambda c: objective[c])
            else:
                best = min(range(len(configs)), key=lambda c: (false_rate[c], objective[c]))
            median = objective[best][0]
            chosen[peer.name][rate_key(rate)] = configs[best]
            tuning[peer.name][rate_key(rate)] = {
                "config": configs[best],
                "configurations_tried": len(configs),
                "qualifying": len(feasible),
                "reaches_target": bool(feasible),
                "aa_rollouts": len(aa),
                "false_rollback_rate": false_rate[best],
                "regressed_rollouts": len(regressed),
                "detect_median_s": median if math.isfinite(median) else None,
                "caught_rate": -objective[best][1],
            }
    return chosen, tuning


def tuning_lines(tuning: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    for peer, by_rate in tuning.items():
        for rate, t in by_rate.items():
            verdict = (
                f"{t['qualifying']} of {t['configurations_tried']} configurations reach "
                f"<= {MAX_FALSE_ROLLBACKS:.0%} false rollbacks"
                if t["reaches_target"]
                else f"NO configuration of its knobs reaches <= {MAX_FALSE_ROLLBACKS:.0%} false "
                f"rollbacks (of {t['configurations_tried']}); the fewest"
            )
            lines.append(
                f"{peer} @ {rate}: {verdict}; chosen: {config_text(t['config'])} "
                f"(tuning: {t['false_rollback_rate']:.1%} of {t['aa_rollouts']} A/A rolled back, "
                f"{t['caught_rate']:.0%} of {t['regressed_rollouts']} regressions caught)"
            )
    return lines


def wilson(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion.

    centre = (p + z²/2n) / (1 + z²/n), half-width = z / (1 + z²/n) · sqrt(p(1-p)/n + z²/4n²)
    """
    if n == 0:
        return (0.0, 1.0)
    z = float(stats.norm.isf((1 - confidence) / 2))
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (max(0.0, centre - half), min(1.0, centre + half))


def _quantile(values: Sequence[float], q: float) -> float | None:
    return float(np.quantile(np.array(values), q)) if values else None


def blocking_cells(
    outcomes: Sequence[Outcome], every: float, top: int = 12
) -> list[dict[str, Any]]:
    """The cells that held ours' steps past their holds: in how many rollouts, for how long.

    A look counts against a cell when the step's hold had passed and the cell was
    what the engine still waited for (before 100 %: neither PASSed nor powered;
    before another step: below `minSamples`). `every`: the seconds between looks.
    """
    looks: dict[tuple[str, str], list[int]] = {}
    for o in outcomes:
        for metric, cohort, count in o.blocked_by:
            looks.setdefault((metric, cohort), []).append(count)
    rows: list[dict[str, Any]] = [
        {
            "metric": metric,
            "cohort": cohort,
            "rollouts": len(counts),
            "median_minutes": float(np.median(counts)) * every / 60,
            "p90_minutes": float(np.quantile(counts, 0.9)) * every / 60,
        }
        for (metric, cohort), counts in looks.items()
    ]
    rows.sort(key=lambda r: (-r["rollouts"], -r["median_minutes"], r["metric"], r["cohort"]))
    return rows[:top]


def _weights(outcomes: Sequence[Outcome]) -> list[int]:
    return sorted({o.weight for o in outcomes})


def cell_figures(
    outcomes: Sequence[Outcome],
    healthy: bool,
    deadline_s: float = DEADLINE_S,
    every: float = 60,
) -> dict[str, Any]:
    """One scenario's figures at one rate; `every`: the seconds between ours' looks."""
    n = len(outcomes)
    rolled = [o for o in outcomes if o.result == ROLLED_BACK]
    promoted = [o for o in outcomes if o.result == PROMOTED]
    held = n - len(rolled) - len(promoted)
    out: dict[str, Any] = {
        "rollouts": n,
        "rolled_back": len(rolled),
        "promoted": len(promoted),
        "held": held,
        "hold_rate": held / n if n else None,
        "results": {
            r: sum(o.result == r for o in outcomes) for r in sorted({o.result for o in outcomes})
        },
        # how far the rollouts got: the candidate's weight (%) when each ended
        "final_weight": {str(w): sum(o.weight == w for o in outcomes) for w in _weights(outcomes)},
    }
    if any(o.blocked_by for o in outcomes):
        out["blocked_by"] = blocking_cells(outcomes, every)
    if healthy:
        low, high = wilson(len(rolled), n)
        out["false_rollback_rate"] = len(rolled) / n if n else None
        out["false_rollback_wilson95"] = [low, high]
        times = [o.seconds for o in promoted]
        out["promote_rate"] = len(promoted) / n if n else None
        out["promote_median_s"] = _quantile(times, 0.5)
        out["promote_p90_s"] = _quantile(times, 0.9)
        # over every rollout, one not promoted counting as never (inf): the goal's median
        everyone = [o.seconds if o.result == PROMOTED else math.inf for o in outcomes]
        median_all = float(np.median(everyone)) if everyone else math.inf
        out["promote_median_all_s"] = median_all if math.isfinite(median_all) else None
        out["promoted_by_deadline_rate"] = (
            sum(o.result == PROMOTED and o.seconds <= deadline_s for o in outcomes) / n
            if n
            else None
        )
    else:
        times = [o.seconds for o in rolled]
        out["detect_rate"] = len(rolled) / n if n else None
        out["detect_median_s"] = _quantile(times, 0.5)
        out["detect_p90_s"] = _quantile(times, 0.9)
        out["detect_s"] = sorted(times)  # every detection, for pooled figures
        out["miss_rate"] = len(promoted) / n if n else None
        served = [o.affected_served for o in outcomes]
        out["harmed_served_median"] = _quantile(served, 0.5)
        out["harmed_served_p90"] = _quantile(served, 0.9)
    return out


# --- floors ---------------------------------------------------------------------------------

Z_POWER = float(stats.norm.isf(0.20))  # power 0.8
Z_P95 = float(stats.norm.isf(0.05))  # the baseline's p95 in standard units


def cell_alpha(world: World = BENCH_WORLD) -> float:
    """The alpha of one cell's test under the world's policy: the budget split evenly
    (Bonferroni) over every metric in every cohort and overall."""
    spec = bench_rollout(world).spec
    tests = len(spec.analysis.metrics) * (len(spec.cohorts) + 1)
    return (1.0 - spec.analysis.confidence) / tests


def refusal_tolerance(world: World = BENCH_WORLD) -> float:
    """The judge's default tolerance of the world's refusal-rate `maxIncrease`: half of it."""
    spec = bench_rollout(world).spec
    [refusals] = [m for m in spec.analysis.metrics if m.template == "refusal-rate"]
    assert refusals.max_increase is not None
    return refusals.max_increase / 2


def _h(p0: float, p1: float) -> float:
    """Cohen's h: the effect size of two proportions on the arcsine scale."""
    return abs(2 * math.asin(math.sqrt(p1)) - 2 * math.asin(math.sqrt(p0)))


def _share_beyond_p95(ratio: float) -> float:
    """The share of a cohort's requests slower than the baseline's p95 when the p95 is `ratio`
    times the baseline's, median unchanged (lognormal)."""
    sigma = TTFT_SIGMA + math.log(ratio) / Z_P95
    return float(stats.norm.sf(Z_P95 * TTFT_SIGMA / sigma))


@dataclass(frozen=True)
class FloorTest:
    """One fixed-sample, one-sided test of a regression's hypotheses (see `floor_test`).

    On the test's scale one candidate observation has variance 1, and the contrast
    after `n_c` candidate and `n_b` baseline observations has variance
    `1 / n_c + baseline_weight / n_b`. The test has its power once that variance
    is at most `1 / known`: `known` is the number of candidate observations it
    needs when the baseline is known exactly (`n_b` infinite).
    """

    known: float
    #: c²: the variance one baseline observation adds to the contrast, in units of one
    #: candidate observation's (0: the null does not depend on the baseline)
    baseline_weight: float
    #: observations per request of the harmed cohorts (both versions alike)
    per_request: float


def effective_share(candidate: float, baseline: float, baseline_weight: float) -> float:
    """The candidate observations a known-baseline test would need that one request's worth
    of traffic is worth, when the candidate gets `candidate` and the baseline `baseline` of
    it: `1 / (1 / candidate + c² / baseline)` (the information of the two-sample contrast,
    in candidate observations). It tends to `candidate` as the baseline's share grows
    (`candidate` → 0 in a step of weight w → 0, or c² = 0), and is half of it when the two
    get the same (a shadow at mirror 100 %) and c² = 1."""
    if candidate <= 0:
        return 0.0
    if baseline_weight == 0:
        return candidate
    if baseline <= 0:
        return 0.0
    return 1.0 / (1.0 / candidate + baseline_weight / baseline)


def floor_test(scenario: Scenario, *, at_tolerance: bool, alpha: float) -> FloorTest:
    """The fixed-sample test of the scenario's hypotheses at level `alpha`, power 0.8.

    It knows the true effect and which cohort to look at, and it looks once: a
    floor, not a policy anyone could run. Its null is the tolerance the limit's
    own test takes (`at_tolerance`) or "no change" (today's oracle); the
    alternative is the scenario's true effect. On a variance-stabilising scale g
    (the arcsine `2 asin √p` for a proportion, where one observation has
    variance 1; the score itself for a mean), the statistic is
    `T = g(p̂_c) − g(null(p̂_b))`: the candidate's estimate against the null
    evaluated at the baseline's *estimate*, because no test of these hypotheses
    knows the baseline. By the delta method its variance, in units of one
    candidate observation's, is `1 / n_c + c² / n_b`, where c² is what one
    baseline observation adds through `g(null(p̂_b))` (for a proportion
    `(g'(p0) · null'(p_b))² · p_b(1 − p_b)`, p0 the null value), and
    the test has power 0.8 once `1 / n_c + c² / n_b ≤ 1 / known`, where
    `known = ((z_α + z_0.2) / Δ)²` and Δ = g(p1) − g(p0) is the one-sample
    Cohen's h (or `δ / σ_c` for a mean):

    - relative limits (`maxIncrease`, `maxDecrease`; "no change" for the
      oracle): null `p_b + τ`, `null' = 1`, so `c² = p_b(1 − p_b) / (p0(1 − p0))`
      for a proportion (1 for the oracle, τ = 0) and `σ_b² / σ_c²` for a mean;
    - `maxRatio` on a p95, tested as the share of candidate requests beyond the
      baseline's p95 `q̂_b` (null: the share a candidate at the tolerance ratio
      has, p0): `q̂_b` has variance `0.05 · 0.95 / (n_b f_b(q)²)`, moving the
      share by `f_0(q)` per unit, so `c² = (f_0(q) / f_b(q))² · 0.05 · 0.95 /
      (p0(1 − p0))` (1 for the oracle);
    - an absolute `max`: the limit itself does not depend on the baseline, but
      the judge's tolerance does ("the baseline's own value plus half the gap",
      `(p_b + max) / 2`), so `null' = 1/2` and
      `c² = p_b(1 − p_b) / (4 p0(1 − p0))`; the oracle's "no change" is `p_b`
      (c² = 1).

    With the known-baseline `known` candidate observations as `n_b` → ∞ this is
    the one-sample test of earlier floors; `floor_seconds` spends the
    schedule's actual allocation of requests on it (`effective_share`).
    """
    change = scenario.change
    world = scenario.in_world
    harmed = scenario.harmed
    shares = np.array([world.shares[k] for k in harmed])
    shares = shares / shares.sum()
    z2 = (float(stats.norm.isf(alpha)) + Z_POWER) ** 2

    def proportion(p0: float, p1: float, base: float, slope: float, per: float) -> FloorTest:
        c2 = slope**2 * base * (1 - base) / (p0 * (1 - p0))
        return FloorTest(z2 / _h(p0, p1) ** 2, c2, per)

    if change.error_to is not None:
        if at_tolerance:  # the judge's tolerance of `max`: (p_b + max) / 2
            return proportion(TOLERANCE_ERROR, change.error_to, BASE_ERROR, 0.5, 1.0)
        return proportion(BASE_ERROR, change.error_to, BASE_ERROR, 1.0, 1.0)
    if change.refusal_add:
        base = float(sum(s * world.refusal[k] for s, k in zip(shares, harmed, strict=True)))
        p0 = base + (refusal_tolerance(world) if at_tolerance else 0.0)
        return proportion(p0, base + change.refusal_add, base, 1.0, 1.0 - BASE_ERROR)
    if change.ttft_tail_ratio != 1.0:
        sigma = candidate_behaviour(harmed[0], change).ttft_sigma
        p1 = float(stats.norm.sf(Z_P95 * TTFT_SIGMA / sigma))
        ratio = TOLERANCE_TTFT_RATIO if at_tolerance else 1.0
        sigma0 = TTFT_SIGMA + math.log(ratio) / Z_P95
        p0 = float(stats.norm.sf(Z_P95 * TTFT_SIGMA / sigma0))
        # densities at the baseline's p95 q (lognormal, same median; the 1/q cancels)
        f0 = float(stats.norm.pdf(Z_P95 * TTFT_SIGMA / sigma0)) / sigma0
        fb = float(stats.norm.pdf(Z_P95)) / TTFT_SIGMA
        c2 = (f0 / fb) ** 2 * 0.05 * 0.95 / (p0 * (1 - p0))
        return FloorTest(z2 / _h(p0, p1) ** 2, c2, 1.0 - BASE_ERROR)
    if change.quality_add:
        m = float(sum(s * world.quality_mean[k] for s, k in zip(shares, harmed, strict=True)))
        variance_b = m * (1 - m) / (QUALITY_CONCENTRATION + 1)
        m1 = m + change.quality_add
        variance_c = m1 * (1 - m1) / (QUALITY_CONCENTRATION + 1)
        delta = abs(change.quality_add) - (TOLERANCE_QUALITY if at_tolerance else 0.0)
        per = JUDGED_SHARE * (1.0 - BASE_ERROR)
        return FloorTest(z2 * variance_c / delta**2, variance_b / variance_c, per)
    raise ValueError(f"{scenario.name} has no effect to detect")


def oracle_test(scenario: Scenario) -> FloorTest:
    """Today's floor: null "no change", alpha 0.05 (the baseline estimated, like the floor)."""
    return floor_test(scenario, at_tolerance=False, alpha=0.05)


@dataclass(frozen=True)
class Stretch:
    """A part of the nominal schedule: each cohort's share of its requests that the
    candidate answers and that the baseline answers, and how long it lasts."""

    candidate: tuple[float, ...]
    baseline: tuple[float, ...]
    minutes: float


def nominal_schedule(world: World) -> list[Stretch]:
    """The world's policy on its nominal schedule: the shadow (the candidate answers the
    mirrored share, the baseline every request), then each step before 100 % (the
    candidate its weight, the baseline the rest). At 100 % the baseline answers nothing,
    so no two-sample test learns anything there, and the engine does not go there before
    its cells are decided: the last step before it lasts forever."""
    spec = bench_rollout(world).spec
    out: list[Stretch] = []
    everyone = tuple(1.0 for _ in world.cohorts)
    if spec.shadow is not None:
        mirror = spec.shadow.mirror_percent / 100
        minutes = spec.shadow.duration.total_seconds() / 60
        out.append(Stretch(tuple(mirror for _ in world.cohorts), everyone, minutes))
    steps = [s for s in spec.steps if s.weight < 100 or s.cohort_weights]
    for i, step in enumerate(steps):
        weights = tuple(step.cohort_weights.get(c, step.weight) / 100 for c in world.cohorts)
        last = i == len(steps) - 1
        minutes = math.inf if last else step.hold.total_seconds() / 60
        out.append(Stretch(weights, tuple(1.0 - w for w in weights), minutes))
    return out


def samples_seconds(scenario: Scenario, rate: float, test: FloorTest) -> float:
    """When the nominal schedule (mean rate) has given `test` its power: the stretches'
    information, stratified by stretch and harmed cohort (an inverse-variance weighted
    contrast, which pools nothing across different allocations), reaches `test.known`."""
    world = scenario.in_world
    needed = test.known
    elapsed = 0.0
    for stretch in nominal_schedule(world):
        per_second = sum(
            rate
            * world.shares[k]
            * test.per_request
            * effective_share(stretch.candidate[k], stretch.baseline[k], test.baseline_weight)
            for k in scenario.harmed
        )
        if per_second > 0 and needed <= per_second * stretch.minutes * 60:
            return elapsed + needed / per_second
        needed -= per_second * stretch.minutes * 60
        elapsed += stretch.minutes * 60
    return math.inf  # the schedule never gives the harmed cohorts a contrast


def oracle_seconds(scenario: Scenario, rate: float) -> float:
    return samples_seconds(scenario, rate, oracle_test(scenario))


def floor_seconds(scenario: Scenario, rate: float) -> float:
    test = floor_test(scenario, at_tolerance=True, alpha=cell_alpha(scenario.in_world))
    return samples_seconds(scenario, rate, test)


# --- report -------------------------------------------------------------------------------


def _median_or_none(values: Sequence[float]) -> float | None:
    return float(np.median(values)) if values else None


def summarise(
    config: Config,
    results: Sequence[tuple[Task, dict[str, Outcome]]],
    chosen: dict[str, dict[str, PeerConfig]],
) -> dict[str, Any]:
    cells: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in ENGINE_NAMES}
    for name in config.scenarios:
        scenario = SCENARIO_BY_NAME[name]
        for rate in config.rates:
            mine = [o for t, o in results if t.scenario == name and t.rate == rate]
            for engine in ENGINE_NAMES:
                deadline = bench_rollout(scenario.in_world).spec.deadline.total_seconds()
                cells[engine][key(name, rate)] = cell_figures(
                    [o[engine] for o in mine if engine in o],
                    scenario.healthy,
                    deadline,
                    look_seconds(scenario.in_world),
                )
    regressions = [
        key(s, r) for s in config.scenarios for r in config.rates if not SCENARIO_BY_NAME[s].healthy
    ]
    engines: dict[str, Any] = {}
    for engine in ENGINE_NAMES:
        aa = [o[engine] for t, o in results if t.scenario == "aa" and engine in o]
        rolled = sum(o.result == ROLLED_BACK for o in aa)
        engines[engine] = {
            "false_rollback_rate": rolled / len(aa) if aa else None,
            "false_rollback_upper95": wilson(rolled, len(aa))[1],
            "detect_median_s": {k: cells[engine][k]["detect_median_s"] for k in regressions},
            "caught_rate": {k: cells[engine][k]["detect_rate"] for k in regressions},
            "promote_median_s": _median_or_none([o.seconds for o in aa if o.result == PROMOTED]),
            "config": (
                {"policy": "bench.detection_engines.POLICY (in this report's `policy`)"}
                if engine == "ours"
                else chosen[engine]
            ),
        }
    floors = {
        key(s, r): floor_seconds(SCENARIO_BY_NAME[s], r)
        for s in config.scenarios
        for r in config.rates
        if not SCENARIO_BY_NAME[s].healthy
    }
    oracle = {
        key(s, r): oracle_seconds(SCENARIO_BY_NAME[s], r)
        for s in config.scenarios
        for r in config.rates
        if not SCENARIO_BY_NAME[s].healthy
    }
    return {"engines": engines, "floor_s": floors, "oracle_detect_s": oracle, "cells": cells}


def _fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _fmt_p(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f} %"


def _fmt_weights(counts: dict[str, int]) -> str:
    return ", ".join(f"{w} %: {n}" for w, n in counts.items())


def every(report: dict[str, Any], k: str) -> float:
    """The seconds between ours' looks in the run of cell key `k` (a report written before
    the look followed the policy's interval looked once a minute everywhere)."""
    return float(report.get("look_seconds", {}).get(k.split("@", 1)[0], 60))


def _ratio(mine: float | None, floor: float, look: float) -> str:
    """Ours' median over the floor, and over the floor rounded up to the first look."""
    if mine is None:
        return "—"
    at_look = math.ceil(floor / look) * look
    return f"{mine / floor:.2f}× ({mine / at_look:.2f}×)"


def floors_note(report: dict[str, Any]) -> str:
    """Where the report's floors come from, if not from the run that measured it."""
    recomputed = report.get("floors_recomputed")
    if recomputed is None:
        return ""
    return (
        f" The floors come from the code of commit {recomputed['commit']}, recomputed by "
        "`--render` after the run (the run's own floors: `floor_s_as_run`, "
        "`oracle_detect_s_as_run` in the JSON)."
    )


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def peer_lines(report: dict[str, Any]) -> list[str]:
    """The peers' chosen configurations, or that they did not run."""
    if not any(report["tuning"].values()):
        return ["", "The peers did not run: no scenario of the benchmark's world was run."]
    lines = [
        "",
        "## The peers' configurations, chosen per rate on the tuning streams",
        "",
        _row(["peer", "rate", "chosen configuration", "qualifying (≤ 5 % A/A)", "tuning A/A"]),
        _row(["---"] * 5),
    ]
    for peer, by_rate in report["tuning"].items():
        for rate, t in by_rate.items():
            lines.append(
                _row(
                    [
                        peer,
                        rate,
                        f"`{config_text(t['config'])}`",
                        f"{t['qualifying']} of {t['configurations_tried']}"
                        + ("" if t["reaches_target"] else " — **none reaches it**"),
                        f"{_fmt_p(t['false_rollback_rate'])} of {t['aa_rollouts']}",
                    ]
                )
            )
    return lines


def false_rollback_lines(report: dict[str, Any]) -> list[str]:
    """Every engine's false rollbacks on the benchmark's A/A rollouts, if `aa` was run."""
    config, cells = report["config"], report["cells"]
    if not any(key("aa", rate) in cells.get("ours", {}) for rate in config["rates"]):
        return []
    rates = [rate_key(r) for r in config["rates"]]
    lines = [
        "",
        "## False rollbacks on A/A rollouts, per rate [95 % Wilson interval]",
        "",
        _row(["engine", *rates, "all rates"]),
        _row(["---"] * (len(rates) + 2)),
    ]
    for engine, e in report["engines"].items():
        row = [engine]
        for rate in config["rates"]:
            c = cells[engine].get(key("aa", rate))
            if c is None:
                row.append("—")
                continue
            low, high = c["false_rollback_wilson95"]
            row.append(f"{_fmt_p(c['false_rollback_rate'])} [{_fmt_p(low)}, {_fmt_p(high)}]")
        row.append(f"{_fmt_p(e['false_rollback_rate'])} (≤ {_fmt_p(e['false_rollback_upper95'])})")
        lines.append(_row(row))
    return lines


def markdown(report: dict[str, Any]) -> str:
    config = report["config"]
    engines = list(report["engines"])
    regressions = list(report["floor_s"])
    cells = report["cells"]
    lines = [
        "# Detection benchmark",
        "",
        f"{report['machine']} · {report['runtime_s'] / 60:.1f} min wall "
        f"(tuning {report['tuning_s'] / 60:.1f} min) · commit {report['commit']} "
        f"(judge and engine as of {report['judge_commit']}) · evaluation: "
        f"{config['aa_rollouts']} A/A and {config['rollouts']} other rollouts per scenario "
        f"and rate ({', '.join(f'{r:g}' for r in config['rates'])} req/s); tuning: "
        f"{config['tune_aa_rollouts']} A/A and {config['tune_rollouts']} per regression "
        f"and rate, other seeds; horizon {config['horizon_minutes']} min, seed {config['seed']}. "
        "Generated by `python -m bench.detection`; how to read it: docs/benchmarks.md.",
    ]
    lines += peer_lines(report) + false_rollback_lines(report)
    lines += [
        "",
        "## Median time to detect (share of regressed rollouts caught)",
        "",
        "Floor: the fixed-sample two-sample test of the limit's hypotheses (null at the "
        "tolerance, the cell's alpha: "
        + ", ".join(
            f"{w} world {a:.2g}"
            for w, a in report.get("cell_alpha_by_world", {"bench": report["cell_alpha"]}).items()
        )
        + "; power 0.8, the baseline estimated from its own requests); oracle: the same "
        'with null "no change" at alpha 0.05 (today\'s floor). '
        "Ours × floor: ours' median over the floor, "
        "and (in brackets) over the floor rounded up to ours' first look at or after it "
        "(ours looks once per its policy's interval: "
        + ", ".join(f"{k.split('@')[0]} {every(report, k):.0f} s" for k in regressions)
        + "; the peers once a minute); ours × oracle: ours' median over the oracle."
        + floors_note(report),
        "",
        _row(["scenario", "floor", "oracle", "ours × floor", "ours × oracle", *engines]),
        _row(["---"] * (len(engines) + 5)),
    ]
    for k in regressions:
        floor = report["floor_s"][k]
        oracle = report["oracle_detect_s"][k]
        mine = cells.get("ours", {}).get(k, {}).get("detect_median_s")
        lines.append(
            _row(
                [
                    k,
                    _fmt_s(floor),
                    _fmt_s(oracle),
                    _ratio(mine, floor, every(report, k)),
                    "—" if mine is None else f"{mine / oracle:.2f}×",
                    *(
                        f"{_fmt_s(cells[e][k]['detect_median_s'])} "
                        f"({_fmt_p(cells[e][k]['detect_rate'])})"
                        if cells[e][k]["rollouts"]
                        else "not run"
                        for e in engines
                    ),
                ]
            )
        )
    lines += [
        "",
        "## Healthy scenarios",
        "",
        _row(
            [
                "scenario",
                "engine",
                "rollouts",
                "false rollbacks [95 % Wilson]",
                "promoted",
                "promote median / p90",
                "promoted by the deadline",
                "median to 100 %, all rollouts",
                "held",
                "ended at weight",
            ]
        ),
        _row(["---"] * 10),
    ]
    for engine, by_key in cells.items():
        for k, c in by_key.items():
            if "false_rollback_rate" not in c or not c["rollouts"]:
                continue
            low, high = c["false_rollback_wilson95"]
            lines.append(
                _row(
                    [
                        k,
                        engine,
                        str(c["rollouts"]),
                        f"{_fmt_p(c['false_rollback_rate'])} [{_fmt_p(low)}, {_fmt_p(high)}]",
                        _fmt_p(c["promote_rate"]),
                        f"{_fmt_s(c['promote_median_s'])} / {_fmt_s(c['promote_p90_s'])}",
                        _fmt_p(c.get("promoted_by_deadline_rate")),
                        _fmt_s(c.get("promote_median_all_s")),
                        _fmt_p(c["hold_rate"]),
                        _fmt_weights(c["final_weight"]),
                    ]
                )
            )
    lines += readme_lines(report)
    held = [(k, c["blocked_by"]) for k, c in cells.get("ours", {}).items() if "blocked_by" in c]
    if held:
        lines += [
            "",
            "## What held ours' steps past their holds",
            "",
            "Per scenario, the cells the engine still waited for once a step's hold had "
            "passed (before 100 %: neither PASSed nor powered; before another step: below "
            "`minSamples`): in how many rollouts, and for how many minutes (median / p90 "
            "over those rollouts).",
            "",
            _row(["scenario", "metric", "cohort", "rollouts", "minutes held, median / p90"]),
            _row(["---"] * 5),
        ]
        for k, rows in held:
            for r in rows:
                lines.append(
                    _row(
                        [
                            k,
                            r["metric"],
                            r["cohort"],
                            str(r["rollouts"]),
                            f"{r['median_minutes']:.0f} / {r['p90_minutes']:.0f}",
                        ]
                    )
                )
    lines += [
        "",
        "## Regressions",
        "",
        _row(
            [
                "scenario",
                "engine",
                "rollouts",
                "caught",
                "detect median / p90",
                "floor",
                "missed (promoted)",
                "held",
                "harmed requests served, median / p90",
                "ended at weight",
            ]
        ),
        _row(["---"] * 10),
    ]
    for engine, by_key in cells.items():
        for k, c in by_key.items():
            if "detect_rate" not in c or not c["rollouts"]:
                continue
            lines.append(
                _row(
                    [
                        k,
                        engine,
                        str(c["rollouts"]),
                        _fmt_p(c["detect_rate"]),
                        f"{_fmt_s(c['detect_median_s'])} / {_fmt_s(c['detect_p90_s'])}",
                        _fmt_s(report["floor_s"][k]),
                        _fmt_p(c["miss_rate"]),
                        _fmt_p(c["hold_rate"]),
                        f"{c['harmed_served_median']:.0f} / {c['harmed_served_p90']:.0f}",
                        _fmt_weights(c["final_weight"]),
                    ]
                )
            )
    lines.append("")
    return "\n".join(lines)


def in_bench_world(report: dict[str, Any], k: str) -> bool:
    """Is cell key `k` of the benchmark's own world (every engine), not a family of ours alone?"""
    scenario = k.split("@", 1)[0]
    return bool(report.get("worlds", {}).get(scenario, BENCH_WORLD.name) == BENCH_WORLD.name)


def readme_lines(report: dict[str, Any]) -> list[str]:
    """The README policy family against its goal, if the report has it."""
    readme = report.get("readme_policy")
    ours = report["cells"].get("ours", {})
    keys = [k for k in ours if k.startswith("readme-") and ours[k]["rollouts"]]
    if readme is None or not keys:
        return []
    holds, deadline = readme["holds_minutes"], readme["deadline_minutes"]
    goal = README_GOAL_FACTOR * holds
    lines = [
        "",
        "## The README's example policy (ours alone)",
        "",
        f"`policies/gateway-api-cohorts.yaml` as it is: holds {holds:.0f} min with the shadow, "
        f"deadline {deadline:.0f} min. Goal: a healthy candidate's median time to 100 % "
        f"(over every rollout, one not promoted counting as never) within "
        f"{README_GOAL_FACTOR:g} × the holds = {goal:.1f} min, and 95 % promoted before "
        "the deadline. The peers did not run this family.",
        "",
        _row(["scenario", "rollouts", "result", "median / p90", "goal", "met"]),
        _row(["---"] * 6),
    ]
    for k in keys:
        c = ours[k]
        if "false_rollback_rate" in c:
            low, high = c["false_rollback_wilson95"]
            median = c.get("promote_median_all_s")
            by_deadline = c.get("promoted_by_deadline_rate") or 0.0
            met = median is not None and median <= goal * 60 and by_deadline >= 0.95
            lines.append(
                _row(
                    [
                        k,
                        str(c["rollouts"]),
                        f"promoted {_fmt_p(c['promote_rate'])}, by the deadline "
                        f"{_fmt_p(by_deadline)}; rolled back {_fmt_p(c['false_rollback_rate'])} "
                        f"[{_fmt_p(low)}, {_fmt_p(high)}]",
                        f"{_fmt_s(median)} / {_fmt_s(c['promote_p90_s'])} to 100 %",
                        f"≤ {goal:.1f} min, ≥ 95 % by the deadline",
                        "yes" if met else "**no**",
                    ]
                )
            )
        else:
            floor = report["floor_s"][k]
            mine = c["detect_median_s"]
            ratio = _ratio(mine, floor, every(report, k))
            lines.append(
                _row(
                    [
                        k,
                        str(c["rollouts"]),
                        f"caught {_fmt_p(c['detect_rate'])}",
                        f"{_fmt_s(mine)} / {_fmt_s(c['detect_p90_s'])} to detect",
                        f"≤ 2 × floor ({_fmt_s(floor)})",
                        ratio,
                    ]
                )
            )
    return lines


def pooled_median(report: dict[str, Any], engine: str, rate: float) -> float:
    """The median time to detect over every regressed rollout of the benchmark's world at
    `rate`, a miss counting as never (inf): the figure the peers were tuned on."""
    times: list[float] = []
    for k in report["floor_s"]:
        if k.endswith(f"@{rate:g}rps") and in_bench_world(report, k):
            cell = report["cells"][engine][k]
            times += cell["detect_s"] + [math.inf] * (cell["rollouts"] - len(cell["detect_s"]))
    return float(np.median(times)) if times else math.inf


def plot(report: dict[str, Any], path: Path) -> None:
    """One panel per rate: each engine's median detection time over the regressions
    (misses count as never) against its A/A false rollbacks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = report["config"]["rates"]
    horizon = report["config"]["horizon_minutes"]
    fig, axes = plt.subplots(1, len(rates), figsize=(5 * len(rates), 5), sharey=True, squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    top = horizon * 1.4
    lowest = horizon
    for ax, rate in zip(axes[0], rates, strict=True):
        nevers = 0
        for e_index, engine in enumerate(report["engines"]):
            cells = report["cells"][engine]
            aa = cells.get(key("aa", rate))
            regressed = [
                k
                for k in report["floor_s"]
                if k.endswith(f"@{rate:g}rps") and in_bench_world(report, k)
            ]
            if aa is None or not regressed:
                continue
            caught = float(np.mean([cells[k]["detect_rate"] for k in regressed]))
            median = pooled_median(report, engine, rate)
            never = not math.isfinite(median)
            x = 100 * aa["false_rollback_rate"]
            low, high = (100 * v for v in aa["false_rollback_wilson95"])
            y = top if never else median / 60
            lowest = min(lowest, y)
            ax.errorbar(
                x,
                y,
                xerr=[[max(x - low, 0.0)], [max(high - x, 0.0)]],
                fmt="^" if never else "o",
                color=colours[e_index % len(colours)],
                capsize=3,
            )
            nevers += never
            ax.annotate(
                f"{engine} ({100 * caught:.0f} % caught)",
                (x, y),
                textcoords="offset points",
                xytext=(-10, 8 + 10 * nevers) if never else (5, 4),
                fontsize=7,
                color=colours[e_index % len(colours)],
            )
        floors = [
            v
            for k, v in report["floor_s"].items()
            if k.endswith(f"@{rate:g}rps") and in_bench_world(report, k)
        ]
        if floors:
            floor = float(np.median(floors)) / 60
            ax.axhline(floor, linestyle=":", color="grey", linewidth=1)
            ax.annotate(
                "floor (median over the regressions)",
                (0, floor),
                textcoords="offset points",
                xytext=(2, -9),
                fontsize=7,
                color="grey",
            )
        ax.axhline(horizon, linestyle="-", color="lightgrey", linewidth=1)
        ax.axvline(100 * MAX_FALSE_ROLLBACKS, linestyle="--", color="grey", linewidth=1)
        ax.set_title(f"{rate:g} req/s", fontsize=10)
        ax.set_xlabel("A/A false rollbacks (%, 95 % Wilson)")
        ax.set_yscale("log")
        ax.set_xlim(left=-2)
    axes[0][0].set_ylim(lowest / 1.5, horizon * 4)
    axes[0][0].set_ylabel(
        f"median time to detect (min, log); triangles: most not caught in {horizon} min"
    )
    fig.suptitle("Detection time against false rollbacks, per engine (bench/detection.py)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _git(*args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args], capture_output=True, text=True, check=True, cwd=RESULTS.parent.parent
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return done.stdout.strip() or "unknown"


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({model or 'unknown'})"


def recompute_floors(report: dict[str, Any]) -> dict[str, Any]:
    """The report with its floors computed by the current code (`--render`).

    The floors are arithmetic on the scenarios and the policies, not measurements,
    so a run's rollouts can be read against a corrected floor without rolling them
    out again. The run's own floors are kept beside them (`floor_s_as_run`,
    `oracle_detect_s_as_run`), and the report says which commit computed the new ones.
    """
    out = dict(report)
    floors = {
        k: floor_seconds(SCENARIO_BY_NAME[k.split("@")[0]], _rate(k)) for k in report["floor_s"]
    }
    oracle = {
        k: oracle_seconds(SCENARIO_BY_NAME[k.split("@")[0]], _rate(k)) for k in report["floor_s"]
    }
    if floors == report["floor_s"] and oracle == report["oracle_detect_s"]:
        return out
    out.setdefault("floor_s_as_run", report["floor_s"])
    out.setdefault("oracle_detect_s_as_run", report["oracle_detect_s"])
    out["floor_s"], out["oracle_detect_s"] = floors, oracle
    out["floors_recomputed"] = {"commit": _git("rev-parse", "--short", "HEAD")}
    return out


def render(path: Path) -> None:
    """Write a result's .md and .png again, its floors from the current code."""
    report = recompute_floors(json.loads(path.read_text()))
    path.write_text(json.dumps(report, indent=2) + "\n")
    path.with_suffix(".md").write_text(markdown(report))
    plot(report, path.with_suffix(".png"))


def _rate(k: str) -> float:
    """The rate of cell key `k` (`scenario@100rps`)."""
    return float(k.split("@", 1)[1].removesuffix("rps"))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a reduced run; JSON on stdout")
    parser.add_argument("--aa-rollouts", type=int, help="evaluation A/A rollouts per rate")
    parser.add_argument(
        "--ours-aa-rollouts",
        type=int,
        help="evaluation A/A rollouts per rate for ours alone (default: the full run's 1,000, "
        "or --aa-rollouts when that is given)",
    )
    parser.add_argument("--rollouts", type=int, help="evaluation rollouts per rate, others")
    parser.add_argument(
        "--readme-aa-rollouts", type=int, help="evaluation rollouts per rate of readme-aa"
    )
    parser.add_argument("--tune-aa-rollouts", type=int, help="tuning A/A rollouts per rate")
    parser.add_argument("--tune-rollouts", type=int, help="tuning rollouts per regression, rate")
    parser.add_argument("--horizon-minutes", type=int)
    parser.add_argument("--rates", type=float, nargs="+")
    parser.add_argument("--scenarios", nargs="+", choices=[s.name for s in SCENARIOS])
    parser.add_argument("--workers", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory of the results")
    parser.add_argument(
        "--render", type=Path, metavar="JSON", help="only re-render the .md and .png of a result"
    )
    return parser


def config_of(args: argparse.Namespace) -> Config:
    """The run that the command line asks for: the full or quick run, with its overrides."""
    config = QUICK if args.quick else FULL
    overrides = {
        "aa_rollouts": args.aa_rollouts,
        "ours_aa_rollouts": args.ours_aa_rollouts,
        "rollouts": args.rollouts,
        "readme_aa_rollouts": args.readme_aa_rollouts,
        "tune_aa_rollouts": args.tune_aa_rollouts,
        "tune_rollouts": args.tune_rollouts,
        "horizon_minutes": args.horizon_minutes,
        "rates": tuple(args.rates) if args.rates else None,
        "scenarios": tuple(args.scenarios) if args.scenarios else None,
        "workers": args.workers,
        "seed": args.seed,
    }
    if args.aa_rollouts is not None and args.ours_aa_rollouts is None:
        # a smaller run asked for by --aa-rollouts must not still roll out 1,000 for ours
        overrides["ours_aa_rollouts"] = 0
    return replace(config, **{k: v for k, v in overrides.items() if v is not None})


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.render is not None:
        render(args.render)
        return 0
    config = config_of(args)
    bench_world = [n for n in config.scenarios if SCENARIO_BY_NAME[n].world == BENCH_WORLD.name]
    if bench_world and "aa" not in config.scenarios:
        parser.error(
            "scenarios of the benchmark's world need aa (the peers are tuned and the "
            "false-rollback rate is measured on it)"
        )
    log = sys.stderr
    print(f"[detection] {config}", file=log, flush=True)
    began = time.monotonic()
    # the code that runs is the code at the start: a run takes hours and main moves meanwhile
    commit = _git("rev-parse", "--short", "HEAD")
    judge_commit = _git(
        "log", "-1", "--format=%h", "--", "controller/analysis", "controller/engine"
    )
    tuned = list(
        _parallel(run_tuning, tuning_tasks(config), config.workers, "tuning the peers", log)
    )
    chosen, tuning = choose(config, tuned)
    tuning_s = time.monotonic() - began
    for line in tuning_lines(tuning):
        print(f"[detection] {line}", file=log, flush=True)
    results: list[tuple[Task, dict[str, Outcome]]] = []
    ours_cpu = 0.0
    for task, outcomes, ours_seconds in _parallel(
        run_evaluation, evaluation_tasks(config, chosen), config.workers, "evaluation", log
    ):
        results.append((task, outcomes))
        ours_cpu += ours_seconds
    results.sort(key=lambda r: (r[0].scenario, r[0].rate, r[0].index))
    runtime = time.monotonic() - began
    summary = summarise(config, results, chosen)
    report = {
        "engines": summary["engines"],
        "floor_s": summary["floor_s"],
        "oracle_detect_s": summary["oracle_detect_s"],
        "cell_alpha": cell_alpha(),
        "cell_alpha_by_world": {
            w: cell_alpha(WORLDS[w])
            for w in sorted({SCENARIO_BY_NAME[n].world for n in config.scenarios})
        },
        "tuning": tuning,
        "config": asdict(config),
        "runtime_s": runtime,
        "tuning_s": tuning_s,
        "ours_engine_cpu_s": ours_cpu,
        "machine": machine(),
        "commit": commit,
        "judge_commit": judge_commit,
        "policy": POLICY,
        "scenarios": {s.name: s.description for s in SCENARIOS if s.name in config.scenarios},
        "worlds": {s.name: s.world for s in SCENARIOS if s.name in config.scenarios},
        "look_seconds": {
            s.name: look_seconds(s.in_world) for s in SCENARIOS if s.name in config.scenarios
        },
        "readme_policy": {
            "holds_minutes": README_SPEC_HOLDS_MINUTES,
            "deadline_minutes": bench_rollout(README_WORLD).spec.deadline.total_seconds() / 60,
        },
        "cells": summary["cells"],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "detection-quick" if args.quick else "detection"
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(markdown(report))
    plot(report, args.out / f"{stem}.png")
    print(
        f"[detection] done in {runtime:.0f}s (tuning {tuning_s:.0f}s; ours: {ours_cpu:.0f} "
        f"CPU-s in the engine); wrote {args.out / stem}.json, .md, .png",
        file=log,
        flush=True,
    )
    for line in tuning_lines(tuning):
        print(line)
    line = {k: report[k] for k in ("engines", "floor_s", "oracle_detect_s")}
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
