"""`canaryctl plan` and `validate --plan` as a user runs them: the installed script,
a new process, an empty folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.cli.shell import canaryctl
from tests.policy.base import policy

ROOT = Path(__file__).parent.parent.parent
POLICIES = sorted((ROOT / "policies").glob("*.yaml"))
EXAMPLE = ROOT / "policies" / "gateway-api-cohorts.yaml"


def _table_rows_are_whole(text: str) -> None:
    """Off a terminal nothing wraps: every row of a table has all its columns."""
    columns = 0
    for line in text.splitlines():
        if "┃" in line:
            columns = line.count("┃")
        elif "│" in line:
            assert line.count("│") == columns, line


@pytest.mark.parametrize("path", POLICIES, ids=[p.stem for p in POLICIES])
def test_every_example_policy_has_a_plan(tmp_path: Path, path: Path) -> None:
    done = canaryctl("plan", str(path), "--rps", "50", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "traffic: 50 req/s (--rps)" in out
    assert "step 1: " in out and "healthy decides" in out and "at limit FAILs" in out
    assert "Along the schedule" in out
    assert "promotion to 100 %: " in out
    _table_rows_are_whole(out)
    assert max(len(line) for line in out.splitlines()) > 80  # not cut at 80 columns
    assert list(tmp_path.iterdir()) == []


def test_the_example_policy_plans_to_promote_within_its_holds(tmp_path: Path) -> None:
    done = canaryctl("plan", str(EXAMPLE), "--rps", "100", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "promotion to 100 %: 115 min / 115 min (the holds alone: 115 min" in done.stdout
    assert "WARN" not in done.stdout
    # the cohorts split the traffic equally with the rest when no share is given
    assert "non-english 25%, mobile 25%, power-users 25%, the rest 25%" in done.stdout


def test_a_fast_rollout_decides_before_the_default_deadline(tmp_path: Path) -> None:
    """The example with 1-minute holds, no shadow and no deadline: the planner's time
    to promotion at 200 req/s must fit in the default deadline (its floor), or a
    healthy candidate would pause for a human."""
    text = EXAMPLE.read_text()
    for old in ("hold: 10m", "hold: 15m", "hold: 30m"):
        text = text.replace(old, "hold: 1m")
    lines = [
        line for line in text.splitlines() if not line.lstrip().startswith(("shadow:", "deadline:"))
    ]
    fast = tmp_path / "fast.yaml"
    fast.write_text("\n".join(lines) + "\n")
    shares = ("non-english=0.15", "mobile=0.20", "power-users=0.10")
    args = [a for share in shares for a in ("--cohort-share", share)]
    done = canaryctl("plan", str(fast), "--rps", "200", *args, "-o", "json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    [plan] = json.loads(done.stdout)
    assert plan["deadlineMinutes"] == 30
    assert 4 < plan["promotionMinutes"]["median"] <= plan["promotionMinutes"]["p80"] < 30


def test_a_sampled_metric_takes_longer_to_decide(tmp_path: Path) -> None:
    """A judge scoring a tenth of the requests: the plan says so, and the score's cells
    need more time than with a score on every request."""
    args = ("plan", str(EXAMPLE), "--rps", "100", "-o", "json")
    [every] = json.loads(canaryctl(*args, cwd=tmp_path).stdout)
    done = canaryctl(*args, "--sample-share", "quality-score=0.1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    [sampled] = json.loads(done.stdout)
    assert sampled["traffic"]["sampleShares"] == {"quality-score": 0.1}
    assert sampled["traffic"]["sampleSource"] == "--sample-share"
    assert every["traffic"]["sampleShares"] == {}

    def healthy(plan: dict[str, Any], metric: str) -> float:
        [cell] = [c for c in plan["schedule"] if (c["cohort"], c["metric"]) == ("mobile", metric)]
        return float(cell["healthyDecidesMinutes"]["median"])

    assert healthy(sampled, "quality-score") > 2 * healthy(every, "quality-score")
    assert healthy(sampled, "refusal-rate") == healthy(every, "refusal-rate")
    text = canaryctl(
        "validate", "--plan", str(EXAMPLE), "--sample-share", "quality-score=0.1", cwd=tmp_path
    ).stdout
    assert "sampled: quality-score 10% of the requests (--sample-share)" in text


def test_a_hold_shorter_than_the_time_to_decide_is_a_warning(tmp_path: Path) -> None:
    done = canaryctl("plan", str(EXAMPLE), "--rps", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    [warning] = [line for line in done.stdout.splitlines() if line.startswith("WARN")]
    assert warning.startswith(
        "WARN  step 4: 50%: the hold (30 min) is shorter than the time to decide"
    )
    assert "(80th percentile)" in warning


def test_a_cohort_that_cannot_decide_before_the_deadline_is_a_warning(tmp_path: Path) -> None:
    done = canaryctl(
        "plan", str(EXAMPLE), "--rps", "5", "--cohort-share", "power-users=0.01", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert (
        "WARN  cohort power-users cannot decide before analysis.deadline (4.0 h): " in done.stdout
    )
    assert "power-users 1%" in done.stdout
    assert "cohort mobile cannot" not in done.stdout
    # the shadow's own remedies: what the candidate gets there is the mirror share
    assert (
        "WARN  shadow: the hold (30 min) is shorter than the time to reach minSamples in "
        "every cell: 67 min (80th percentile); remedies: a higher mirrorPercent, a longer "
        "shadow, or advanceOn: hold"
    ) in done.stdout


def test_the_plan_as_json(tmp_path: Path) -> None:
    done = canaryctl(
        "plan",
        str(EXAMPLE),
        "--rps",
        "5",
        "--cohort-share",
        "power-users=0.01",
        "-o",
        "json",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    [plan] = json.loads(done.stdout)
    assert (plan["name"], plan["namespace"], plan["tests"]) == ("support-bot-v7", "llm", 24)
    traffic = plan["traffic"]
    assert traffic["requestsPerSecond"] == 5
    assert traffic["cohortShares"] == {"non-english": 0.33, "mobile": 0.33, "power-users": 0.01}
    assert traffic["restShare"] == pytest.approx(0.33)
    assert [s["step"] for s in plan["steps"]] == [
        "shadow",
        "step 1: 1%",
        "step 2: 5%",
        "step 3: 20%",
        "step 4: 50%",
    ]
    cell = plan["steps"][1]["cells"][0]
    assert set(cell) == {
        "cohort",
        "metric",
        "critical",
        "requestsPerSecond",
        "weight",
        "healthyDecidesMinutes",
        "atLimitFailsMinutes",
        "poweredMinutes",
    }
    assert (cell["cohort"], cell["metric"], cell["weight"]) == ("non-english", "refusal-rate", 0.05)
    assert set(cell["healthyDecidesMinutes"]) == {"median", "p80"}
    assert len(plan["schedule"]) == 4 * 4  # (3 cohorts + overall) x 4 metrics
    assert plan["promotionMinutes"]["p80"] > plan["promotionMinutes"]["median"] > 115
    assert plan["deadlineMinutes"] == 240
    assert any(w.startswith("cohort power-users cannot decide") for w in plan["warnings"])
    assert plan["assumed"]["scoreMean"] == 0.8


def test_validate_plan_shows_the_same_table(tmp_path: Path) -> None:
    planned = canaryctl("plan", str(EXAMPLE), "--rps", "20", cwd=tmp_path)
    validated = canaryctl("validate", "--plan", "--rps", "20", str(EXAMPLE), cwd=tmp_path)
    assert validated.returncode == 0, validated.stderr
    assert "1 valid, 0 error(s) in 1 file(s)" in validated.stdout
    assert validated.stdout.endswith(planned.stdout)
    as_json = canaryctl("validate", "--plan", str(EXAMPLE), "-o", "json", cwd=tmp_path)
    report = json.loads(as_json.stdout)
    assert report["valid"] is True
    assert [p["name"] for p in report["plans"]] == ["support-bot-v7"]
    plain = json.loads(canaryctl("validate", str(EXAMPLE), "-o", "json", cwd=tmp_path).stdout)
    assert "plans" not in plain


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        pytest.param(
            ["--cohort-share", "mobile=2"],
            2,
            "error: --cohort-share mobile=2: a share must be in (0, 1]",
            id="share-above-1",
        ),
        pytest.param(
            ["--cohort-share", "mobile"],
            2,
            "error: --cohort-share 'mobile': expected NAME=FRACTION",
            id="no-fraction",
        ),
        pytest.param(
            ["--cohort-share", "tablet=0.2"],
            2,
            "error: {file}: --cohort-share: no cohort 'tablet' in the policy "
            "(its cohorts: mobile, non-english)",
            id="unknown-cohort",
        ),
        pytest.param(
            ["--cohort-share", "mobile=0.7", "--cohort-share", "non-english=0.6"],
            2,
            "error: {file}: --cohort-share: the shares add up to 1.3, more than 1",
            id="shares-above-1",
        ),
        pytest.param(
            ["--sample-share", "quality-score=1.5"],
            2,
            "error: --sample-share quality-score=1.5: a share must be in (0, 1]",
            id="sample-share-above-1",
        ),
        pytest.param(
            ["--sample-share", "quality-score"],
            2,
            "error: --sample-share 'quality-score': expected NAME=FRACTION, e.g. quality-score=0.1",
            id="sample-share-no-fraction",
        ),
        pytest.param(
            ["--sample-share", "quality=0.1"],
            2,
            "error: {file}: --sample-share: no metric 'quality' in the policy "
            "(its metrics: refusal-rate, error-rate)",
            id="sample-share-unknown-metric",
        ),
        pytest.param(
            ["--rps", "0"],
            2,
            "error: --rps 0: the request rate must be a positive number",
            id="rps-0",
        ),
        pytest.param(
            ["--prometheus", "http://127.0.0.1:9"],
            1,
            "error: {file}: --prometheus: Prometheus at http://127.0.0.1:9 is unreachable",
            id="prometheus-down",
        ),
    ],
)
def test_bad_input_is_one_clear_line(
    tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    path = tmp_path / "bot.yaml"
    path.write_text(policy())
    done = canaryctl("plan", str(path), *args, cwd=tmp_path)
    assert done.returncode == code, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(message.format(file=path)), line
    assert done.stdout == ""


def test_a_missing_or_invalid_policy_file(tmp_path: Path) -> None:
    done = canaryctl("plan", "nope.yaml", cwd=tmp_path)
    assert (done.returncode, done.stderr.strip()) == (2, "error: nope.yaml: no such file")
    bad = tmp_path / "bad.yaml"
    bad.write_text(policy(("maxIncrease: 0.02", "maxIncrease: -1")))
    done = canaryctl("plan", str(bad), cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith(f"ERROR {bad}:")
