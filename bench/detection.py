"""Detection benchmark: how fast each engine rolls back bad models, how often good ones.

    python -m bench.detection            # the full run (make bench-detection)
    python -m bench.detection --quick    # a reduced run, < 2 minutes on 2 cores

Every rollout is one seeded stream of simulated traffic (`bench.detection_sim`)
judged by every engine (`bench.detection_engines`): ours (the real judge and the
real engine), Flagger-style range checks with a failed-check threshold of 1, 5
and 10, Argo-style `failureLimit: 0`, and a naive per-step z-test. Scenarios are
healthy (A/A, a harmless change below the policy's margins, infrastructure
noise) or regressions; for each engine and scenario we report the false-rollback
rate (Wilson interval), the time to detect (median, p90), the requests of the
harmed cohorts served by the bad candidate, the miss rate (regressions promoted
to 100 %), the time to promote healthy candidates, and the hold rate (ended
neither promoted nor rolled back), with the fixed-sample oracle as the floor.

Output: `bench/results/detection.json`, `detection.md` and `detection.png`
(`--out` to change the directory); `--quick` also prints one JSON object on
stdout. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats  # type: ignore[import-untyped]

from bench.detection_engines import (
    ENGINE_NAMES,
    EXTRA,
    HOLD_MINUTES,
    NO_FAILURE,
    POLICY,
    PROMOTED,
    ROLLED_BACK,
    Engine,
    Outcome,
    all_engines,
)
from bench.detection_sim import (
    BASE_ERROR,
    BASE_QUALITY_MEAN,
    BASE_REFUSAL,
    COHORT_SHARES,
    JUDGED_SHARE,
    LOOK_SECONDS,
    QUALITY_CONCENTRATION,
    REGRESSED_COHORT,
    TTFT_SIGMA,
    WEIGHTS,
    Change,
    Noise,
    candidate_behaviour,
    simulate,
)

RESULTS = Path(__file__).resolve().parent / "results"
RATES = (10.0, 100.0)


@dataclass(frozen=True)
class Scenario:
    name: str
    change: Change
    healthy: bool
    noise: Noise = field(default_factory=Noise)
    description: str = ""


SCENARIOS = (
    Scenario("aa", Change(), True, description="A/A: the candidate is the baseline"),
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
    Scenario(
        "harmless",
        Change(refusal_add=0.003, quality_add=-0.005),
        True,
        description="refusals +0.3 points, score -0.005: below the policy's margins",
    ),
    Scenario(
        "infra-noise",
        Change(),
        True,
        Noise(scrape_miss=0.05, restart_per_hour=2.0),
        description="A/A with 5 % missed scrapes and 2 pod restarts per hour per version",
    ),
)
SCENARIO_BY_NAME = {s.name: s for s in SCENARIOS}


@dataclass(frozen=True)
class Config:
    aa_rollouts: int  # per rate
    rollouts: int  # per rate, every other scenario
    horizon_minutes: int
    rates: tuple[float, ...] = RATES
    scenarios: tuple[str, ...] = tuple(s.name for s in SCENARIOS)
    seed: int = 20261202
    workers: int = 2
    #: engines run besides ENGINE_NAMES (bench.detection_engines.EXTRA)
    extra: tuple[str, ...] = ()

    @property
    def engines(self) -> tuple[str, ...]:
        return (*ENGINE_NAMES, *self.extra)


FULL = Config(aa_rollouts=500, rollouts=60, horizon_minutes=100, extra=(NO_FAILURE,))
QUICK = Config(aa_rollouts=8, rollouts=3, horizon_minutes=90)


# --- running -------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    scenario: str
    rate: float
    index: int
    seed: int
    looks: int
    extra: tuple[str, ...] = ()


_ENGINES: dict[tuple[str, ...], list[Engine]] = {}


def _engines(extra: tuple[str, ...]) -> list[Engine]:
    if extra not in _ENGINES:
        _ENGINES[extra] = all_engines(extra)
    return _ENGINES[extra]


def run_task(task: Task) -> tuple[Task, dict[str, Outcome], float]:
    """Simulate one stream and let every engine roll it out; returns the wall time of `ours`."""
    scenario = SCENARIO_BY_NAME[task.scenario]
    stream = simulate(
        rps=task.rate,
        looks=task.looks,
        change=scenario.change,
        noise=scenario.noise,
        seed=task.seed,
    )
    harmed = scenario.change.harmful_cohorts
    outcomes: dict[str, Outcome] = {}
    ours_seconds = 0.0
    for engine in _engines(task.extra):
        began = time.perf_counter()
        outcomes[engine.name] = engine.run(stream, harmed)
        if engine.name == "ours":
            ours_seconds = time.perf_counter() - began
    return task, outcomes, ours_seconds


def tasks(config: Config) -> list[Task]:
    looks = config.horizon_minutes * 60 // LOOK_SECONDS
    out = []
    for s_index, name in enumerate(config.scenarios):
        count = config.aa_rollouts if name == "aa" else config.rollouts
        for rate in config.rates:
            for i in range(count):
                entropy = [config.seed, s_index, int(rate), i]
                seed = int(np.random.SeedSequence(entropy).generate_state(1)[0])
                out.append(Task(name, rate, i, seed, looks, config.extra))
    return out


def run(
    config: Config, log: Any = sys.stderr
) -> tuple[list[tuple[Task, dict[str, Outcome]]], float]:
    todo = tasks(config)
    results: list[tuple[Task, dict[str, Outcome]]] = []
    ours_cpu = 0.0
    began = time.monotonic()
    chunks = max(1, len(todo) // (config.workers * 20))

    def consume(items: Iterator[tuple[Task, dict[str, Outcome], float]]) -> None:
        nonlocal ours_cpu
        for n, (task, outcomes, ours_seconds) in enumerate(items, 1):
            results.append((task, outcomes))
            ours_cpu += ours_seconds
            if n % max(1, len(todo) // 20) == 0 or n == len(todo):
                print(
                    f"[detection] {n}/{len(todo)} rollouts, {time.monotonic() - began:.0f}s",
                    file=log,
                    flush=True,
                )

    if config.workers > 1:
        context = multiprocessing.get_context("fork")
        with context.Pool(config.workers) as pool:
            consume(pool.imap_unordered(run_task, todo, chunksize=chunks))
    else:
        consume(run_task(t) for t in todo)
    results.sort(key=lambda r: (r[0].scenario, r[0].rate, r[0].index))
    return results, ours_cpu


# --- figures -------------------------------------------------------------------------


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


def key(scenario: str, rate: float) -> str:
    return f"{scenario}@{rate:g}rps"


def _weights(outcomes: Sequence[Outcome]) -> list[int]:
    return sorted({o.weight for o in outcomes})


def cell_figures(outcomes: Sequence[Outcome], healthy: bool) -> dict[str, Any]:
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
    if healthy:
        low, high = wilson(len(rolled), n)
        out["false_rollback_rate"] = len(rolled) / n if n else None
        out["false_rollback_wilson95"] = [low, high]
        times = [o.seconds for o in promoted]
        out["promote_rate"] = len(promoted) / n if n else None
        out["promote_median_s"] = _quantile(times, 0.5)
        out["promote_p90_s"] = _quantile(times, 0.9)
    else:
        times = [o.seconds for o in rolled]
        out["detect_rate"] = len(rolled) / n if n else None
        out["detect_median_s"] = _quantile(times, 0.5)
        out["detect_p90_s"] = _quantile(times, 0.9)
        out["miss_rate"] = len(promoted) / n if n else None
        served = [o.affected_served for o in outcomes]
        out["harmed_served_median"] = _quantile(served, 0.5)
        out["harmed_served_p90"] = _quantile(served, 0.9)
    return out


# --- the oracle ---------------------------------------------------------------------------

Z_ALPHA = float(stats.norm.isf(0.05))  # one-sided, alpha 0.05
Z_POWER = float(stats.norm.isf(0.20))  # power 0.8
Z_P95 = float(stats.norm.isf(0.05))  # the baseline's p95 in standard units


def oracle_samples(scenario: Scenario) -> tuple[float, float]:
    """(observations needed, observations per candidate request of the harmed cohorts).

    A fixed-sample, one-sided test of "no change" (alpha 0.05, power 0.8) that
    knows the effect, the baseline and which cohort to look at, with the
    baseline known exactly (Cohen's h for proportions: `((z_a + z_b) / h)²`,
    which gives the issue's ≈ 870 requests for 5 % -> 7 %; `((z_a + z_b) σ / δ)²`
    for the mean score). No margins, no multiplicity, one look: a floor, not a
    policy anyone could run.
    """
    change = scenario.change
    harmed = change.harmful_cohorts
    shares = np.array([COHORT_SHARES[k] for k in harmed])
    shares = shares / shares.sum()
    z2 = (Z_ALPHA + Z_POWER) ** 2

    def h(p0: float, p1: float) -> float:
        return abs(2 * math.asin(math.sqrt(p1)) - 2 * math.asin(math.sqrt(p0)))

    if change.error_to is not None:
        return z2 / h(BASE_ERROR, change.error_to) ** 2, 1.0
    if change.refusal_add:
        p0 = float(sum(s * BASE_REFUSAL[k] for s, k in zip(shares, harmed, strict=True)))
        return z2 / h(p0, p0 + change.refusal_add) ** 2, 1.0 - BASE_ERROR
    if change.ttft_tail_ratio != 1.0:
        k = harmed[0]
        sigma = candidate_behaviour(k, change).ttft_sigma
        # the candidate's share beyond the baseline's p95 (lognormal, same median)
        p1 = float(stats.norm.sf(Z_P95 * TTFT_SIGMA / sigma))
        return z2 / h(0.05, p1) ** 2, 1.0 - BASE_ERROR
    if change.quality_add:
        m = float(sum(s * BASE_QUALITY_MEAN[k] for s, k in zip(shares, harmed, strict=True)))
        variance = m * (1 - m) / (QUALITY_CONCENTRATION + 1)
        return z2 * variance / change.quality_add**2, JUDGED_SHARE * (1.0 - BASE_ERROR)
    raise ValueError(f"{scenario.name} has no effect to detect")


def oracle_seconds(scenario: Scenario, rate: float) -> float:
    """When the nominal schedule (mean rate) has served the oracle's sample to the candidate."""
    needed, per_request = oracle_samples(scenario)
    share = sum(COHORT_SHARES[k] for k in scenario.change.harmful_cohorts)
    requests = needed / per_request
    elapsed = 0.0
    for weight, minutes in zip(WEIGHTS, (*HOLD_MINUTES, math.inf), strict=True):
        per_second = rate * share * weight
        if requests <= per_second * minutes * 60:
            return elapsed + requests / per_second
        requests -= per_second * minutes * 60
        elapsed += minutes * 60
    raise AssertionError("unreachable: the last step lasts forever")


