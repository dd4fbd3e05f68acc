"""The chart serves the read-only dashboard only when asked: a port, a Service, a rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.dashboard import DEFAULT_PORT
from tests.chart.helm import FULLNAME, render
from tests.chart.test_workload import env_of, pod_spec, pod_spec_labels, settings_in_pod

SERVICE = f"{FULLNAME}-dashboard"


def test_off_by_default() -> None:
    rendered = render()
    (container,) = pod_spec(rendered)["containers"]
    assert "CANARY_DASHBOARD_PORT" not in env_of(container)
    assert [p["name"] for p in container["ports"]] == ["http"]
    assert [s["metadata"]["name"] for s in rendered.of_kind("Service")] == [FULLNAME]
    assert "read-only dashboard" not in rendered.notes


def test_enabled_the_controller_serves_it_behind_a_service_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered = render({"webDashboard": {"enabled": True}})
    pod = pod_spec(rendered)
    (container,) = pod["containers"]
    assert {"name": "dashboard", "containerPort": DEFAULT_PORT, "protocol": "TCP"} in container[
        "ports"
    ]
    settings = settings_in_pod(container, pod, tmp_path, monkeypatch)
    assert settings.dashboard_port == DEFAULT_PORT
    # served on the pod's addresses, as the health endpoints are (the Service reaches it)
    assert (settings.dashboard_host or settings.api_host) == "0.0.0.0"
    service = rendered.one("Service", SERVICE)
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {"name": "dashboard", "port": DEFAULT_PORT, "targetPort": "dashboard", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"].items() <= pod_spec_labels(rendered).items()
    assert f"port-forward svc/{SERVICE} {DEFAULT_PORT}" in rendered.notes
    # the controller's own Service is unchanged
    assert rendered.one("Service", FULLNAME)["spec"]["ports"][0]["targetPort"] == "http"


def test_the_network_policy_opens_the_dashboard_port_to_its_peers_only() -> None:
    peers = [{"namespaceSelector": {"matchLabels": {"name": "ops"}}}]
    rendered = render({"webDashboard": {"enabled": True, "from": peers}})
    ingress = rendered.one("NetworkPolicy")["spec"]["ingress"]
    assert ingress == [
        {"ports": [{"port": "http", "protocol": "TCP"}]},
        {"ports": [{"port": "dashboard", "protocol": "TCP"}], "from": peers},
    ]


def test_the_service_can_be_shaped() -> None:
    values = {"webDashboard": {"enabled": True, "service": {"type": "NodePort", "port": 80}}}
    service = render(values).one("Service", SERVICE)
    assert service["spec"]["type"] == "NodePort"
    assert service["spec"]["ports"][0]["port"] == 80
    assert service["spec"]["ports"][0]["targetPort"] == "dashboard"
