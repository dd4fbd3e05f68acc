"""The controller's pods: locked down, configured the way controller.settings reads it,
probed on the endpoints controller.api serves, scraped, budgeted and fenced."""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from controller.api import DEFAULT_PORT, ApiServer, Readiness
from controller.settings import DEFAULT_SECRETS_DIR, Settings, load_settings
from controller.telemetry import ControllerMetrics
from tests.chart.combinations import ALL_SECRETS, COMBINATIONS, POSTGRES
from tests.chart.helm import FULLNAME, NAMESPACE, Rendered, render

WRITABLE = {"/tmp", "/var/lib/canary"}
#: The volume types the `restricted` Pod Security Standard allows.
RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def pod_spec(rendered: Rendered, kind: str = "Deployment") -> dict[str, Any]:
    spec: dict[str, Any] = rendered.one(kind)["spec"]["template"]["spec"]
    return spec


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def workloads(rendered: Rendered) -> list[dict[str, Any]]:
    return [pod_spec(rendered, kind) for kind in ("Deployment", "Job") if rendered.of_kind(kind)]


# --- pod security ----------------------------------------------------------------------


@pytest.mark.parametrize("values", COMBINATIONS)
def test_every_pod_runs_locked_down(values: dict[str, Any]) -> None:
    for pod in workloads(render(values)):
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
        for volume in pod["volumes"]:
            assert set(volume) - {"name"} <= RESTRICTED_VOLUMES, volume
        for container in containers(pod):
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}
            assert "privileged" not in context
            assert container["resources"]["limits"]["memory"]


@pytest.mark.parametrize("values", COMBINATIONS)
def test_the_only_writable_paths_are_volumes(values: dict[str, Any]) -> None:
    for pod in workloads(render(values)):
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in containers(pod):
            for mount in container["volumeMounts"]:
                volume = volumes[mount["name"]]
                if mount["mountPath"] in WRITABLE:
                    assert "emptyDir" in volume or "persistentVolumeClaim" in volume
                    assert not mount.get("readOnly")
                else:
                    assert mount["readOnly"] is True, mount
                    assert "projected" in volume or "secret" in volume or "configMap" in volume


def test_sqlite_lives_on_the_data_volume_and_postgres_needs_none() -> None:
    (sqlite,) = pod_spec(render())["containers"]
    assert {m["mountPath"] for m in sqlite["volumeMounts"]} == WRITABLE
    assert env_of(sqlite)["CANARY_DATABASE_URL"] == "sqlite:////var/lib/canary/canary.db"
    (postgres,) = pod_spec(render(POSTGRES))["containers"]
    assert {m["mountPath"] for m in postgres["volumeMounts"]} == {
        "/tmp",
        "/var/run/secrets/canary-controller",
    }
    assert "CANARY_DATABASE_URL" not in env_of(postgres)  # a variable would beat the Secret


def test_sqlite_can_keep_its_file_on_a_claim() -> None:
    pod = pod_spec(render({"database": {"sqlite": {"existingClaim": "canary-data"}}}))
    (data,) = [v for v in pod["volumes"] if v["name"] == "data"]
    assert data == {"name": "data", "persistentVolumeClaim": {"claimName": "canary-data"}}


