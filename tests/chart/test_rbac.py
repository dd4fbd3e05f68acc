"""RBAC is exactly what the controller uses: no verb, resource or scope more.

Where each permission comes from (docs/deploy.md explains them for operators):

- canary.ai modelrollouts get/list/watch: the ModelRollout source (runtime);
- canary.ai modelrollouts/status get/patch: the phase, step and weights written
  back to each ModelRollout's status as a merge patch (runtime/kube_status.py);
- core events create: a Kubernetes Event per transition (runtime/kube_status.py);
- the routers' verbs, from controller/routing (docs/routing.md): every write goes
  through `kube.cluster.Cluster.reconcile`, which reads (get) and then creates,
  merge-patches or deletes one named object; nothing lists, watches or updates.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart.helm import FULLNAME, NAMESPACE, render

Grant = tuple[str, str, str]  # (apiGroup, resource, verb)

CORE: set[Grant] = {
    ("canary.ai", "modelrollouts", "get"),
    ("canary.ai", "modelrollouts", "list"),
    ("canary.ai", "modelrollouts", "watch"),
    ("canary.ai", "modelrollouts/status", "get"),
    ("canary.ai", "modelrollouts/status", "patch"),
    ("", "events", "create"),
}
# routing/nginx.py: the stable Ingress is read and patched, the canary Ingress
# beside it created, patched and deleted.
NGINX: set[Grant] = {
    ("networking.k8s.io", "ingresses", v) for v in ("get", "create", "patch", "delete")
}
# routing/gateway_api.py: only the user's HTTPRoute, read and patched.
GATEWAY: set[Grant] = {("gateway.networking.k8s.io", "httproutes", v) for v in ("get", "patch")}
# routing/istio.py: the user's VirtualService read and patched; the managed
# sticky-session DestinationRule created, patched and deleted.
ISTIO: set[Grant] = {("networking.istio.io", "virtualservices", v) for v in ("get", "patch")} | {
    ("networking.istio.io", "destinationrules", v) for v in ("get", "create", "patch", "delete")
}
EVERYTHING = CORE | NGINX | GATEWAY | ISTIO


def grants(role: dict[str, Any]) -> set[Grant]:
    out: set[Grant] = set()
    for rule in role["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, "no resourceNames / URLs"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    out.add((group, resource, verb))
    return out


def test_all_namespaces_get_one_cluster_role_with_exactly_the_needed_rules() -> None:
    rendered = render()
    role = rendered.one("ClusterRole")
    assert grants(role) == EVERYTHING
    flat = [g for rule in role["rules"] for g in grants({"rules": [rule]})]
    assert len(flat) == len(set(flat)), "a grant appears twice"
    binding = rendered.one("ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": FULLNAME,
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}
    ]
    assert not rendered.of_kind("Role") and not rendered.of_kind("RoleBinding")


def test_no_wildcards_secrets_or_cluster_scoped_resources() -> None:
    for group, resource, verb in grants(render().one("ClusterRole")):
        assert "*" not in (group, resource, verb)
        assert resource not in {"secrets", "configmaps", "pods", "namespaces", "nodes"}
        assert verb not in {"escalate", "bind", "impersonate", "deletecollection"}


@pytest.mark.parametrize(
    "namespaces",
    [pytest.param(["llm"], id="one"), pytest.param(["team-a", "team-b", "team-c"], id="three")],
)
def test_watched_namespaces_get_a_role_each_and_nothing_cluster_wide(
    namespaces: list[str],
) -> None:
    rendered = render({"watchNamespaces": namespaces})
    assert not rendered.of_kind("ClusterRole")
    assert not rendered.of_kind("ClusterRoleBinding")
    roles = {r["metadata"]["namespace"]: r for r in rendered.of_kind("Role")}
    bindings = {b["metadata"]["namespace"]: b for b in rendered.of_kind("RoleBinding")}
    assert sorted(roles) == sorted(bindings) == sorted(namespaces)
    for namespace in namespaces:
        assert grants(roles[namespace]) == EVERYTHING
        assert bindings[namespace]["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": FULLNAME,
        }
        # The account lives in the release namespace, whatever namespace it may act in.
        assert bindings[namespace]["subjects"] == [
            {"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}
        ]
    env = {e["name"]: e.get("value") for e in _container(rendered)["env"]}
    assert env["CANARY_NAMESPACE"] == ",".join(namespaces)


def test_all_namespaces_leave_canary_namespace_empty() -> None:
    env = {e["name"]: e.get("value") for e in _container(render())["env"]}
    assert env["CANARY_NAMESPACE"] == ""


@pytest.mark.parametrize(
    ("routers", "expected"),
    [
        pytest.param({"gatewayApi": False, "istio": False}, CORE | NGINX, id="nginx"),
        pytest.param({"nginxIngress": False, "istio": False}, CORE | GATEWAY, id="gateway-api"),
        pytest.param({"nginxIngress": False, "gatewayApi": False}, CORE | ISTIO, id="istio"),
        pytest.param({"nginxIngress": False, "gatewayApi": False, "istio": False}, CORE, id="none"),
    ],
)
def test_only_the_routers_in_use_get_access(routers: dict[str, bool], expected: set[Grant]) -> None:
    role = render({"rbac": {"routers": routers}}).one("ClusterRole")
    assert grants(role) == expected
    namespaced = render({"rbac": {"routers": routers}, "watchNamespaces": ["llm"]}).one("Role")
    assert grants(namespaced) == expected


def test_rbac_can_be_left_to_the_platform_team() -> None:
    rendered = render(
        {"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "sa"}}
    )
    assert not {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ServiceAccount"} & set(
        rendered.kinds()
    )
    pod = rendered.one("Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "sa"


def test_the_migration_job_has_no_api_access() -> None:
    job = render({"database": {"existingSecret": "db"}}).one("Job")
    pod = job["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in pod


def _container(rendered: Any) -> dict[str, Any]:
    (container,) = rendered.one("Deployment")["spec"]["template"]["spec"]["containers"]
    return dict(container)


# runtime/gates.py: a Job gate's Job read, created, listed (earlier attempts) and
# deleted; the ConfigMap of its eval cases created and deleted.
JOB_GATES: set[Grant] = {("batch", "jobs", v) for v in ("get", "list", "create", "delete")} | {
    ("", "configmaps", v) for v in ("create", "delete")
}
# runtime/gates.py: a webhook gate's headers from a Secret (headersFrom).
WEBHOOK_SECRETS: set[Grant] = {("", "secrets", "get")}


@pytest.mark.parametrize(
    ("gates", "expected"),
    [
        pytest.param({}, EVERYTHING, id="off-by-default"),
        pytest.param({"jobs": {"enabled": True}}, EVERYTHING | JOB_GATES, id="job-gates"),
        pytest.param({"webhookSecrets": True}, EVERYTHING | WEBHOOK_SECRETS, id="secrets"),
    ],
)
def test_gates_get_jobs_configmaps_and_secrets_only_when_enabled(
    gates: dict[str, Any], expected: set[Grant]
) -> None:
    assert grants(render({"gates": gates}).one("ClusterRole")) == expected
    namespaced = render({"gates": gates, "watchNamespaces": ["llm"]}).one("Role")
    assert grants(namespaced) == expected


def test_gate_settings_reach_the_controller() -> None:
    allow = ["https://evals.example.com/hooks", "http://*.evals.svc:8080"]
    rendered = render({"gates": {"webhookAllow": allow, "jobs": {"enabled": True}}})
    env = {e["name"]: e.get("value") for e in _container(rendered)["env"]}
    assert env["CANARY_WEBHOOK_ALLOW"] == ",".join(allow)
    assert env["CANARY_JOB_GATES"] == "true"
    env = {e["name"]: e.get("value") for e in _container(render())["env"]}
    assert (env["CANARY_WEBHOOK_ALLOW"], env["CANARY_JOB_GATES"]) == ("", "false")
