"""`canaryctl validate`: exit codes, text and JSON output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from controller.cli.main import app
from tests.policy.base import BASE, policy

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_the_shipped_examples_are_valid() -> None:
    result = runner.invoke(app, ["validate", str(ROOT / "policies")])
    assert result.exit_code == 0, result.output
    shipped = len(list((ROOT / "policies").glob("*.yaml")))
    assert shipped >= 6
    assert sum(line.startswith("OK ") for line in result.output.splitlines()) == shipped
    assert f"{shipped} valid, 0 error(s) in {shipped} file(s)" in result.output
    # without the operator's allowlist here, the gates example's webhooks are not checked
    assert "CANARY_WEBHOOK_ALLOW is not set here" in result.output


def test_a_broken_file_exits_1_with_position_and_path(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(BASE)
    bad = tmp_path / "bad.yaml"
    bad.write_text(policy(("{weight: 50, hold: 10m}", "{weight: 5, hold: 10m}")))
    result = runner.invoke(app, ["validate", str(good), str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:14:16: spec.steps[1].weight: must be greater than" in result.output
    assert "OK" in result.output  # the good file is still reported
    assert "Traceback" not in result.output


def test_json_output_lists_every_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        policy(("service: bot-v2}", "service: bot-v1}"), ("interval: 30s", "interval: 10m"))
    )
    result = runner.invoke(app, ["validate", "--output", "json", str(bad)])
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["valid"] is False
    assert report["policies"] == []
    assert [(p["path"], p["line"], p["column"]) for p in report["problems"]] == [
        ("spec.candidate.service", 7, 37),
        ("spec.analysis.interval", 17, 15),
    ]
    assert all(p["file"] == str(bad) and p["severity"] == "error" for p in report["problems"])


def test_warnings_do_not_fail_validation(tmp_path: Path) -> None:
    path = tmp_path / "sticky.yaml"
    path.write_text(policy(("route: bot}", "route: bot, stickyHeader: x-conversation-id}")))
    result = runner.invoke(app, ["validate", "-o", "json", str(path)])
    assert result.exit_code == 0
    [warning] = json.loads(result.output)["problems"]
    assert warning["severity"] == "warning"


def test_a_missing_path_is_a_usage_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2


def test_a_directory_without_policies_fails(tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", str(tmp_path)])
    assert result.exit_code == 1
    assert "no policy files found" in result.output


def test_an_unreadable_file_is_one_clear_error(tmp_path: Path) -> None:
    directory = tmp_path / "dir.yaml"
    directory.mkdir()
    (directory / "inner.yaml").write_bytes(b"\x00\x01")
    result = runner.invoke(app, ["validate", str(directory)])
    assert result.exit_code == 1
    assert "contains NUL bytes" in result.output or "not UTF-8" in result.output


def test_db_upgrade_creates_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'canary.db'}"
    monkeypatch.setenv("CANARY_DATABASE_URL", url)
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert "is at revision head" in result.output
    from controller.store.sql import SqlStore

    assert SqlStore(url).rollouts() == []


@pytest.mark.parametrize("as_url", [True, False], ids=["url", "file"])
def test_db_upgrade_takes_the_database_like_other_store_commands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, as_url: bool
) -> None:
    monkeypatch.setenv("CANARY_DATABASE_URL", f"sqlite:///{tmp_path / 'not-this-one.db'}")
    path = tmp_path / "chosen.db"
    result = runner.invoke(
        app, ["db", "upgrade", "--database", f"sqlite:///{path}" if as_url else str(path)]
    )
    assert result.exit_code == 0, result.output
    assert "is at revision head" in result.output
    assert path.is_file() and not (tmp_path / "not-this-one.db").exists()
    status = runner.invoke(app, ["status", "--database", str(path), "-o", "json"])
    assert status.exit_code == 0 and json.loads(status.stdout) == []


def test_db_upgrade_on_an_unreachable_database_is_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "CANARY_DATABASE_URL", "postgresql+psycopg://u:secretpw@127.0.0.1:9/none?connect_timeout=2"
    )
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 1
    assert "unreachable" in result.output
    assert "secretpw" not in result.output
    assert "Traceback" not in result.output
