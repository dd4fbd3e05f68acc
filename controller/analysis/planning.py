"""How long a step must last: the judge's statistics, solved for time.

A platform engineer choosing `hold` durations needs to know how much traffic a
verdict takes. These functions answer with the same boundaries the judge uses
(`controller.analysis.sequential`): how many candidate requests until a healthy
candidate PASSes, or a regressed one FAILs, in 80 % of rollouts, and how many
minutes that is at a given request rate and weight.

Run `python -m controller.analysis.planning` to print the tables of
the README (How the judge decides).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from controller.analysis import estimators, sequential

#: z of the 80th percentile: "decided in 80 % of rollouts by then"
POWER_80 = 0.8416212335729143


@dataclass(frozen=True)
class Scenario:
    """A proportion metric under a relative limit, e.g. refusal-rate maxIncrease 0.02."""

    baseline_rate: float = 0.05
    max_increase: float = 0.02
    #: the candidate's true increase over the baseline (0: healthy)
    true_increase: float = 0.0
    confidence: float = 0.95
    #: how many (metric, cohort, limit) tests share the confidence budget
    tests: int = 16
    min_samples: int = 200
    #: the share of each test's alpha kept for the circuit breaker (as in the judge)
    breaker_share: float = 0.1

    @property
    def alpha(self) -> float:
        return (1.0 - self.confidence) / self.tests * (1.0 - self.breaker_share)


def candidate_samples(scenario: Scenario, weight: float, power_z: float = POWER_80) -> float:
    """Candidate requests until the verdict (PASS if healthy, FAIL if regressed).

    `weight` is the candidate's share of the cohort's traffic (0..1); the
    baseline gets the rest, which sets how precisely the baseline is known.
    The variance is the judge's null-restricted one, at the limit.
    """
    if not 0.0 < weight < 1.0:
        raise ValueError("the weight must be strictly between 0 and 1")
    margin = scenario.max_increase
    distance = abs(scenario.true_increase - margin)
    base0 = scenario.baseline_rate + scenario.true_increase * weight - margin * weight
    base0 = min(max(base0, 0.0), 1.0 - margin)
    cand0 = base0 + margin
    ratio = weight / (1.0 - weight)  # candidate requests per baseline request
    unit_variance = cand0 * (1 - cand0) + base0 * (1 - base0) * ratio
    tau = margin if margin > 0 else estimators.ZERO_MARGIN_TAU
    n = sequential.normal_mixture_samples_needed(
        distance, unit_variance, tau, scenario.alpha, power_z=power_z
    )
    return max(n, float(scenario.min_samples))


def minutes_to_verdict(
    scenario: Scenario, requests_per_second: float, weight: float, power_z: float = POWER_80
) -> float:
    """Minutes at `requests_per_second` (the cohort's traffic) and `weight` until the verdict."""
    n = candidate_samples(scenario, weight, power_z)
    return n / (requests_per_second * weight) / 60.0


def absolute_samples(
    true_rate: float, limit: float, confidence: float, tests: int, power_z: float = POWER_80
) -> float:
    """Candidate requests until the exact test PASSes a rate below an absolute `max`."""
    alpha = (1.0 - confidence) / tests * 0.9
    tau = estimators.absolute_tau(limit, fail_above=True)
    target = float(sequential.log_threshold(alpha))
    for n in np.unique(np.geomspace(10, 1e8, 2000).astype(int)):
        worst_events = n * true_rate + power_z * math.sqrt(n * true_rate * (1 - true_rate))
        if worst_events >= n * limit:
            continue
        log_e = float(sequential.beta_mixture_log_e(worst_events, n, limit, tau, above=False))
        if log_e >= target:
            return float(n)
    return math.inf


def _format_minutes(minutes: float) -> str:
    if not math.isfinite(minutes):
        return "never"
    if minutes < 1:
        return "< 1 min"
    if minutes < 120:
        return f"{minutes:.0f} min"
    if minutes < 48 * 60:
        return f"{minutes / 60:.1f} h"
    return f"{minutes / 1440:.0f} d"


def table(
    scenario: Scenario,
    rates: Sequence[float] = (1, 5, 20, 100, 500),
    weights: Sequence[float] = (0.01, 0.05, 0.2, 0.5),
) -> str:
    """A markdown table of minutes to a verdict by cohort traffic (rows) and weight (columns)."""
    header = "| cohort traffic | " + " | ".join(f"weight {w:.0%}" for w in weights) + " |"
    rule = "|---|" + "---|" * len(weights)
    rows = [header, rule]
    for rate in rates:
        cells = [_format_minutes(minutes_to_verdict(scenario, rate, w)) for w in weights]
        rows.append(f"| {rate:g} req/s | " + " | ".join(cells) + " |")
    return "\n".join(rows)


#: the example policy (policies/gateway-api-cohorts.yaml): 6 limits × (3 cohorts + overall)
EXAMPLE_TESTS = 24


def tables() -> str:
    """The step tables of the README (How the judge decides); a test keeps them in sync."""
    healthy = Scenario(tests=EXAMPLE_TESTS)
    regressed = Scenario(tests=EXAMPLE_TESTS, true_increase=0.04)
    tight = Scenario(tests=EXAMPLE_TESTS, max_increase=0.01, true_increase=0.02)
    parts = [
        "Healthy candidate (refusals 5 % on both versions), `refusal-rate maxIncrease: 0.02`,"
        " time until PASS:",
        table(healthy),
        "Regressed candidate (refusals 5 % → 9 %), same limit, time until FAIL:",
        table(regressed),
        "Regressed candidate (refusals 5 % → 7 %), `refusal-rate maxIncrease: 0.01`,"
        " time until FAIL:",
        table(tight),
        "`error-rate max: 0.01` with a true error rate of 0.2 %, candidate requests until PASS:",
        "| tests sharing the budget | candidate requests |\n|---|---|\n"
        + "\n".join(
            f"| {tests} | {absolute_samples(0.002, 0.01, 0.95, tests):,.0f} |"
            for tests in (1, 4, 12, EXAMPLE_TESTS, 48)
        ),
    ]
    return "\n\n".join(parts)


def main() -> None:
    print(tables())


if __name__ == "__main__":
    main()
