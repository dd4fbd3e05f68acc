"""`canaryctl cases list` and `export`: the demo's rollback as a regression-set spec."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from controller.cases import EXPORT_KEYS
from controller.cli.main import app

runner = CliRunner()
KEY = "llm/support-bot-v7"


def _demo(directory: Path, scenario: str) -> Path:
    database = directory / f"{scenario}.db"
    result = runner.invoke(
        app, ["demo", "--scenario", scenario, "--database", str(database), "--output", "json"]
    )
    assert result.exit_code == 0, result.output
    return database


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _demo(tmp_path_factory.mktemp("cases"), "cohort-regression")


def test_the_demo_rollback_exports_the_failing_cohort_with_trace_ids(demo_db: Path) -> None:
    result = runner.invoke(
        app, ["cases", "export", KEY, "--database", str(demo_db), "--format", "jsonl"]
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert rows
    [case] = [r for r in rows if (r["cohort"], r["metric"]) == ("non-english", "refusal-rate")]
    assert tuple(case) == EXPORT_KEYS
    assert case["trace_ids"]
    assert len(case["trace_ids"]) <= 20  # analysis.evalCases.maxTraceIds, by default
    assert len(set(case["trace_ids"])) == len(case["trace_ids"])
    assert case["trace_ids_reason"] is None
    assert case["match"] == {"header": "accept-language", "regex": "^(de|fr|es|ja|zh)"}
    assert (case["rollout"], case["model"]) == (KEY, "support-bot")
    assert (case["baseline_version"], case["candidate_version"]) == ("v6", "v7")
    assert (case["direction"], case["limit"], case["tolerance"]) == (
        "higher-is-worse",
        {"name": "maxIncrease", "value": 0.02},
        0.01,
    )
    assert case["candidate"]["value"] > case["baseline"]["value"] + 0.02
    assert case["candidate"]["samples"] >= 200
    assert case["window_start"] < case["window_end"]
    assert 'cohort="non-english"' in case["promql"]
    assert case["trigger"] == "rollback"


def test_the_csv_export_has_the_same_cases_and_goes_to_a_file(
    demo_db: Path, tmp_path: Path
) -> None:
    jsonl = runner.invoke(app, ["cases", "export", "support-bot-v7", "--database", str(demo_db)])
    target = tmp_path / "cases.csv"
    result = runner.invoke(
        app,
        ["cases", "export", KEY, "--database", str(demo_db), "-f", "csv", "--output", str(target)],
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    want = [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert [r["id"] for r in rows] == [w["id"] for w in want]
    assert [r["trace_ids"].split() for r in rows] == [w["trace_ids"] for w in want]
    assert [json.loads(r["match"]) for r in rows] == [w["match"] for w in want]


def test_cases_list_shows_each_case_with_its_trace_ids(demo_db: Path) -> None:
    text = runner.invoke(app, ["cases", "list", "--database", str(demo_db)], env={"COLUMNS": "200"})
    assert text.exit_code == 0, text.output
    assert "non-english" in text.output and "refusal-rate" in text.output
    listed = runner.invoke(app, ["cases", "list", KEY, "--database", str(demo_db), "-o", "json"])
    [case] = json.loads(listed.stdout)
    assert case["trace_ids"]


def test_a_promoted_rollout_has_no_cases(tmp_path: Path) -> None:
    database = _demo(tmp_path, "healthy")
    result = runner.invoke(app, ["cases", "export", KEY, "--database", str(database)])
    assert (result.exit_code, result.stdout) == (0, "")
    listed = runner.invoke(app, ["cases", "list", KEY, "--database", str(database)])
    assert "no eval cases recorded" in listed.output


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["cases", "export", "nope"], id="export"),
        pytest.param(["cases", "list", "nope"], id="list"),
    ],
)
def test_an_unknown_rollout_is_one_line_and_exit_1(demo_db: Path, args: list[str]) -> None:
    result = runner.invoke(app, [*args, "--database", str(demo_db)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "error: no rollout 'nope' in the store (known: llm/support-bot-v7)"
    ]


def test_an_unreadable_store_gives_the_same_message_as_history(tmp_path: Path) -> None:
    missing = str(tmp_path / "none.db")
    history = runner.invoke(app, ["history", KEY, "--database", missing])
    export = runner.invoke(app, ["cases", "export", KEY, "--database", missing])
    assert export.exit_code == history.exit_code == 1
    assert export.output == history.output
    assert "no store at" in export.output
    garbage = tmp_path / "garbage.db"
    garbage.write_text("not a database")
    history = runner.invoke(app, ["history", KEY, "--database", str(garbage)])
    export = runner.invoke(app, ["cases", "export", KEY, "--database", str(garbage)])
    assert export.exit_code == history.exit_code == 1
    assert export.output == history.output


def test_an_unknown_format_is_a_usage_error(demo_db: Path) -> None:
    result = runner.invoke(app, ["cases", "export", KEY, "--database", str(demo_db), "-f", "xml"])
    assert result.exit_code == 2
    assert "--format must be jsonl or csv" in result.output