# --- report -------------------------------------------------------------------------------


def summarise(config: Config, results: list[tuple[Task, dict[str, Outcome]]]) -> dict[str, Any]:
    cells: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in config.engines}
    for name in config.scenarios:
        scenario = SCENARIO_BY_NAME[name]
        for rate in config.rates:
            mine = [o for t, o in results if t.scenario == name and t.rate == rate]
            for engine in config.engines:
                cells[engine][key(name, rate)] = cell_figures(
                    [o[engine] for o in mine], scenario.healthy
                )
    regressions = [
        key(s, r) for s in config.scenarios for r in config.rates if not SCENARIO_BY_NAME[s].healthy
    ]
    engines: dict[str, Any] = {}
    for engine in config.engines:
        aa = [o[engine] for t, o in results if t.scenario == "aa"]
        rolled = sum(o.result == ROLLED_BACK for o in aa)
        engines[engine] = {
            "false_rollback_rate": rolled / len(aa) if aa else None,
            "false_rollback_wilson95": list(wilson(rolled, len(aa))),
            "aa_rollouts": len(aa),
            "detect_median_s": {k: cells[engine][k]["detect_median_s"] for k in regressions},
            "detect_p90_s": {k: cells[engine][k]["detect_p90_s"] for k in regressions},
            "miss_rate": {k: cells[engine][k]["miss_rate"] for k in regressions},
        }
    oracle = {
        key(s, r): oracle_seconds(SCENARIO_BY_NAME[s], r)
        for s in config.scenarios
        for r in config.rates
        if not SCENARIO_BY_NAME[s].healthy
    }
    return {"engines": engines, "oracle_detect_s": oracle, "cells": cells}


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


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def markdown(report: dict[str, Any]) -> str:
    config = report["config"]
    engines = list(report["engines"])
    regressions = list(report["oracle_detect_s"])
    cells = report["cells"]
    lines = [
        "# Detection benchmark",
        "",
        f"{report['machine']} · {report['runtime_s']:.0f} s wall · "
        f"{config['aa_rollouts']} A/A and {config['rollouts']} other rollouts per scenario "
        f"and rate ({', '.join(f'{r:g}' for r in config['rates'])} req/s), "
        f"horizon {config['horizon_minutes']} min, seed {config['seed']}. "
        "Generated by `python -m bench.detection`; how to read it: docs/benchmarks.md.",
        "",
        "## False rollbacks on A/A rollouts (all rates together)",
        "",
        _row(["engine", "rolled back", "95 % Wilson interval"]),
        _row(["---"] * 3),
    ]
    for engine, e in report["engines"].items():
        low, high = e["false_rollback_wilson95"]
        lines.append(
            _row(
                [
                    engine,
                    f"{_fmt_p(e['false_rollback_rate'])} of {e['aa_rollouts']}",
                    f"[{_fmt_p(low)}, {_fmt_p(high)}]",
                ]
            )
        )
    lines += [
        "",
        "## Median time to detect (share of regressed rollouts caught)",
        "",
        _row(["scenario", "oracle (floor)", *engines]),
        _row(["---"] * (len(engines) + 2)),
    ]
    for k in regressions:
        lines.append(
            _row(
                [
                    k,
                    _fmt_s(report["oracle_detect_s"][k]),
                    *(
                        f"{_fmt_s(cells[e][k]['detect_median_s'])} "
                        f"({_fmt_p(cells[e][k]['detect_rate'])})"
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
                "held",
                "ended at weight",
            ]
        ),
        _row(["---"] * 8),
    ]
    for engine, by_key in cells.items():
        for k, c in by_key.items():
            if "false_rollback_rate" not in c:
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
                        _fmt_p(c["hold_rate"]),
                        _fmt_weights(c["final_weight"]),
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
                "oracle",
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
            if "detect_rate" not in c:
                continue
            lines.append(
                _row(
                    [
                        k,
                        engine,
                        str(c["rollouts"]),
                        _fmt_p(c["detect_rate"]),
                        f"{_fmt_s(c['detect_median_s'])} / {_fmt_s(c['detect_p90_s'])}",
                        _fmt_s(report["oracle_detect_s"][k]),
                        _fmt_p(c["miss_rate"]),
                        _fmt_p(c["hold_rate"]),
                        f"{c['harmed_served_median']:.0f} / {c['harmed_served_p90']:.0f}",
                        _fmt_weights(c["final_weight"]),
                    ]
                )
            )
    lines.append("")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    regressions = list(report["oracle_detect_s"])
    if not regressions:  # healthy scenarios only: the false rollbacks alone
        names = list(report["engines"])
        rates = [100 * report["engines"][n]["false_rollback_rate"] for n in names]
        bounds = [[100 * v for v in report["engines"][n]["false_rollback_wilson95"]] for n in names]
        xerr = [
            [max(r - b[0], 0.0) for r, b in zip(rates, bounds, strict=True)],
            [max(b[1] - r, 0.0) for r, b in zip(rates, bounds, strict=True)],
        ]
        ax.barh(names, rates, xerr=xerr, capsize=3)
        ax.set_xlabel("false rollbacks on A/A rollouts (%, 95 % Wilson interval)")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return
    for engine, e in report["engines"].items():
        detected = [
            report["cells"][engine][k]["detect_median_s"]
            for k in regressions
            if report["cells"][engine][k]["detect_median_s"] is not None
        ]
        caught = np.mean([report["cells"][engine][k]["detect_rate"] for k in regressions])
        if not detected:
            continue
        y = float(np.median(detected)) / 60
        x = 100 * e["false_rollback_rate"]
        low, high = (100 * v for v in e["false_rollback_wilson95"])
        xerr = [[max(x - low, 0.0)], [max(high - x, 0.0)]]
        ax.errorbar(x, y, xerr=xerr, fmt="o", capsize=3, label=engine)
        ax.annotate(
            f"{engine} ({100 * caught:.0f} % caught)",
            (x, y),
            textcoords="offset points",
            xytext=(6, 6),
            fontsize=8,
        )
    oracle = float(np.median(list(report["oracle_detect_s"].values()))) / 60
    ax.axhline(oracle, linestyle="--", color="grey", linewidth=1)
    ax.annotate(
        "fixed-sample oracle (floor)",
        (0, oracle),
        textcoords="offset points",
        xytext=(4, 4),
        fontsize=8,
        color="grey",
    )
    ax.set_xlabel("false rollbacks on A/A rollouts (%, 95 % Wilson interval)")
    ax.set_ylabel("time to detect, median over regression scenarios (min, log)")
    ax.set_yscale("log")
    ax.set_xlim(-5, 105)
    ax.set_title("Detection time vs false rollbacks (bench/detection.py)")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a reduced run; JSON on stdout")
    parser.add_argument("--aa-rollouts", type=int, help="A/A rollouts per rate")
    parser.add_argument("--rollouts", type=int, help="rollouts per rate of other scenarios")
    parser.add_argument("--horizon-minutes", type=int)
    parser.add_argument("--rates", type=float, nargs="+")
    parser.add_argument("--scenarios", nargs="+", choices=[s.name for s in SCENARIOS])
    parser.add_argument("--workers", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument(
        "--extra",
        nargs="*",
        choices=sorted(EXTRA),
        help=f"engines to run besides the six (the full run adds {NO_FAILURE})",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory of the results")
    parser.add_argument(
        "--render", type=Path, metavar="JSON", help="only re-render the .md and .png of a result"
    )
    args = parser.parse_args(argv)
    if args.render is not None:
        report = json.loads(args.render.read_text())
        args.render.with_suffix(".md").write_text(markdown(report))
        plot(report, args.render.with_suffix(".png"))
        return 0
    config = QUICK if args.quick else FULL
    overrides = {
        "aa_rollouts": args.aa_rollouts,
        "rollouts": args.rollouts,
        "horizon_minutes": args.horizon_minutes,
        "rates": tuple(args.rates) if args.rates else None,
        "scenarios": tuple(args.scenarios) if args.scenarios else None,
        "workers": args.workers,
        "seed": args.seed,
        "extra": tuple(args.extra) if args.extra is not None else None,
    }
    config = Config(**{**asdict(config), **{k: v for k, v in overrides.items() if v is not None}})
    if "aa" not in config.scenarios:
        parser.error("the scenarios must include aa (the false-rollback rate is measured on it)")
    print(f"[detection] {config}", file=sys.stderr, flush=True)
    began = time.monotonic()
    results, ours_cpu = run(config)
    runtime = time.monotonic() - began
    report = summarise(config, results)
    report = {
        "engines": report["engines"],
        "oracle_detect_s": report["oracle_detect_s"],
        "config": asdict(config),
        "runtime_s": runtime,
        "ours_engine_cpu_s": ours_cpu,
        "machine": machine(),
        "policy": POLICY,  # ours; ours-no-failure: the same with `advanceOn: no-failure`
        "scenarios": {s.name: s.description for s in SCENARIOS if s.name in config.scenarios},
        "cells": report["cells"],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "detection-quick" if args.quick else "detection"
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(markdown(report))
    plot(report, args.out / f"{stem}.png")
    print(
        f"[detection] done in {runtime:.0f}s (ours: {ours_cpu:.0f} CPU-s in the engine); "
        f"wrote {args.out / stem}.json, .md, .png",
        file=sys.stderr,
    )
    if args.quick:
        summary = {"engines": report["engines"], "oracle_detect_s": report["oracle_detect_s"]}
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
