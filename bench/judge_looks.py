"""What one look of the judge costs, and a fingerprint of what it decides.

The scale benchmark's policy (3 cohorts and overall, 4 built-in metrics, shadow
and 5 steps, `bench/scale_controller.py`) judged on seeded synthetic looks: each
cohort's baseline traffic drawn at random, the candidate's a quarter of it with
its rates or score/latency shapes pushed four ways (from the same to clearly
worse), and the counts split into 0, 1 or 5 traffic steps. No I/O: only
`controller.analysis.judge`.

It prints the judge's CPU per look (`time.process_time`, best of `--repeat`) and
a SHA-256 of every judgement's `repr`: run it on two commits to check that a
change to the judge's code left every verdict, e-value and number as it was.

    python -m bench.judge_looks --looks 200
"""

from __future__ import annotations

import argparse
import hashlib
import random
import time
from dataclasses import replace
from datetime import UTC, datetime

from bench.scale_controller import generate
from controller.analysis import Histogram, MetricObservation, Proportion, VersionData, judge
from controller.analysis.observations import Sample

#: cumulative shares of each histogram's buckets, and the mean of its values
SHAPES = {
    "quality-score": (
        (0.2, 0.4, 0.6, 0.8, 0.9, 1.0, float("inf")),
        (0.02, 0.05, 0.12, 0.35, 0.6, 1.0, 1.0),
        0.74,
    ),
    "latency-p95": (
        (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, float("inf")),
        (0.1, 0.4, 0.75, 0.93, 0.985, 0.998, 1.0),
        0.62,
    ),
}
RATES = {"refusal-rate": 0.05, "error-rate": 0.01}
#: the candidate's departures: (power on the cumulative shares, factor on rates and sums)
PUSHES = ((1.0, 1.0), (0.8, 1.3), (1.3, 0.8), (0.5, 3.0))
STEPS = (0, 1, 5)
AT = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def _baseline(rng: random.Random, metric: str) -> Sample:
    n = rng.uniform(500, 20_000)
    if metric in RATES:
        return Proportion(round(n * RATES[metric] * rng.uniform(0.8, 1.2)), round(n))
    bounds, shares, mean = SHAPES[metric]
    counts = tuple(float(round(n * s)) for s in shares)
    return Histogram(bounds, counts, counts[-1] * mean * rng.uniform(0.97, 1.03))


def _scaled(sample: Sample, share: float, power: float = 1.0, factor: float = 1.0) -> Sample:
    if isinstance(sample, Proportion):
        trials = sample.trials * share
        return Proportion(min(sample.events * share * factor, trials), trials)
    assert isinstance(sample, Histogram)
    total = sample.cumulative[-1]
    counts = tuple(total * share * (c / total) ** power for c in sample.cumulative)
    return Histogram(
        sample.bounds, counts, None if sample.sum is None else sample.sum * share * factor
    )


def _version(data: dict[str, Sample]) -> VersionData:
    return VersionData(dict(data), None, "")


def looks(
    count: int, seed: int
) -> list[tuple[dict[str, MetricObservation], list[dict[str, MetricObservation]]]]:
    """`count` × 12 looks: (observations, step_starts)."""
    rollout = next(iter(generate(1, 1.0).values()))
    cohorts = [c.name for c in rollout.spec.cohorts]
    metrics = [m.metric_name for m in rollout.spec.analysis.metrics]
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        base = {m: {c: _baseline(rng, m) for c in cohorts} for m in metrics}
        for power, factor in PUSHES:
            observations = {
                m: MetricObservation(
                    m,
                    _version(base[m]),
                    _version({c: _scaled(s, 0.25, power, factor) for c, s in base[m].items()}),
                )
                for m in metrics
            }
            for steps in STEPS:
                starts = [
                    {
                        m: replace(
                            o,
                            baseline=_version(
                                {
                                    c: _scaled(s, (i + 1) / (steps + 1))
                                    for c, s in o.baseline.by_cohort.items()
                                }  # type: ignore[union-attr]
                            ),
                            candidate=_version(
                                {
                                    c: _scaled(s, (i + 1) / (steps + 1))
                                    for c, s in o.candidate.by_cohort.items()
                                }  # type: ignore[union-attr]
                            ),
                        )
                        for m, o in observations.items()
                    }
                    for i in range(steps)
                ]
                out.append((observations, starts))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--looks", type=int, default=200, help="baselines drawn (12 looks each)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rollout = next(iter(generate(1, 1.0).values()))
    analysis, cohorts = rollout.spec.analysis, [c.name for c in rollout.spec.cohorts]
    cases = looks(args.looks, args.seed)
    digest = hashlib.sha256()
    for observations, starts in cases:
        judgement = judge(analysis, cohorts, observations, at=AT, step_starts=starts)
        digest.update(repr(judgement).encode())
    best = []
    for _ in range(args.repeat):
        started = time.process_time()
        for observations, starts in cases:
            judge(analysis, cohorts, observations, at=AT, step_starts=starts)
        best.append((time.process_time() - started) * 1000 / len(cases))
    print(
        f"{len(cases)} looks: judge {min(best):.2f} CPU ms per look (best of {args.repeat}: "
        f"{', '.join(f'{b:.2f}' for b in best)}); judgements sha256 {digest.hexdigest()[:16]}"
    )


if __name__ == "__main__":
    main()
