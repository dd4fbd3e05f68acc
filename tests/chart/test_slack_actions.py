"""The chart's Slack actions: the signing secret as a file, a port, an Ingress, a NetworkPolicy.

Rendered with Helm's own library (helm-python-sdk). The pod is configured
through the real `Settings`, as the container would read them, and the port
it is told to serve `/slack/actions` on is the one the Service, the Ingress
and the NetworkPolicy name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import pytest

from tests.chart.helm import FULLNAME, render
from tests.chart.test_workload import env_of, pod_spec, settings_in_pod

ACTIONS: dict[str, Any] = {
    "slack": {
        "existingSecret": "canary-slack",
        "key": "bot-token",
        "actions": {
            "enabled": True,
            "signingSecret": {"existingSecret": "canary-slack-app", "key": "signing"},
        },
    }
}


def with_actions(**changes: Any) -> dict[str, Any]:
    actions = {**ACTIONS["slack"]["actions"], **changes}
    return {"slack": {**ACTIONS["slack"], "actions": actions}}


def test_the_signing_secret_is_a_file_and_actions_get_their_own_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered = render(ACTIONS)
    pod = pod_spec(rendered)
    (container,) = pod["containers"]
    settings = settings_in_pod(container, pod, tmp_path, monkeypatch)
    assert settings.slack_signing_secret is not None
    assert settings.slack_signing_secret.get_secret_value().strip() == "canary-slack-app/signing"
    assert settings.slack_token is not None
    assert (settings.slack_actions_host, settings.slack_actions_port) == ("0.0.0.0", 8081)
    assert settings.metrics_port is None  # /metrics stays on the API port, not beside actions
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8080, "slack-actions": 8081}
    service = {p["name"]: p["targetPort"] for p in rendered.one("Service")["spec"]["ports"]}
    assert service == {"http": "http", "slack-actions": "slack-actions"}
    for value in env_of(container).values():
        assert "canary-slack-app" not in value  # the secret never travels as a variable


def test_without_actions_nothing_about_them_is_rendered() -> None:
    plain = render({"slack": {"existingSecret": "canary-slack"}})
    (container,) = pod_spec(plain)["containers"]
    assert "CANARY_SLACK_ACTIONS_PORT" not in env_of(container)
    assert [p["name"] for p in container["ports"]] == ["http"]
    assert "Ingress" not in plain.kinds()
    sources = next(v for v in pod_spec(plain)["volumes"] if v["name"] == "secrets")
    paths = [i["path"] for s in sources["projected"]["sources"] for i in s["secret"]["items"]]
    assert paths == ["slack_token"]


def test_the_network_policy_opens_the_actions_port_to_the_ingress_controller_only() -> None:
    peers = [{"namespaceSelector": {"matchLabels": {"name": "ingress-nginx"}}}]
    policy = render(with_actions(**{"from": peers})).one("NetworkPolicy")
    http, actions = policy["spec"]["ingress"]
    assert http == {"ports": [{"port": "http", "protocol": "TCP"}]}
    assert actions == {"ports": [{"port": "slack-actions", "protocol": "TCP"}], "from": peers}


def test_the_ingress_exposes_slack_actions_and_nothing_else() -> None:
    tls = [{"hosts": ["canary.example.com"], "secretName": "canary-tls"}]
    rendered = render(
        with_actions(
            port=9443,
            ingress={
                "enabled": True,
                "className": "nginx",
                "host": "canary.example.com",
                "annotations": {"cert-manager.io/cluster-issuer": "letsencrypt"},
                "tls": tls,
            },
        )
    )
    ingress = rendered.one("Ingress", f"{FULLNAME}-slack-actions")
    spec = ingress["spec"]
    assert spec["ingressClassName"] == "nginx"
    assert spec["tls"] == tls
    (rule,) = spec["rules"]
    assert rule["host"] == "canary.example.com"
    assert rule["http"]["paths"] == [
        {
            "path": "/slack/actions",
            "pathType": "Exact",
            "backend": {"service": {"name": FULLNAME, "port": {"name": "slack-actions"}}},
        }
    ]
    service = {p["name"]: p["port"] for p in rendered.one("Service")["spec"]["ports"]}
    assert service == {"http": 8080, "slack-actions": 9443}
    assert ingress["metadata"]["annotations"] == {"cert-manager.io/cluster-issuer": "letsencrypt"}
    assert "Request URL to https://canary.example.com/slack/actions" in rendered.notes


@pytest.mark.parametrize(
    ("values", "message"),
    [
        pytest.param(
            {"slack": {"existingSecret": "s", "actions": {"enabled": True}}},
            "needs slack.actions.signingSecret.existingSecret",
            id="no-signing-secret",
        ),
        pytest.param(
            {
                "slack": {
                    "actions": {
                        "enabled": True,
                        "signingSecret": {"existingSecret": "a", "key": "k"},
                    }
                }
            },
            "needs slack.existingSecret",
            id="no-bot-token",
        ),
        pytest.param(
            with_actions(ingress={"enabled": True}), "needs slack.actions.ingress.host", id="host"
        ),
        pytest.param(
            {"slack": {"actions": {"ingress": {"enabled": True, "host": "a.example.com"}}}},
            "slack.actions.ingress.enabled needs slack.actions.enabled",
            id="ingress-without-actions",
        ),
    ],
)
def test_actions_that_cannot_work_fail_with_the_reason(
    values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmRenderError, match=message):
        render(values)


@pytest.mark.parametrize(
    ("values", "where"),
    [
        pytest.param(with_actions(port=8080), "/slack/actions/port", id="the-api-port"),
        pytest.param(with_actions(port=8090), "/slack/actions/port", id="the-dashboard-port"),
        pytest.param(with_actions(port=80), "/slack/actions/port", id="privileged"),
        pytest.param(
            with_actions(ingress={"enabled": True, "host": "https://x"}),
            "/slack/actions/ingress/host",
            id="host-is-a-url",
        ),
        pytest.param(with_actions(secret="x"), "additional properties", id="unknown-key"),
    ],
)
def test_the_schema_rejects_bad_action_values(values: dict[str, Any], where: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=where):
        render(values)
