"""The chart lints and renders for every documented combination; every object validates."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest

from tests.chart.combinations import COMBINATIONS
from tests.chart.helm import FULLNAME, NAMESPACE, OLDEST_KUBERNETES, crds, lint, render

#: kubernetes-validate ships the schemas of Kubernetes' own kinds only. A
#: ServiceMonitor is a Prometheus Operator custom resource: its shape is checked
#: by tests/chart/test_workload.py instead, and no other kind may lack a schema.
CUSTOM_KINDS = {"ServiceMonitor"}

CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


def validate(obj: dict[str, Any]) -> None:
    for version in (OLDEST_KUBERNETES, kubernetes_validate.latest_version()):
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            assert obj["kind"] in CUSTOM_KINDS, f"no schema for {obj['kind']}"
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(
                f"{obj['kind']} {obj['metadata']['name']} is invalid for Kubernetes "
                f"{version} at {path}: {exc.message}"
            )


@pytest.mark.parametrize("values", COMBINATIONS)
def test_lints_cleanly(values: dict[str, Any]) -> None:
    assert lint(values) == []


@pytest.mark.parametrize("values", COMBINATIONS)
def test_every_rendered_object_validates(values: dict[str, Any]) -> None:
    rendered = render(values)
    assert rendered.all()
    for obj in rendered.all():
        validate(obj)
        meta = obj["metadata"]
        assert len(meta["name"]) <= 63
        assert meta["labels"]["app.kubernetes.io/part-of"] == "canary-controller"
        if obj["kind"] not in CLUSTER_SCOPED:
            assert meta["namespace"], f"{obj['kind']} {meta['name']} has no namespace"


@pytest.mark.parametrize("values", COMBINATIONS)
def test_renders_the_same_for_an_upgrade(values: dict[str, Any]) -> None:
    assert render(values, upgrade=True).all() == render(values).all()


def test_the_generated_crd_ships_with_the_chart_and_validates() -> None:
    (crd,) = crds()
    validate(crd)
    assert crd["metadata"]["name"] == "modelrollouts.canary.ai"
    assert crd["spec"]["versions"][0]["subresources"] == {"status": {}}


def test_defaults_install_the_minimum() -> None:
    rendered = render()
    assert rendered.kinds() == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "NetworkPolicy",  # on by default: the endpoints have no authentication
        "Service",
        "ServiceAccount",
    ]
    assert rendered.one("Deployment")["metadata"]["name"] == FULLNAME
    assert "every namespace" in rendered.notes
    assert "emptyDir" in rendered.notes


@pytest.mark.parametrize(
    ("values", "kinds"),
    [
        pytest.param({"serviceMonitor": {"enabled": True}}, {"ServiceMonitor"}, id="sm"),
        pytest.param({"dashboard": {"enabled": True}}, {"ConfigMap"}, id="dashboard"),
        pytest.param({"database": {"existingSecret": "db"}}, {"Job"}, id="migration-job"),
        pytest.param(
            {"database": {"existingSecret": "db"}, "replicas": 2},
            {"Job", "PodDisruptionBudget"},
            id="replicas-pdb",
        ),
    ],
)
def test_optional_objects_appear_only_when_asked(values: dict[str, Any], kinds: set[str]) -> None:
    base = set(render().kinds())
    assert set(render(values).kinds()) - base == kinds


def test_the_network_policy_can_be_turned_off_and_the_notes_say_what_is_open() -> None:
    off = render({"networkPolicy": {"enabled": False}})
    assert set(render().kinds()) - set(off.kinds()) == {"NetworkPolicy"}
    assert "WARNING: networkPolicy.enabled is false" in off.notes
    assert "set\nnetworkPolicy.metricsFrom to your Prometheus" in render().notes
    peers = [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]
    closed = render({"networkPolicy": {"metricsFrom": peers}}).notes
    assert "networkPolicy" not in closed


@pytest.mark.parametrize(
    ("values", "message"),
    [
        pytest.param({"replicas": 2}, "replicas > 1 needs the shared Postgres store", id="sqlite"),
        pytest.param(
            {"migrations": {"mode": "job"}}, "a Job cannot reach the SQLite file", id="job-sqlite"
        ),
        pytest.param(
            {"prometheus": {"ca": {"existingSecret": "a", "existingConfigMap": "b"}}},
            "not both",
            id="two-cas",
        ),
    ],
)
def test_combinations_that_cannot_work_fail_with_the_reason(
    values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmRenderError, match=message):
        render(values)


@pytest.mark.parametrize(
    ("values", "where"),
    [
        pytest.param({"replicas": 0}, "/replicas", id="no-replicas"),
        pytest.param({"replicaCount": 2}, "additional properties", id="unknown-key"),
        pytest.param({"watchNamespaces": ["Team_A"]}, "/watchNamespaces/0", id="bad-namespace"),
        pytest.param({"controller": {"logFormat": "xml"}}, "/controller/logFormat", id="format"),
        pytest.param({"migrations": {"mode": "sometimes"}}, "/migrations/mode", id="mode"),
        pytest.param({"prometheus": {"url": "prometheus:9090"}}, "/prometheus/url", id="url"),
        pytest.param({"image": {"digest": "latest"}}, "/image/digest", id="digest"),
        pytest.param(
            {"securityContext": {"readOnlyRootFilesystem": False}},
            "/securityContext/readOnlyRootFilesystem",
            id="writable-root",
        ),
        pytest.param(
            {"securityContext": {"allowPrivilegeEscalation": True}},
            "/securityContext/allowPrivilegeEscalation",
            id="escalation",
        ),
        pytest.param(
            {"securityContext": {"capabilities": {"drop": ["NET_RAW"]}}},
            "/securityContext/capabilities/drop",
            id="keeps-capabilities",
        ),
        pytest.param(
            {"securityContext": {"capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN"]}}},
            "/securityContext/capabilities/add",
            id="adds-capabilities",
        ),
        pytest.param(
            {"podSecurityContext": {"runAsNonRoot": False}},
            "/podSecurityContext/runAsNonRoot",
            id="root",
        ),
        pytest.param(
            {"podSecurityContext": {"runAsUser": 0}}, "/podSecurityContext/runAsUser", id="uid-0"
        ),
        pytest.param(
            {"podSecurityContext": {"seccompProfile": {"type": "Unconfined"}}},
            "/podSecurityContext/seccompProfile/type",
            id="unconfined",
        ),
    ],
)
def test_the_schema_rejects_unsafe_or_unknown_values(values: dict[str, Any], where: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=where):
        render(values)
    assert any(where in finding["error"] for finding in lint(values))


def test_everything_renders_in_the_release_namespace() -> None:
    rendered = render({"database": {"existingSecret": "db"}, "replicas": 2})
    namespaces = {o["metadata"].get("namespace") for o in rendered.all()} - {None}
    assert namespaces == {NAMESPACE}
