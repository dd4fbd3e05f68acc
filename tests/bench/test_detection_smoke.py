"""The detection benchmark still runs, end to end, on tiny sizes (figures are not checked).

`make bench-detection` is not part of `make test`; this keeps it working: the
peers are tuned and every engine, ours with the real judge and engine, runs on
a few simulated streams, and the output has the promised shape, with numbers
in range. Timings are never asserted.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy import stats  # type: ignore[import-untyped]

from bench import detection
from bench.detection_engines import README_POLICY_PATH, Ours, bench_rollout, look_seconds
from bench.detection_peers import PEERS, Prepared, mann_whitney_p
from bench.detection_sim import (
    BENCH_WORLD,
    L0,
    LSUM,
    README_WORLD,
    REQUESTS,
    WEIGHTS,
    Change,
    Noise,
    simulate,
)
from controller.policy import load_file

ENGINES = {"ours", "flagger", "argo", "kayenta", "naive-z"}
ENGINE_FIELDS = {
    "false_rollback_rate",
    "false_rollback_upper95",
    "detect_median_s",
    "caught_rate",
    "promote_median_s",
    "config",
}


def test_a_tiny_quick_run_has_the_promised_shape(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    horizon = 20
    argv = [
        "--quick",
        "--aa-rollouts=2",
        "--rollouts=1",
        "--tune-aa-rollouts=3",
        "--tune-rollouts=1",
        f"--horizon-minutes={horizon}",
        "--rates=100",
        "--workers=1",
        "--scenarios",
        "aa",
        "harmless",
        "drifting-baseline",
        "gross-errors",
        "refusal-all",
        f"--out={tmp_path}",
    ]
    assert detection.main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    printed = json.loads(lines[-1])  # the output ends with one JSON line
    assert set(printed) == {"engines", "floor_s", "oracle_detect_s"}
    assert set(printed["engines"]) == ENGINES
    regressions = {"gross-errors@100rps", "refusal-all@100rps"}
    assert set(printed["floor_s"]) == set(printed["oracle_detect_s"]) == regressions
    for name, engine in printed["engines"].items():
        assert set(engine) == ENGINE_FIELDS
        assert 0.0 <= engine["false_rollback_rate"] <= engine["false_rollback_upper95"] <= 1.0
        assert set(engine["detect_median_s"]) == set(engine["caught_rate"]) == regressions
        for k, seconds in engine["detect_median_s"].items():
            caught = engine["caught_rate"][k]
            assert 0.0 <= caught <= 1.0
            assert (seconds is None) == (caught == 0.0)
            assert seconds is None or 0 < seconds <= horizon * 60
        promote = engine["promote_median_s"]
        assert promote is None or 0 < promote <= horizon * 60
        if name != "ours":
            # each peer reports the configuration it was tuned to, one of its own
            [peer] = [p for p in PEERS if p.name == name]
            assert engine["config"]["100rps"] in peer.configs(True)
    # every peer's chosen configuration is printed, with whether it reaches 5 %
    for peer in PEERS:
        assert any(line.startswith(f"{peer.name} @ 100rps: ") for line in lines[:-1])
    for k in regressions:
        # the limit's hypotheses (null at the tolerance, the cell's alpha) need more
        # than a test of "no change" at alpha 0.05
        assert printed["floor_s"][k] > printed["oracle_detect_s"][k] > 0
    # 20 % errors are caught by the real judge and engine within the horizon
    assert printed["engines"]["ours"]["caught_rate"]["gross-errors@100rps"] == 1.0
    written = json.loads((tmp_path / "detection-quick.json").read_text())
    scenarios = ("aa", "harmless", "drifting-baseline", "gross-errors", "refusal-all")
    assert set(written["cells"]["ours"]) == {f"{s}@100rps" for s in scenarios}
    assert written["tuning"]["flagger"]["100rps"]["aa_rollouts"] == 3
    assert (tmp_path / "detection-quick.md").read_text().startswith("# Detection benchmark")
    assert (tmp_path / "detection-quick.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tuning_and_evaluation_streams_never_share_a_seed() -> None:
    config = detection.FULL
    tuning = {t.seed for t in detection.tuning_tasks(config)}
    chosen = {p.name: {detection.rate_key(r): {} for r in config.rates} for p in PEERS}
    evaluation = {t.seed for t in detection.evaluation_tasks(config, chosen)}
    assert tuning and evaluation and not tuning & evaluation


def test_the_mann_whitney_test_matches_scipy_with_ties_and_gaps() -> None:
    rng = np.random.default_rng(7)
    x = rng.integers(0, 4, (50, 12)).astype(float)
    y = rng.integers(0, 4, (50, 12)).astype(float)
    x[rng.random(x.shape) < 0.2] = np.nan  # minutes without a value are left out
    mine = mann_whitney_p(x, y)
    for row in range(len(x)):
        xs, ys = x[row][~np.isnan(x[row])], y[row][~np.isnan(y[row])]
        expected = stats.mannwhitneyu(xs, ys, alternative="greater", method="asymptotic").pvalue
        assert mine[row] == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_the_wilson_interval_matches_its_formula() -> None:
    low, high = detection.wilson(0, 1000)
    assert low == pytest.approx(0.0, abs=1e-12)
    assert high == pytest.approx(0.00383, abs=1e-5)  # 1.96² / (1000 + 1.96²)
    low, high = detection.wilson(50, 100)
    assert (low, high) == pytest.approx((0.4038, 0.5962), abs=1e-4)


def test_the_oracle_reproduces_the_known_anchor() -> None:
    """5 % -> 7 % at alpha 0.05, power 0.8, one-sided: about 870 candidate requests when
    the baseline is known, and the baseline's requests weigh as much as the candidate's."""
    test = detection.oracle_test(detection.SCENARIO_BY_NAME["refusal-one-cohort"])
    assert test.known == pytest.approx(870, rel=0.02)
    assert test.baseline_weight == pytest.approx(1.0)


def test_the_floor_tests_the_tolerance_at_the_cells_alpha() -> None:
    """5.5 % -> 7 % (null at the tolerance) at alpha 0.05 / 36: Cohen's h by hand, and the
    baseline's estimate weighs by the arcsine's slope at the null (delta method)."""
    scenario = detection.SCENARIO_BY_NAME["refusal-one-cohort"]
    alpha = detection.cell_alpha()
    assert alpha == pytest.approx(0.05 / 36)
    test = detection.floor_test(scenario, at_tolerance=True, alpha=alpha)
    h = 2 * np.arcsin(np.sqrt(0.07)) - 2 * np.arcsin(np.sqrt(0.055))
    z = stats.norm.isf(alpha) + stats.norm.isf(0.2)
    assert test.known == pytest.approx((z / h) ** 2, rel=1e-9)
    assert test.baseline_weight == pytest.approx(0.05 * 0.95 / (0.055 * 0.945), rel=1e-9)


def test_an_absolute_max_weighs_the_baseline_through_its_tolerance_only() -> None:
    """`max: 0.02` on errors: the limit knows no baseline, but the tolerance is halfway from
    the baseline's estimate (0.5 %) to it, so a quarter of the baseline's variance counts;
    the oracle's "no change" is the baseline itself."""
    scenario = detection.SCENARIO_BY_NAME["gross-errors"]
    test = detection.floor_test(scenario, at_tolerance=True, alpha=detection.cell_alpha())
    assert test.baseline_weight == pytest.approx(0.005 * 0.995 / (4 * 0.0125 * 0.9875))
    assert detection.oracle_test(scenario).baseline_weight == pytest.approx(1.0)


