"""The shipped example policies and the generated CRD."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from controller.policy import load_file
from controller.policy.crd import build_crd, render_crd

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "policies").glob("*.yaml"))
CRD_FILE = ROOT / "charts/canary-controller/crds/modelrollouts.canary.ai.yaml"


def test_there_are_examples_for_every_router_and_custom_metrics() -> None:
    routers = set()
    kinds = set()
    for path in EXAMPLES:
        [loaded] = load_file(path)
        routers.add(loaded.rollout.spec.traffic.router.value)
        kinds.update(m.kind for m in loaded.rollout.spec.analysis.metrics if m.query)
    assert routers == {"nginx-ingress", "gateway-api", "istio"}
    assert {"proportion", "histogram", "gauge"} <= {str(k) for k in kinds}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_is_valid_and_commented(path: Path) -> None:
    [loaded] = load_file(path)
    assert loaded.rollout.metadata.name
    assert path.read_text().startswith("#"), "every example explains itself"


def test_committed_crd_is_up_to_date() -> None:
    assert CRD_FILE.read_text() == render_crd(), "run `make crd` and commit the result"


def _walk(schema: dict[str, Any], path: str) -> list[str]:
    """Violations of the structural-schema rules Kubernetes enforces."""
    problems = []
    for banned in ("$ref", "anyOf", "oneOf", "allOf", "propertyNames", "const", "$defs"):
        if banned in schema:
            problems.append(f"{path}: {banned}")
    if schema.get("additionalProperties") is False:
        problems.append(f"{path}: additionalProperties false")
    untyped = "type" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields")
    if untyped:
        problems.append(f"{path}: no type")
    if "properties" in schema and "additionalProperties" in schema:
        problems.append(f"{path}: properties and additionalProperties")
    for name, child in schema.get("properties", {}).items():
        problems.extend(_walk(child, f"{path}.{name}"))
    if isinstance(schema.get("items"), dict):
        problems.extend(_walk(schema["items"], f"{path}[]"))
    if isinstance(schema.get("additionalProperties"), dict):
        problems.extend(_walk(schema["additionalProperties"], f"{path}{{}}"))
    return problems


def _schema() -> dict[str, Any]:
    version = build_crd()["spec"]["versions"][0]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def test_crd_schema_is_structural() -> None:
    assert _walk(_schema(), "") == []


def test_crd_has_status_subresource_and_printer_columns() -> None:
    version = build_crd()["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == ["Phase", "Step", "Weight", "Age"]


def _as_json_schema(node: Any) -> Any:
    """OpenAPI 3.0 `nullable` as JSON Schema draft 4, to validate with jsonschema."""
    if isinstance(node, list):
        return [_as_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _as_json_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes")}
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_pass_the_api_servers_schema(path: Path) -> None:
    validator = jsonschema.Draft4Validator(_as_json_schema(_schema()))
    errors = sorted(validator.iter_errors(yaml.safe_load(path.read_text())), key=str)
    assert errors == []


def test_the_schema_rejects_what_the_api_server_should() -> None:
    validator = jsonschema.Draft4Validator(_as_json_schema(_schema()))
    document = yaml.safe_load(EXAMPLES[0].read_text())
    document["spec"]["steps"][0]["weight"] = 0
    document["spec"]["traffic"]["router"] = "traefik"
    messages = [e.message for e in validator.iter_errors(document)]
    assert any("traefik" in m for m in messages)
    assert any("less than or equal to the minimum of 0" in m for m in messages)
