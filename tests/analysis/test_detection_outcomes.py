"""Ours' outcomes on a few seeded detection streams stay what they were.

The judge is made faster from time to time (its numbers must stay the same to
the bit: `python -m bench.judge_looks` prints a fingerprint of them). This is
the same check on the detection benchmark's harness: the real judge and engine
roll out a few seeded streams (A/A, regressions of each kind, noisy scrapes)
and must end every one as they did when these outcomes were recorded, at the
same second, weight and served traffic, held by the same cells.
"""

from __future__ import annotations

import pytest

from bench.detection import SCENARIO_BY_NAME
from bench.detection_engines import Ours, Outcome, look_seconds
from bench.detection_sim import simulate

#: the healthy candidate's cells that held a step past its hold: (metric, cohort, looks)
AA_BLOCKED = (
    ("quality-score", "cohort-5", 18),
    ("quality-score", "cohort-6", 15),
    ("quality-score", "cohort-7", 32),
    ("refusal-rate", "cohort-5", 6),
    ("refusal-rate", "cohort-7", 35),
)
CASES = [
    pytest.param(
        "aa", 100.0, 11, 180, Outcome("promoted", 7200, 299890.0, 100, AA_BLOCKED), id="aa"
    ),
    pytest.param(
        "refusal-one-cohort",
        100.0,
        12,
        60,
        Outcome("rolled-back", 2280, 2728.0, 20),
        id="refusal-one-cohort",
    ),
    pytest.param(
        "ttft-tail-one-cohort",
        100.0,
        14,
        60,
        Outcome("rolled-back", 2040, 1204.0, 20),
        id="ttft-tail-one-cohort",
    ),
    pytest.param(
        "score-overall",
        100.0,
        13,
        60,
        Outcome("rolled-back", 1740, 7863.0, 20),
        id="score-overall",
    ),
    pytest.param(
        "gross-errors", 10.0, 16, 30, Outcome("rolled-back", 420, 43.0, 1), id="gross-errors-10rps"
    ),
    pytest.param(
        "infra-noise", 100.0, 17, 30, Outcome("unfinished", 1800, 8572.0, 20), id="infra-noise"
    ),
]


@pytest.mark.parametrize(("scenario", "rps", "seed", "looks", "expected"), CASES)
def test_ours_ends_each_seeded_stream_as_recorded(
    scenario: str, rps: float, seed: int, looks: int, expected: Outcome
) -> None:
    case = SCENARIO_BY_NAME[scenario]
    stream = simulate(
        rps=rps,
        looks=looks,
        change=case.change,
        noise=case.noise,
        seed=seed,
        drift_per_hour=case.drift_per_hour,
        world=case.in_world,
        look_seconds=look_seconds(case.in_world),
    )
    assert Ours(case.in_world).run(stream, case.harmed) == expected
