"""`canaryctl apply` and `canaryctl rehearse` against the kmock API server over HTTP."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from controller.cli.main import app
from tests.kube import KubeApi, without_server_metadata
from tests.policy.base import BASE, policy
from tests.routing.cases import HTTP_ROUTE, HTTP_ROUTES

runner = CliRunner()
MODELROLLOUTS = "canary.ai/v1alpha1/modelrollouts"


@pytest.fixture
def kube(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[KubeApi]:
    with KubeApi() as api:
        api.write_kubeconfig(tmp_path / "kubeconfig")
        monkeypatch.setenv("CANARY_KUBECONFIG", str(tmp_path / "kubeconfig"))
        yield api


def test_apply_writes_into_a_directory_source(tmp_path: Path) -> None:
    source = tmp_path / "bot.yaml"
    source.write_text(BASE)
    result = runner.invoke(app, ["apply", str(source), "--dir", str(tmp_path / "rollouts")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "rollouts" / "llm.bot-v2.yaml").read_text() == BASE


def test_an_invalid_policy_is_never_applied(tmp_path: Path) -> None:
    source = tmp_path / "bad.yaml"
    source.write_text(policy(("{weight: 100}", "{weight: 90}")))
    result = runner.invoke(app, ["apply", str(source), "--dir", str(tmp_path / "rollouts")])
    assert result.exit_code == 1
    assert "spec.steps[2].weight" in result.output
    assert not (tmp_path / "rollouts").exists()


def test_apply_creates_then_configures_the_modelrollout(tmp_path: Path, kube: KubeApi) -> None:
    kube.server.register(MODELROLLOUTS, "ModelRollout")
    source = tmp_path / "bot.yaml"
    source.write_text(BASE)
    first = runner.invoke(app, ["apply", str(source)])
    assert first.exit_code == 0, first.output
    assert "modelrollout llm/bot-v2 created" in first.output
    stored = kube.server.get(MODELROLLOUTS, "llm", "bot-v2")
    assert stored is not None
    assert stored["spec"]["steps"][0] == {
        "weight": 5,
        "hold": "10m",
        "cohortWeights": {"mobile": 10},
        "pause": False,
    }
    source.write_text(policy(("{weight: 50, hold: 10m}", "{weight: 40, hold: 10m}")))
    second = runner.invoke(app, ["apply", str(source)])
    assert second.exit_code == 0, second.output
    assert "configured" in second.output
    stored = kube.server.get(MODELROLLOUTS, "llm", "bot-v2")
    assert stored is not None
    assert stored["spec"]["steps"][1]["weight"] == 40


@pytest.mark.parametrize(
    ("status", "says"),
    [
        pytest.param(404, "the ModelRollout CRD is not installed", id="no-crd"),
        pytest.param(403, "forbidden by RBAC", id="forbidden"),
        pytest.param(503, "the API server answered 503", id="unavailable"),
    ],
)
def test_apply_errors_are_one_clear_line(
    tmp_path: Path, kube: KubeApi, status: int, says: str
) -> None:
    kube.server.register(MODELROLLOUTS, "ModelRollout")
    kube.server.fail("POST", "modelrollouts", None, status)
    source = tmp_path / "bot.yaml"
    source.write_text(BASE)
    result = runner.invoke(app, ["apply", str(source)])
    assert result.exit_code == 1
    assert says in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("scenario", ["healthy", "cohort-regression"])
def test_rehearse_drives_the_real_route_and_gives_it_back(
    tmp_path: Path, kube: KubeApi, scenario: str
) -> None:
    route = copy.deepcopy(HTTP_ROUTE)
    route["metadata"]["namespace"] = "llm"
    route.pop("status")
    for rule in route["spec"]["rules"]:
        for ref in rule["backendRefs"]:
            if ref["name"] != "status-page":
                ref["name"] = "bot-v1"
    kube.server.register(HTTP_ROUTES, "HTTPRoute")
    kube.server.put(HTTP_ROUTES, route)
    name = route["metadata"]["name"]
    source = tmp_path / "bot.yaml"
    source.write_text(
        policy(
            ("route: bot}", f"route: {name}}}"),
            ("{weight: 5, hold: 10m, cohortWeights: {mobile: 10}}", "{weight: 5, hold: 2m}"),
            ("{weight: 50, hold: 10m}", "{weight: 50, hold: 2m}"),
            ("      - {template: error-rate, max: 0.01}\n", ""),
        ).replace("    window: 5m\n", "    window: 5m\n    minSamples: 50\n")
    )
    result = runner.invoke(
        app,
        [
            "rehearse",
            str(source),
            "--scenario",
            scenario,
            "--pace",
            "0",
            "--rps",
            "2000",
            "--database",
            str(tmp_path / "r.db"),
            "--output",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    weights = [r["weight"] for r in report["routes"] if not r.get("restored")]
    if scenario == "healthy":
        assert report["phase"] == "Promoted"
        assert weights == [5, 50, 100]
    else:
        assert report["phase"] == "RolledBack"
        assert report["failures"][0]["cohort"] == "mobile"
    assert report["routes"][-1]["restored"] is True
    after = kube.server.get(HTTP_ROUTES, "llm", name)
    assert after is not None
    assert without_server_metadata(after) == without_server_metadata(route)