@pytest.mark.parametrize("c2", [0.1, 0.84, 1.0])
def test_a_small_step_is_worth_what_a_known_baseline_would_be(c2: float) -> None:
    """In a step of weight w the baseline gets (1 - w) / w requests per candidate request:
    as w -> 0 the two-sample test needs the one-sample test's candidate requests."""
    for w in (1e-3, 1e-5):
        assert detection.effective_share(w, 1 - w, c2) / w == pytest.approx(1.0, abs=2 * w)
    assert detection.effective_share(0.5, 0.5, c2) == pytest.approx(0.5 / (1 + c2))
    assert detection.effective_share(0.3, 0.7, 0.0) == 0.3  # a null without the baseline
    assert detection.effective_share(1.0, 0.0, c2) == 0.0  # at 100 %: no contrast


def test_a_full_shadow_doubles_the_oracle() -> None:
    """The README's shadow at mirror 100 %: both versions answer every request, so a test of
    "no change" (c² = 1) needs twice the requests of one that knows the baseline."""
    scenario = detection.SCENARIO_BY_NAME["readme-refusals-non-english"]
    test = detection.oracle_test(scenario)
    known = replace(test, baseline_weight=0.0)
    rate = 100.0
    one_sample = detection.samples_seconds(scenario, rate, known)
    assert one_sample == pytest.approx(test.known / (rate * 0.15 * test.per_request))
    assert detection.samples_seconds(scenario, rate, test) == pytest.approx(2 * one_sample)


def test_the_schedule_stops_before_100_percent() -> None:
    """At 100 % the baseline answers nothing: the last step of the floors' schedule is the
    one before, lasting until the test has its power."""
    stretches = detection.nominal_schedule(README_WORLD)
    assert [s.minutes for s in stretches] == [30, 10, 15, 30, math.inf]
    assert stretches[0].candidate == stretches[0].baseline == (1.0, 1.0, 1.0, 1.0)
    assert stretches[1].candidate == (0.05, 0.01, 0.05, 0.01)
    assert stretches[-1].candidate == stretches[-1].baseline == (0.5, 0.5, 0.5, 0.5)