@pytest.mark.parametrize(
    ("values", "strategy"),
    [
        pytest.param({}, {"type": "Recreate"}, id="sqlite-recreate"),
        pytest.param(
            POSTGRES,
            {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            id="postgres-rolling",
        ),
    ],
)
def test_update_strategy_never_runs_two_sqlite_stores(
    values: dict[str, Any], strategy: dict[str, Any]
) -> None:
    assert render(values).one("Deployment")["spec"]["strategy"] == strategy


# --- configuration: what the chart sets is what controller.settings reads ------------


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def settings_in_pod(
    container: dict[str, Any], pod: dict[str, Any], root: Path, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """Load the real Settings as the container would: its env, its mounted files.

    Each projected Secret item becomes a file named by its `path`, holding a value
    that names the Secret and key it came from; paths are moved under `root`.
    """
    for name in [n for n in os.environ if n.startswith("CANARY_")]:
        monkeypatch.delenv(name)
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    for volume in pod["volumes"]:
        if volume["name"] not in mounts:
            continue
        directory = root / mounts[volume["name"]].lstrip("/")
        if "projected" in volume:
            refs = [next(iter(s.values())) for s in volume["projected"]["sources"]]
        elif "secret" in volume:
            refs = [{**volume["secret"], "name": volume["secret"]["secretName"]}]
        elif "configMap" in volume:
            refs = [volume["configMap"]]
        else:
            continue  # emptyDir / claim: nothing to read
        for ref in refs:
            for item in ref["items"]:
                directory.mkdir(parents=True, exist_ok=True)
                (directory / item["path"]).write_text(f"{ref['name']}/{item['key']}\n")
    for item in container["env"]:
        value = item.get("value")
        if value is None:
            assert item["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
            value = "canary-7d9f-abcde"
        if value.startswith("/"):
            value = str(root / value.lstrip("/"))
        monkeypatch.setenv(item["name"], value)
    return load_settings()


def test_secrets_are_files_named_as_settings_reads_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered = render(ALL_SECRETS)
    pod = pod_spec(rendered)
    (container,) = pod["containers"]
    assert env_of(container)["CANARY_SECRETS_DIR"] == str(DEFAULT_SECRETS_DIR)
    settings = settings_in_pod(container, pod, tmp_path, monkeypatch)
    assert settings.database_url.get_secret_value() == "canary-db/url"
    assert settings.slack_token is not None
    assert settings.slack_token.get_secret_value() == "canary-slack/bot-token"
    assert settings.prometheus_token is not None
    assert settings.prometheus_token.get_secret_value() == "canary-prometheus/token"
    assert settings.webhook_url is not None
    assert settings.webhook_url.get_secret_value() == "canary-webhook/url"
    assert settings.prometheus_ca_file is not None
    assert settings.prometheus_ca_file.read_text() == "canary-prometheus-ca/ca.pem\n"
    # the pod serves its endpoints on every address, /metrics with the health ones
    assert (settings.api_host, settings.api_port, settings.metrics_port) == ("0.0.0.0", 8080, None)
    assert settings.prometheus_url == "https://prometheus.monitoring.svc:9091"
    assert settings.replica_id == "canary-7d9f-abcde"
    assert settings.api_port == DEFAULT_PORT
    assert settings.namespace == ""
    # no secret travels as a plain environment variable
    for value in env_of(container).values():
        assert "canary-db" not in value and "bot-token" not in value
        assert "canary-webhook" not in value


def test_the_defaults_configure_a_working_controller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pod = pod_spec(render({"controller": {"logLevel": "DEBUG", "logFormat": "console"}}))
    (container,) = pod["containers"]
    settings = settings_in_pod(container, pod, tmp_path, monkeypatch)
    assert settings.database_url.get_secret_value() == "sqlite:////var/lib/canary/canary.db"
    assert settings.slack_token is None and settings.prometheus_token is None
    assert settings.prometheus_url == "http://prometheus-operated.monitoring.svc:9090"
    assert settings.prometheus_timeout_seconds == 10
    assert (settings.log_level, settings.log_format) == ("DEBUG", "console")
    assert "secrets" not in {v["name"] for v in pod["volumes"]}


def test_the_migration_reads_the_same_configuration() -> None:
    rendered = render(ALL_SECRETS)
    (controller,) = pod_spec(rendered)["containers"]
    (migrate,) = pod_spec(rendered, "Job")["containers"]
    assert migrate["args"] == ["db", "upgrade"]
    assert migrate["env"] == controller["env"]
    assert migrate["volumeMounts"] == controller["volumeMounts"]


def test_extra_env_reaches_only_the_controller() -> None:
    rendered = render({"controller": {"extraEnv": [{"name": "TZ", "value": "UTC"}]}})
    pod = pod_spec(rendered)
    assert env_of(pod["containers"][0])["TZ"] == "UTC"
    assert "TZ" not in env_of(pod["initContainers"][0])


# --- migrations ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "job", "init"),
    [
        pytest.param({}, False, True, id="sqlite-auto-init"),
        pytest.param(POSTGRES, True, False, id="postgres-auto-job"),
        pytest.param({**POSTGRES, "migrations": {"mode": "initContainer"}}, False, True, id="init"),
        pytest.param({**POSTGRES, "migrations": {"mode": "job"}}, True, False, id="job"),
        pytest.param({**POSTGRES, "migrations": {"mode": "none"}}, False, False, id="none"),
    ],
)
def test_migrations_run_once_before_the_controller(
    values: dict[str, Any], job: bool, init: bool
) -> None:
    rendered = render(values)
    assert bool(rendered.of_kind("Job")) is job
    inits = pod_spec(rendered).get("initContainers", [])
    assert [c["args"] for c in inits] == ([["db", "upgrade"]] if init else [])
    if job:
        hook = rendered.one("Job")["metadata"]["annotations"]
        assert hook["helm.sh/hook"] == "pre-install,pre-upgrade"
        assert hook["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
        assert pod_spec(rendered, "Job")["restartPolicy"] == "Never"


# --- the image, the port, the probes ------------------------------------------------------


def test_the_image_runs_canaryctl_run_with_the_pinned_tag_or_digest() -> None:
    (container,) = pod_spec(render())["containers"]
    assert container["image"] == "canary-controller:0.1.0"
    assert container["args"] == ["run"]
    assert "command" not in container  # the image's ENTRYPOINT is canaryctl
    digest = "sha256:" + "b" * 64
    (pinned,) = pod_spec(render({"image": {"tag": "x", "digest": digest}}))["containers"]
    assert pinned["image"] == f"canary-controller@{digest}"


def test_port_service_and_probes_meet_the_api_server() -> None:
    rendered = render()
    (container,) = pod_spec(rendered)["containers"]
    assert container["ports"] == [
        {"name": "http", "containerPort": DEFAULT_PORT, "protocol": "TCP"}
    ]
    assert env_of(container)["CANARY_API_PORT"] == str(DEFAULT_PORT)
    # the process defaults to loopback; in the pod, kubelet and Prometheus must reach it
    assert env_of(container)["CANARY_API_HOST"] == "0.0.0.0"
    service = rendered.one("Service")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    pod_labels = pod_spec_labels(rendered)
    assert service["spec"]["selector"].items() <= pod_labels.items()

    probes = {
        k: container[k]["httpGet"] for k in ("livenessProbe", "readinessProbe", "startupProbe")
    }
    assert {p["port"] for p in probes.values()} == {"http"}
    server = ApiServer(
        ControllerMetrics().registry, Readiness({"store": lambda: True}), host="127.0.0.1", port=0
    )
    with server:
        for probe in probes.values():
            with urllib.request.urlopen(server.url + probe["path"], timeout=5) as answer:
                assert answer.status == 200


def pod_spec_labels(rendered: Rendered) -> dict[str, str]:
    labels: dict[str, str] = rendered.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    return labels


def test_shutdown_has_time_to_finish_a_tick() -> None:
    pod = pod_spec(render())
    assert pod["terminationGracePeriodSeconds"] == 60
    assert pod["automountServiceAccountToken"] is True
    assert pod["serviceAccountName"] == FULLNAME


# --- scraping, disruption budget, network policy ----------------------------------------


def test_the_service_monitor_scrapes_the_service_port() -> None:
    rendered = render({"serviceMonitor": {"enabled": True, "labels": {"release": "kps"}}})
    monitor = rendered.one("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kps"
    spec = monitor["spec"]
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert (
        spec["selector"]["matchLabels"].items()
        <= rendered.one("Service")["metadata"]["labels"].items()
    )
    assert spec["endpoints"] == [
        {"port": "http", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}
    ]
    assert rendered.one("Service")["spec"]["ports"][0]["name"] == "http"


@pytest.mark.parametrize(
    ("values", "budget"),
    [
        pytest.param({**POSTGRES, "replicas": 2}, {"minAvailable": 1}, id="min-available"),
        pytest.param(
            {**POSTGRES, "replicas": 3, "podDisruptionBudget": {"maxUnavailable": 1}},
            {"maxUnavailable": 1},
            id="max-unavailable",
        ),
    ],
)
def test_several_replicas_get_a_disruption_budget(
    values: dict[str, Any], budget: dict[str, int]
) -> None:
    rendered = render(values)
    spec = rendered.one("PodDisruptionBudget")["spec"]
    assert {k: v for k, v in spec.items() if k != "selector"} == budget
    assert spec["selector"]["matchLabels"].items() <= pod_spec_labels(rendered).items()


def test_one_replica_gets_no_budget_that_would_block_drains() -> None:
    assert not render({"podDisruptionBudget": {"enabled": True}}).of_kind("PodDisruptionBudget")


def test_the_network_policy_opens_only_the_http_port() -> None:
    rendered = render()  # on by default
    spec = rendered.one("NetworkPolicy")["spec"]
    assert spec["policyTypes"] == ["Ingress"]
    assert spec["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}]}]
    assert spec["podSelector"]["matchLabels"].items() <= pod_spec_labels(rendered).items()
    # the migration Job is not the controller: the policy does not select it
    assert spec["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "controller"


def test_a_restricted_egress_keeps_dns() -> None:
    peers = [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]
    egress = [{"ports": [{"port": 443, "protocol": "TCP"}]}]
    spec = render({"networkPolicy": {"enabled": True, "metricsFrom": peers, "egress": egress}}).one(
        "NetworkPolicy"
    )["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["ingress"][0]["from"] == peers
    assert spec["egress"] == [
        {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]},
        *egress,
    ]
