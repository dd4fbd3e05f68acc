"""Export the policy models as the ModelRollout CustomResourceDefinition.

The CRD's schema is generated from the same pydantic models the controller
validates with, so the two cannot drift (`make crd` regenerates the file and a
test fails when the committed one is stale). Kubernetes wants a *structural*
OpenAPI v3.0 schema, so pydantic's JSON Schema is rewritten here:
- `$ref`s are inlined and titles and defaults dropped (the controller applies
  defaults itself, the same way for files and for objects);
- `X | None` becomes the type with `nullable: true`;
- JSON Schema's numeric `exclusiveMinimum` becomes OpenAPI 3.0's boolean form;
- a value that may be a number or a duration string (a latency limit, `2.5s`)
  cannot be typed structurally, so it is `x-kubernetes-preserve-unknown-fields`
  and validated by the controller, which reports the field path and reason.

The API server's validation is a first line of defence only; `canaryctl
validate` and the controller apply every rule, including the cross-field ones.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from controller.policy.model import API_GROUP, KIND, ModelRollout
from controller.policy.status import RolloutStatus

PLURAL = "modelrollouts"
VERSION = "v1alpha1"
# propertyNames is JSON Schema only; OpenAPI v3.0 (and so Kubernetes) has no such keyword.
_DROP = {"title", "default", "examples", "propertyNames"}


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    """`node` rewritten into the structural OpenAPI v3.0 subset Kubernetes accepts."""
    if isinstance(node, list):
        return [_structural(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP or key == "$defs":
            continue
        if key == "additionalProperties" and value is False:
            continue  # structural schemas prune unknown fields; `false` is not allowed
        if key == "const":
            out["enum"] = [value]
            continue
        if key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[bound] = value
            out[key] = True
            continue
        if key == "properties":
            out[key] = {name: _structural(schema, defs) for name, schema in value.items()}
            continue
        out[key] = _structural(value, defs)
    options = out.pop("anyOf", None)
    if options is not None:
        out.update(_merge_any_of(options))
    return out


def _merge_any_of(options: list[dict[str, Any]]) -> dict[str, Any]:
    non_null = [o for o in options if o.get("type") != "null"]
    result: dict[str, Any] = {}
    if len(non_null) < len(options):
        result["nullable"] = True
    if len(non_null) == 1:
        result.update(non_null[0])
    elif len({o.get("type") for o in non_null}) == 1:
        result["type"] = non_null[0]["type"]
    else:
        result["x-kubernetes-preserve-unknown-fields"] = True
    return result


def spec_schema() -> dict[str, Any]:
    """The structural OpenAPI schema of `spec`."""
    schema = ModelRollout.model_json_schema(by_alias=True, mode="validation")
    defs = schema.get("$defs", {})
    spec = _structural(schema["properties"]["spec"], defs)
    assert isinstance(spec, dict)
    return spec


def status_schema() -> dict[str, Any]:
    """The structural OpenAPI schema of `status` (written by the controller only)."""
    schema = RolloutStatus.model_json_schema(by_alias=True, mode="serialization")
    status = _structural(schema, schema.get("$defs", {}))
    assert isinstance(status, dict)
    status["description"] = "Written by the controller."
    return status


def build_crd() -> dict[str, Any]:
    """The ModelRollout CustomResourceDefinition as a plain object."""
    column = "additionalPrinterColumns"
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{API_GROUP}",
            "labels": {"app.kubernetes.io/part-of": "canary-controller"},
        },
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": ["mro"],
                "categories": ["canary"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    column: [
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                        {"name": "Step", "type": "integer", "jsonPath": ".status.step"},
                        {"name": "Weight", "type": "integer", "jsonPath": ".status.weight"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A step-by-step, self-judging rollout of a model "
                            "version behind an ingress.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema(),
                                "status": status_schema(),
                            },
                        }
                    },
                }
            ],
        },
    }


def render_crd() -> str:
    """The CRD as the YAML committed under charts/canary-controller/crds/."""
    header = "# Generated from controller/policy by `make crd`; do not edit by hand.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=100)


if __name__ == "__main__":
    sys.stdout.write(render_crd())
