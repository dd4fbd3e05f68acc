"""Custom queries at validate time: bad templates and refused queries, with their positions."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from controller.cli.main import app
from controller.errors import PolicyError, Severity
from controller.policy import ModelRollout, check_text, load_text
from controller.policy.queries import CustomQueries
from tests.policy.base import policy

runner = CliRunner()


def custom(metric: str) -> str:
    """The base policy with its second metric (line 21) replaced by `metric`."""
    return policy(("{template: error-rate, max: 0.01}", metric))


GAUGE = "{{name: fmt, kind: gauge, query: '{query}', max: 0.1}}"


@pytest.mark.parametrize(
    ("metric", "path", "reason"),
    [
        pytest.param(
            GAUGE.format(query="sum(x{version={{version}}})"),
            "spec.analysis.metrics[1].query",
            "at character 15: {{version}} must be inside the quoted value of a label matcher "
            '(version="{{version}}"), not in the query itself, outside any string',
            id="placeholder-outside-quotes",
        ),
        pytest.param(
            GAUGE.format(query='sum(rate(x{version="{{version}}"}[5m])'),
            "spec.analysis.metrics[1].query",
            "does not parse as PromQL (placeholders filled in): unclosed left parenthesis",
            id="does-not-parse",
        ),
        pytest.param(
            "{name: fmt, kind: proportion, max: 0.1,"
            " query: 'sum(x{version=\"{{version}}\"})',"
            " trials: 'sum(y{version=\"{{version}}\"}) by {{cohort}}'}",
            "spec.analysis.metrics[1].trials",
            "at character 34: {{cohort}} must be inside the quoted value",
            id="in-trials",
        ),
        pytest.param(
            GAUGE.format(query='sum(x{version="{{version}}"}) offset {{model}}'),
            "spec.analysis.metrics[1].query",
            "at character 38: {{model}} must be inside the quoted value",
            id="model-as-a-duration",
        ),
        pytest.param(
            GAUGE.format(query='x{version="{{version}}"}[{{window}}]'),
            "spec.analysis.metrics[1].query",
            "must return an instant vector (one value per series), not a range vector",
            id="range-vector",
        ),
    ],
)
def test_a_bad_template_is_refused_with_file_line_and_path(
    metric: str, path: str, reason: str
) -> None:
    with pytest.raises(PolicyError) as caught:
        load_text(custom(metric), "bad.yaml")
    [problem] = caught.value.errors
    assert (problem.file, problem.line, problem.path) == ("bad.yaml", 21, path)
    assert reason in problem.message, problem.message


def test_a_model_built_in_python_refuses_a_bad_template_too() -> None:
    data = yaml.safe_load(custom(GAUGE.format(query="sum(x{version={{version}}})")))
    with pytest.raises(ValueError, match="must be inside the quoted value"):
        ModelRollout.model_validate(data)


GOOD = GAUGE.format(query='sum(x{version="{{version}}"})')


@pytest.mark.parametrize("mode", [None, CustomQueries.SCOPED, CustomQueries.ALLOW])
def test_custom_queries_are_valid_unless_denied(mode: CustomQueries | None) -> None:
    policies, problems = check_text(custom(GOOD), "p.yaml", custom_queries=mode)
    assert len(policies) == 1
    assert [p for p in problems if p.severity is Severity.ERROR] == []


def test_deny_refuses_a_custom_query_with_its_position() -> None:
    policies, problems = check_text(custom(GOOD), "p.yaml", custom_queries=CustomQueries.DENY)
    assert policies == []
    [problem] = problems
    assert (problem.line, problem.path) == (21, "spec.analysis.metrics[1].query")
    assert "custom queries are turned off on this controller" in problem.message
    assert "refusal-rate" in problem.message  # the templates that can be used instead


def test_deny_keeps_templates_valid() -> None:
    policies, _ = check_text(policy(), "p.yaml", custom_queries=CustomQueries.DENY)
    assert len(policies) == 1


def test_canaryctl_validate_reads_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = tmp_path / "custom.yaml"
    file.write_text(custom(GOOD))
    monkeypatch.setenv("CANARY_CUSTOM_QUERIES", "deny")
    denied = runner.invoke(app, ["validate", str(file)])
    assert denied.exit_code == 1
    assert f"{file}:21:" in denied.output
    assert "spec.analysis.metrics[1].query: custom queries are turned off" in denied.output
    monkeypatch.setenv("CANARY_CUSTOM_QUERIES", "scoped")
    assert runner.invoke(app, ["validate", str(file)]).exit_code == 0


def test_canaryctl_apply_refuses_when_denied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = tmp_path / "custom.yaml"
    file.write_text(custom(GOOD))
    target = tmp_path / "rollouts"
    target.mkdir()
    monkeypatch.setenv("CANARY_CUSTOM_QUERIES", "deny")
    result = runner.invoke(app, ["apply", str(file), "--dir", str(target)])
    assert result.exit_code == 1
    assert "custom queries are turned off" in result.output
    assert list(target.iterdir()) == []  # nothing written


def test_canaryctl_validate_shows_a_bad_template(tmp_path: Path) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(custom(GAUGE.format(query="sum(x{version={{version}}})")))
    result = runner.invoke(app, ["validate", str(file)])
    assert result.exit_code == 1
    assert f"{file}:21:" in result.output
    assert "spec.analysis.metrics[1].query: at character 15: {{version}}" in result.output
