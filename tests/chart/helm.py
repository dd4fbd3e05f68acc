"""Render and lint the chart with Helm's own Go library (helm-python-sdk), offline.

`render(values)` returns every Kubernetes object the chart would install, as
dicts, parsed with a loader that refuses duplicate keys (the API server's
strict decoding would refuse them too; plain YAML would silently keep the last).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

CHART = Path(__file__).resolve().parents[2] / "charts" / "canary-controller"
RELEASE = "canary"
NAMESPACE = "canary-system"
FULLNAME = "canary-canary-controller"
#: The kubeVersion floor in Chart.yaml; objects are validated against it and the newest.
OLDEST_KUBERNETES = "1.25"


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader that fails on a mapping key given twice."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"duplicate key {key!r}",
                key_node.start_mark,
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.load_all(text, Loader=_StrictLoader) if doc]


@dataclass(frozen=True)
class Rendered:
    """The objects of one render, by template, with lookups for the tests."""

    objects: tuple[tuple[str, dict[str, Any]], ...]
    notes: str

    def all(self) -> list[dict[str, Any]]:
        return [obj for _, obj in self.objects]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [obj for obj in self.all() if obj["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [o for o in self.of_kind(kind) if name is None or o["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
        return found[0]

    def kinds(self) -> list[str]:
        return sorted(obj["kind"] for obj in self.all())


def render(values: dict[str, Any] | None = None, *, upgrade: bool = False) -> Rendered:
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(values or {})
        manifests = chart.render(
            values or {},
            name=RELEASE,
            namespace=NAMESPACE,
            is_install=not upgrade,
            is_upgrade=upgrade,
        )
    objects: list[tuple[str, dict[str, Any]]] = []
    notes = ""
    for template, text in sorted(manifests.items()):
        if template.endswith("NOTES.txt"):
            notes = text
            continue
        objects.extend((template, obj) for obj in load_documents(text))
    return Rendered(tuple(objects), notes)


def lint(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Helm lint's findings above INFO (warnings and errors), in strict mode."""
    report = helm.lint(CHART, values or {}, strict=True, namespace=NAMESPACE)
    assert report["total_charts_linted"] == 1
    findings: list[dict[str, Any]] = [m for m in report["messages"] if m["severity"] >= 2]
    findings += [{"severity": 3, "path": "", "error": e} for e in report["errors"]]
    return findings


def crds() -> list[dict[str, Any]]:
    with helm.Chart.load(CHART) as chart:
        return [obj for crd in chart.crds for obj in load_documents(crd["data"])]
