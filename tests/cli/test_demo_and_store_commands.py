"""`canaryctl demo`, and the commands that read and steer the store afterwards."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from controller.cli.main import app
from controller.cli.views import history_json, history_view
from controller.store import (
    AnalysisRecord,
    RouteActionRecord,
    StoredRollout,
    TickWrite,
    TransitionRecord,
)
from controller.store.memory import MemoryStore
from controller.store.sql import SqlStore

runner = CliRunner()
KEY = "llm/support-bot-v7"


def _demo(tmp_path: Path, scenario: str) -> dict[str, object]:
    database = tmp_path / f"{scenario}.db"
    result = runner.invoke(
        app, ["demo", "--scenario", scenario, "--database", str(database), "--output", "json"]
    )
    assert result.exit_code == 0, result.output
    report: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["database"] == str(database)
    return report


def test_the_default_demo_catches_the_cohort_regression(tmp_path: Path) -> None:
    report = _demo(tmp_path, "cohort-regression")
    assert (report["phase"], report["cause"]) == ("RolledBack", "LimitBroken")
    [failure] = report["failures"]  # type: ignore[misc]
    assert (failure["metric"], failure["cohort"]) == ("refusal-rate", "non-english")
    assert failure["candidate"] > failure["baseline"] + 0.02


def test_a_healthy_candidate_is_promoted_through_every_step(tmp_path: Path) -> None:
    report = _demo(tmp_path, "healthy")
    assert (report["phase"], report["steps_completed"], report["failures"]) == (
        "Promoted",
        5,
        [],
    )
    assert report["cause"] is None  # promoted on evidence


OUTAGE_REASON = (
    "no data from Prometheus for all 16 cells (4 metrics × 4 cohorts) for 10m; "
    "first: refusal-rate in non-english"
)


def test_an_outage_holds_then_follows_the_no_data_rule(tmp_path: Path) -> None:
    report = _demo(tmp_path, "outage")
    assert (report["phase"], report["cause"]) == ("RolledBack", "NoData")
    assert report["failures"] == []  # not measured is not failed
    store = SqlStore(f"sqlite:///{tmp_path / 'outage.db'}")
    events = [m.event for m in store.outbox(KEY)]
    assert "holding" in events
    last = store.transitions(KEY)[-1]
    assert last.reason == OUTAGE_REASON
    assert last.cause == "NoData"
    store.close()
    # every surface says the metrics could not be measured, none that a metric failed
    history = runner.invoke(
        app, ["history", KEY, "--database", str(tmp_path / "outage.db"), "-o", "json"]
    )
    [rollback] = [e for e in json.loads(history.stdout)["events"] if e.get("to") == "RolledBack"]
    assert rollback["cause"] == "NoData"
    assert rollback["evidence"] and {e["verdict"] for e in rollback["evidence"]} == {"no-data"}
    text = runner.invoke(app, ["history", KEY, "--database", str(tmp_path / "outage.db")])
    assert "NoData" in text.output and ": fail" not in text.output
    status = runner.invoke(app, ["status", "--database", str(tmp_path / "outage.db"), "-o", "json"])
    [row] = json.loads(status.stdout)
    assert (row["cause"], row["reason"]) == ("NoData", OUTAGE_REASON)
    shown = runner.invoke(app, ["status", KEY, "--database", str(tmp_path / "outage.db")])
    assert f"[NoData] {OUTAGE_REASON}" in " ".join(shown.output.split())


def test_the_demo_shows_progress_and_the_slack_preview(tmp_path: Path) -> None:
    result = runner.invoke(app, ["demo", "--database", str(tmp_path / "d.db")])
    assert result.exit_code == 0, result.output
    assert "Shadowing → RolledBack [LimitBroken]" in result.output
    assert "Slack #support-bot" in result.output
    assert "@U024BE7LH" in result.output
    assert f"canaryctl history {KEY}" in result.output


@pytest.fixture
def demo_db(tmp_path: Path) -> Path:
    _demo(tmp_path, "cohort-regression")
    return tmp_path / "cohort-regression.db"


def test_history_shows_each_decision_with_its_evidence(demo_db: Path) -> None:
    result = runner.invoke(
        app, ["history", "support-bot-v7", "--database", str(demo_db), "-o", "json"]
    )
    assert result.exit_code == 0, result.output
    events = json.loads(result.stdout)["events"]
    transitions = [e for e in events if e["kind"] == "transition"]
    assert [(t["from"], t["to"], t["cause"]) for t in transitions] == [
        ("Pending", "Shadowing", None),
        ("Shadowing", "RolledBack", "LimitBroken"),
    ]
    [evidence] = transitions[-1]["evidence"]
    assert (evidence["metric"], evidence["cohort"], evidence["verdict"]) == (
        "refusal-rate",
        "non-english",
        "fail",
    )
    assert evidence["candidate_samples"] > 200
    assert any(e["kind"] == "route" and e["action"] == "restore" for e in events)
    text = runner.invoke(app, ["history", KEY, "--database", str(demo_db)])
    assert "RolledBack" in text.output
    assert "n=2483" in text.output or "candidate" in text.output


def test_history_shows_why_a_route_was_put_back_or_a_write_refused(demo_db: Path) -> None:
    store = SqlStore(f"sqlite:///{demo_db}")
    reason = "the route carried the rolled-back candidate v7 (candidate 10%); put back"
    store.append_route_action(
        KEY, RouteActionRecord(datetime.now(UTC), "restore", {"restore": "baseline"}, reason=reason)
    )
    store.close()
    result = runner.invoke(app, ["history", KEY, "--database", str(demo_db), "-o", "json"])
    assert result.exit_code == 0, result.output
    routes = [e for e in json.loads(result.stdout)["events"] if e["kind"] == "route"]
    assert [e["action"] for e in routes if e["reason"] == reason] == ["restore"]
    text = runner.invoke(app, ["history", KEY, "--database", str(demo_db)], env={"COLUMNS": "300"})
    assert reason in text.output


def test_status_shows_phase_route_and_the_verdict_grid(demo_db: Path) -> None:
    result = runner.invoke(app, ["status", "--database", str(demo_db), "-o", "json"])
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.stdout)
    assert (row["rollout"], row["phase"], row["route"]["weight"]) == (KEY, "RolledBack", 0)
    assert row["cause"] == "LimitBroken"
    cells = {(v["metric"], v["cohort"]): v["verdict"] for v in row["verdicts"]}
    assert cells[("refusal-rate", "non-english")] == "fail"
    text = runner.invoke(app, ["status", "support-bot-v7", "--database", str(demo_db)])
    assert "non-english" in text.output and "fail" in text.output


def test_status_shows_why_the_policy_source_holds_a_rollout(tmp_path: Path) -> None:
    database = Path(str(_demo(tmp_path, "healthy")["database"]))
    store = SqlStore(f"sqlite:///{database}")
    try:
        store.record_source_problem(
            KEY, "bot.yaml is invalid: line 3: spec.stps", datetime.now(UTC)
        )
    finally:
        store.close()
    [row] = json.loads(
        runner.invoke(app, ["status", "--database", str(database), "-o", "json"]).stdout
    )
    assert row["source_problem"]["problem"] == "bot.yaml is invalid: line 3: spec.stps"
    text = runner.invoke(app, ["status", KEY, "--database", str(database)]).output
    assert "held: bot.yaml is invalid" in text


def test_commands_on_an_ended_rollout_are_refused_in_one_line(demo_db: Path) -> None:
    result = runner.invoke(app, ["resume", KEY, "--database", str(demo_db)])
    assert result.exit_code == 1
    assert "cannot resume llm/support-bot-v7: it is RolledBack" in result.output
    assert "Traceback" not in result.output


def test_commands_are_recorded_with_actor_and_reason(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from controller.routing import MemoryRouter, RouteTarget
    from controller.runtime.executor import Executor
    from controller.store.sql import migrate
    from tests.runtime.test_executor import ROLLOUT, Metrics

    url = f"sqlite:///{tmp_path / 's.db'}"
    migrate(url)
    store = SqlStore(url)

    class Clock:
        def now(self) -> datetime:
            return datetime.now(UTC)

    Executor(store, Clock()).tick(ROLLOUT, MemoryRouter(RouteTarget.of(ROLLOUT)), Metrics())
    for args in (
        ["pause", "bot-v2", "--reason", "odd answers", "--actor", "alice"],
        ["abort", "llm/bot-v2", "--reason", "bad", "--actor", "bob"],
    ):
        result = runner.invoke(app, [*args, "--database", str(tmp_path / "s.db")])
        assert result.exit_code == 0, result.output
        assert "recorded" in result.output
    assert [(c.command, c.actor, c.reason) for c in store.commands("llm/bot-v2")] == [
        ("pause", "alice", "odd answers"),
        ("abort", "bob", "bad"),
    ]
    store.close()


def test_unknown_rollouts_and_missing_stores_are_one_line_errors(
    tmp_path: Path, demo_db: Path
) -> None:
    missing = runner.invoke(app, ["history", "nope", "--database", str(demo_db)])
    assert missing.exit_code == 1
    assert "no rollout 'nope' in the store (known: llm/support-bot-v7)" in missing.output
    no_store = runner.invoke(app, ["status", "--database", str(tmp_path / "none.db")])
    assert no_store.exit_code == 1
    assert "no store at" in no_store.output


def test_history_words_a_deadline_pause_by_its_cause_with_the_undecided_cells() -> None:
    store = MemoryStore()
    at = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
    reason = "undecided at the deadline (40m): quality-score in power-users: ~1,200 more"
    looks = tuple(
        AnalysisRecord(at, 80, metric, cohort, verdict, evidence={"critical": True})
        for metric, cohort, verdict in (
            ("quality-score", "power-users", "inconclusive"),
            ("refusal-rate", "power-users", "pass"),
        )
    )
    rollout = StoredRollout(KEY, "llm", "support-bot-v7", 1, "v7", "Paused", 1, {}, {})
    paused = TransitionRecord(at, "Progressing", "Paused", 1, 1, reason, cause="Deadline")
    store.commit(TickWrite(rollout, None, transitions=(paused,), analyses=looks))
    data = history_json(store, store.rollouts()[0])
    [event] = [e for e in data["events"] if e["kind"] == "transition"]
    assert (event["cause"], event["reason"]) == ("Deadline", reason)
    assert [(e["metric"], e["verdict"]) for e in event["evidence"]] == [
        ("quality-score", "inconclusive")
    ]
    console = Console(width=200, record=True)
    console.print(history_view(data))
    shown = console.export_text()
    assert "Deadline" in shown and "quality-score in power-users: inconclusive" in shown
    assert "fail" not in shown
