"""`canaryctl backtest` against the recorded incident (see conftest).

In-process (typer's runner) but for the two things only a new process shows: an
unreachable Prometheus seen as a user sees it, and the progress bar on a terminal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from bench.history import free_port
from controller.cli.main import app
from controller.metrics.prometheus import PrometheusProvider
from controller.policy import load_text
from controller.routing import MemoryRouter, RouteTarget
from controller.runtime.executor import Executor
from controller.runtime.observer import JudgingObserver
from controller.store.sql import SqlStore, migrate
from tests.backtest.conftest import POLICY, Recorded
from tests.cli.shell import canaryctl


def _policy(tmp_path: Path, text: str = POLICY, name: str = "policy.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


runner = CliRunner()


def _backtest(recorded: Recorded, *args: str) -> Result:
    return runner.invoke(app, ["backtest", *args, "--prometheus", recorded.url])


def test_the_incident_as_a_timeline(tmp_path: Path, recorded: Recorded) -> None:
    done = _backtest(
        recorded,
        _policy(tmp_path),
        "--from",
        recorded.incident.isoformat(),
        "--to",
        recorded.end.isoformat(),
    )
    assert done.exit_code == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("backtest llm/bot-v2 · bot v1 → v2 · ")
    assert "a look every 1m" in lines[0] and recorded.url in lines[0]
    assert "the traffic split is the recorded one" in lines[1]
    assert lines[2].startswith("  T+0h00m  ") and lines[2].endswith(
        "started  step 1: 50% to candidate"
    )
    [rollback] = [line for line in lines if "rolled-back" in line]
    assert "rolled-back [LimitBroken]  rolled back: refusal-rate in non-english: " in rollback
    [first] = [line for line in lines if line.startswith("first FAIL at ")]
    assert rollback.startswith("  " + first.split()[3] + "  ")  # the same T+ offset
    evidence = lines[lines.index(first) + 1 :]
    assert evidence[0].startswith("  refusal-rate in non-english: candidate - baseline ")
    assert evidence[1].startswith("    baseline 4.9") and ", candidate 6.9" in evidence[1]
    assert evidence[2].startswith("    PromQL: label_replace(")
    assert lines[-1].startswith("outcome: RolledBack at ")
    assert done.stderr == ""


def test_json_is_one_object_with_the_four_keys(tmp_path: Path, recorded: Recorded) -> None:
    done = _backtest(
        recorded,
        _policy(tmp_path),
        "--from",
        recorded.start.isoformat(),
        "--to",
        recorded.incident.isoformat(),
        "--output",
        "json",
    )
    assert done.exit_code == 0, done.stderr
    data = json.loads(done.stdout)
    assert list(data) == ["decisions", "first_fail", "outcome", "looks"]
    assert data["first_fail"] is None
    assert data["outcome"] == "Promoted"
    assert data["looks"] >= 5
    assert [d["event"] for d in data["decisions"]][-2:] == ["step-advanced", "promoted"]
    first = data["decisions"][0]
    assert first == {
        "at": recorded.start.isoformat(),
        "minutes": 0.0,
        "event": "started",
        "phase": "Progressing",
        "step": 1,
        "weight": 50,
        "reason": "step 1: 50% to candidate",
        "cause": None,
    }


def test_the_incident_in_json_has_its_evidence(tmp_path: Path, recorded: Recorded) -> None:
    done = _backtest(
        recorded,
        _policy(tmp_path),
        "--from",
        recorded.incident.isoformat(),
        "--to",
        recorded.end.isoformat(),
        "-o",
        "json",
    )
    assert done.exit_code == 0, done.stderr
    data = json.loads(done.stdout)
    fail = data["first_fail"]
    assert data["outcome"] == "RolledBack"
    assert fail["look"] == data["looks"]
    assert fail["minutes"] == data["decisions"][-1]["minutes"]
    [cell] = fail["cells"]
    assert (cell["metric"], cell["cohort"]) == ("refusal-rate", "non-english")
    assert set(cell) == {
        "metric",
        "cohort",
        "reason",
        "baseline",
        "candidate",
        "baseline_samples",
        "candidate_samples",
        "query",
        "breaker",
    }


def test_a_range_without_data_is_one_line_and_exit_1(tmp_path: Path, recorded: Recorded) -> None:
    before = recorded.start - timedelta(hours=3)
    done = _backtest(
        recorded,
        _policy(tmp_path),
        "--from",
        before.isoformat(),
        "--to",
        (before + timedelta(hours=1)).isoformat(),
    )
    assert done.exit_code == 1
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("error: no requests of bot v1 or v2 in namespace llm between ")


def test_more_than_30_days_needs_force(tmp_path: Path, recorded: Recorded) -> None:
    policy = _policy(tmp_path)
    start = (recorded.end - timedelta(days=31)).isoformat()
    done = _backtest(recorded, policy, "--from", start, "--to", recorded.end.isoformat())
    assert done.exit_code == 1
    assert done.stderr.strip() == (
        "error: the range is 31.0 days long, more than 30 days; pass --force to replay it anyway"
    )
    # forced, it runs: a month ago there was no data, so the policy's noData rule decides
    forced = _backtest(
        recorded,
        policy,
        "--from",
        start,
        "--to",
        recorded.end.isoformat(),
        "--force",
        "-o",
        "json",
    )
    assert forced.exit_code == 0, forced.stderr
    data = json.loads(forced.stdout)
    assert data["outcome"] == "RolledBack"
    assert data["decisions"][-1]["cause"] == "NoData"


def test_an_unreachable_prometheus_is_a_message(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = canaryctl(
        "backtest",
        _policy(tmp_path),
        "--from",
        "now-2h",
        "--to",
        "now",
        "--prometheus",
        url,
        cwd=tmp_path,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == f"error: Prometheus at {url} is unreachable: could not connect"
    assert "Traceback" not in done.stdout + done.stderr


def test_a_long_range_shows_a_progress_bar_on_a_terminal(
    tmp_path: Path, recorded: Recorded
) -> None:
    done = canaryctl(
        "backtest",
        _policy(tmp_path),
        "--prometheus",
        recorded.url,
        "--from",
        recorded.start.isoformat(),
        "--to",
        recorded.end.isoformat(),
        "-o",
        "json",
        env={"TTY_COMPATIBLE": "1"},
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "replaying" in done.stderr  # 181 ticks at most: a bar, gone when it is done
    assert json.loads(done.stdout)["outcome"] == "Promoted"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param((), "give either a POLICY file or --rollout NAME", id="nothing"),
        pytest.param(("P", "--from", "now-1h"), "give both", id="no-to"),
        pytest.param(("P", "--policy", "P"), "use it with --rollout", id="policy-alone"),
        pytest.param(
            ("P", "--from", "yesterday", "--to", "now"), "is not a time; write ISO 8601", id="time"
        ),
        pytest.param(
            ("P", "--from", "now-2x", "--to", "now"), "is not a duration", id="relative-time"
        ),
    ],
)
def test_usage_errors(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    policy = _policy(tmp_path)
    done = runner.invoke(app, ["backtest", *(policy if a == "P" else a for a in args)])
    assert done.exit_code == 2
    assert message in done.stderr


# --- a rollout recorded by the controller ------------------------------------------------


@dataclass
class PastClock:
    at: datetime

    def now(self) -> datetime:
        return self.at


def _record_rollout(recorded: Recorded, database: Path) -> datetime:
    """The controller's own ticks over the incident, at its past instants, into a store:
    what the audit holds of a rollout that ran then. Returns when it ended."""
    [loaded] = load_text(POLICY, "<test policy>")
    rollout = loaded.rollout
    url = f"sqlite:///{database}"
    migrate(url)
    store = SqlStore(url)
    clock = PastClock(recorded.incident)
    executor = Executor(store, clock)
    observer = JudgingObserver(PrometheusProvider(recorded.url))
    router = MemoryRouter(RouteTarget.of(rollout))
    try:
        while clock.at < recorded.end:
            if executor.tick(rollout, router, observer).decision.state.phase.terminal:
                return clock.at
            clock.at += rollout.spec.analysis.interval
    finally:
        store.close()
    raise AssertionError("the recorded rollout did not end")


def test_a_recorded_rollout_replays_as_it_ran(tmp_path: Path, recorded: Recorded) -> None:
    """Replayed with its own policy over its own range, the backtest decides what the
    controller did, at the same look; a stricter policy catches it earlier, and a
    looser one would have promoted it."""
    database = tmp_path / "audit.db"
    ended = _record_rollout(recorded, database)
    base = ("--rollout", "bot-v2", "--database", str(database), "-o", "json")

    own = _backtest(recorded, *base)
    assert own.exit_code == 0, own.stderr
    data = json.loads(own.stdout)
    assert data["outcome"] == "RolledBack"
    assert data["first_fail"]["at"] == ended.isoformat()
    assert data["decisions"][0]["at"] == recorded.incident.isoformat()

    stricter = POLICY.replace("maxIncrease: 0.02", "maxIncrease: 0.01")
    strict = _backtest(recorded, *base, "--policy", _policy(tmp_path, stricter, "s.yaml"))
    assert strict.exit_code == 0, strict.stderr
    strict_data = json.loads(strict.stdout)
    assert strict_data["outcome"] == "RolledBack"
    assert strict_data["first_fail"]["minutes"] < data["first_fail"]["minutes"]

    looser = POLICY.replace("maxIncrease: 0.02", "maxIncrease: 0.05").replace(
        "name: bot-v2, namespace: llm", "name: other-name, namespace: llm"
    )
    loose = _backtest(recorded, *base, "--policy", _policy(tmp_path, looser, "l.yaml"))
    assert loose.exit_code == 0, loose.stderr
    loose_data = json.loads(loose.stdout)
    assert loose_data["first_fail"] is None
    assert loose_data["outcome"] == "Promoted"

    text = _backtest(recorded, "--rollout", "bot-v2", "--database", str(database))
    assert text.exit_code == 0, text.stderr
    assert text.stdout.startswith("backtest llm/bot-v2 as recorded (RolledBack) · bot v1 → v2 · ")