def test_the_look_follows_the_policys_interval() -> None:
    """Ours looks every `analysis.interval`: 1 minute in the benchmark's world, 30 s in the
    README's; the peers, whose knobs count minutes, take only 1-minute streams."""
    assert look_seconds(BENCH_WORLD) == 60 and look_seconds(README_WORLD) == 30
    stream = simulate(
        rps=50, looks=4, change=Change(), noise=Noise(), seed=5, world=README_WORLD, look_seconds=30
    )
    assert stream.look_seconds == 30 and stream.scrapes_per_look == 2
    with pytest.raises(ValueError, match="look every 60 s"):
        Prepared(stream, (0,))
    with pytest.raises(ValueError, match="looks every 60 s"):
        Ours(BENCH_WORLD).run(stream, (0,))


def test_a_shadow_mirrors_requests_the_candidate_answers_and_no_user_sees() -> None:
    """In a shadow at mirror 100 % the candidate answers a copy of every request and the
    baseline still serves all of them; at a weight the two split the requests."""
    stream = simulate(
        rps=50, looks=3, change=Change(), noise=Noise(), seed=5, world=README_WORLD, look_seconds=30
    )
    mirrored, served = stream.mirrored(0, len(WEIGHTS))
    assert (mirrored[:, REQUESTS] == served[:, REQUESTS]).all()
    assert mirrored[:, REQUESTS].sum() > 0
    assert mirrored[:, L0:LSUM].sum() == mirrored[:, REQUESTS].sum()  # a latency per request
    candidate, baseline = stream.increments(0, np.full(4, len(WEIGHTS)))
    assert (baseline[:, REQUESTS] == 0).all() and (candidate == mirrored).all()


def test_the_readme_family_runs_ours_alone_on_the_readme_policy(tmp_path: Path) -> None:
    """The README's policy file itself, on its cohorts: a regression in non-English is
    caught in the shadow, before any user is served by the candidate."""
    rollout = bench_rollout(README_WORLD)
    assert rollout.spec == load_file(README_POLICY_PATH)[0].rollout.spec
    assert [m.template for m in rollout.spec.analysis.metrics] == [
        "refusal-rate",
        "quality-score",
        "latency-p95",
        "error-rate",
    ]
    assert detection.README_SPEC_HOLDS_MINUTES == 115
    config = replace(
        detection.QUICK, rates=(100.0,), scenarios=("readme-refusals-non-english",), rollouts=1
    )
    [task] = detection.evaluation_tasks(config, {p.name: {"100rps": {}} for p in PEERS})
    assert not task.peers and task.looks == 500  # the 4 h deadline and 10 minutes, every 30 s
    _, outcomes, _ = detection.run_evaluation(replace(task, looks=40))
    [outcome] = outcomes.values()
    assert outcome.result == "rolled-back" and outcome.affected_served == 0
    assert outcome.seconds % 30 == 0 and outcome.seconds <= 20 * 60
    floor = detection.floor_seconds(detection.SCENARIO_BY_NAME[task.scenario], 100.0)
    assert 0 < floor < 30 * 60  # the shadow's mirrored requests count


def test_render_recomputes_the_floors_and_keeps_the_runs_own() -> None:
    """A report's floors are arithmetic on its scenarios: `--render` replaces stale ones with
    the current code's, keeps the run's beside them, and the tables say so."""
    k = "readme-refusals-non-english@100rps"
    report = json.loads((detection.RESULTS / "detection-readme-100rps.json").read_text())
    stale = {**report, "floor_s": {k: 39.0}, "oracle_detect_s": {k: 11.0}}
    fresh = detection.recompute_floors(stale)
    scenario = detection.SCENARIO_BY_NAME["readme-refusals-non-english"]
    assert fresh["floor_s"] == {k: detection.floor_seconds(scenario, 100.0)}
    assert fresh["oracle_detect_s"] == {k: detection.oracle_seconds(scenario, 100.0)}
    assert fresh["floor_s_as_run"] == {k: 39.0} and "floors_recomputed" in fresh
    assert "recomputed by `--render`" in detection.markdown(fresh)
    assert detection.recompute_floors(report) == report  # current floors: nothing to do


def test_ours_aa_rollouts_follow_a_smaller_aa_count_unless_given() -> None:
    def config(*argv: str) -> detection.Config:
        return detection.config_of(detection._parser().parse_args(list(argv)))

    assert config().ours_aa_rollouts == 1000  # the full run
    assert config("--aa-rollouts", "40").ours_aa_rollouts == 0  # ours: the same 40
    assert config("--aa-rollouts", "40", "--ours-aa-rollouts", "140").ours_aa_rollouts == 140
