"""Every documented combination of values (docs/deploy.md), named for test ids."""

from __future__ import annotations

from typing import Any

import pytest

POSTGRES: dict[str, Any] = {"database": {"existingSecret": "canary-db"}}

ALL_SECRETS: dict[str, Any] = {
    "database": {"existingSecret": "canary-db", "key": "url"},
    "slack": {"existingSecret": "canary-slack", "key": "bot-token"},
    "webhook": {"existingSecret": "canary-webhook", "key": "url"},
    "prometheus": {
        "url": "https://prometheus.monitoring.svc:9091",
        "token": {"existingSecret": "canary-prometheus", "key": "token"},
        "ca": {"existingSecret": "canary-prometheus-ca", "key": "ca.pem"},
    },
}

COMBINATIONS = [
    pytest.param({}, id="defaults"),
    pytest.param(POSTGRES, id="postgres"),
    pytest.param({**POSTGRES, "replicas": 3}, id="postgres-3-replicas-pdb"),
    pytest.param(
        {**POSTGRES, "replicas": 2, "podDisruptionBudget": {"maxUnavailable": 1}},
        id="pdb-max-unavailable",
    ),
    pytest.param(
        {**POSTGRES, "replicas": 2, "podDisruptionBudget": {"enabled": False}}, id="pdb-disabled"
    ),
    pytest.param({"watchNamespaces": ["team-a", "team-b"]}, id="watch-two-namespaces"),
    pytest.param({"watchNamespaces": ["llm"]}, id="watch-one-namespace"),
    pytest.param({"serviceMonitor": {"enabled": True, "labels": {"release": "kps"}}}, id="sm"),
    pytest.param({"networkPolicy": {"enabled": True}}, id="network-policy"),
    pytest.param(
        {
            "networkPolicy": {
                "enabled": True,
                "metricsFrom": [
                    {"namespaceSelector": {"matchLabels": {"name": "monitoring"}}},
                ],
                "egress": [
                    {"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]},
                    {"ports": [{"port": 443, "protocol": "TCP"}]},
                ],
            }
        },
        id="network-policy-restricted",
    ),
    pytest.param({"dashboard": {"enabled": True}}, id="dashboard"),
    pytest.param(
        {"dashboard": {"enabled": True, "namespace": "grafana", "labels": {"dash": "yes"}}},
        id="dashboard-elsewhere",
    ),
    pytest.param({"webDashboard": {"enabled": True}}, id="web-dashboard"),
    pytest.param(
        {
            "webDashboard": {
                "enabled": True,
                "service": {"type": "NodePort", "port": 80, "annotations": {"a": "b"}},
                "from": [{"namespaceSelector": {"matchLabels": {"name": "ops"}}}],
            }
        },
        id="web-dashboard-restricted",
    ),
    pytest.param(ALL_SECRETS, id="all-existing-secrets"),
    pytest.param(
        {"prometheus": {"ca": {"existingConfigMap": "kube-root-ca.crt", "key": "ca.crt"}}},
        id="prometheus-ca-configmap",
    ),
    pytest.param({"slack": {"existingSecret": "canary-slack"}}, id="slack-only"),
    pytest.param(
        {
            "slack": {
                "existingSecret": "canary-slack",
                "actions": {
                    "enabled": True,
                    "signingSecret": {"existingSecret": "canary-slack", "key": "signing"},
                },
            }
        },
        id="slack-actions",
    ),
    pytest.param(
        {
            "slack": {
                "existingSecret": "canary-slack",
                "actions": {
                    "enabled": True,
                    "signingSecret": {"existingSecret": "canary-slack-app", "key": "signing"},
                    "port": 9443,
                    "from": [
                        {"namespaceSelector": {"matchLabels": {"name": "ingress-nginx"}}},
                    ],
                    "ingress": {
                        "enabled": True,
                        "className": "nginx",
                        "host": "canary.example.com",
                        "annotations": {"cert-manager.io/cluster-issuer": "letsencrypt"},
                        "tls": [{"hosts": ["canary.example.com"], "secretName": "canary-tls"}],
                    },
                },
            }
        },
        id="slack-actions-ingress",
    ),
    pytest.param({"database": {"sqlite": {"existingClaim": "canary-data"}}}, id="sqlite-pvc"),
    pytest.param({**POSTGRES, "migrations": {"mode": "initContainer"}}, id="postgres-init"),
    pytest.param({**POSTGRES, "migrations": {"mode": "none"}}, id="no-migrations"),
    pytest.param(
        {"rbac": {"routers": {"nginxIngress": False, "gatewayApi": False}}}, id="istio-only"
    ),
    pytest.param({"rbac": {"create": False}}, id="no-rbac"),
    pytest.param(
        {"serviceAccount": {"create": False, "name": "platform-canary"}}, id="existing-sa"
    ),
    pytest.param(
        {"image": {"repository": "registry.example/canary", "digest": "sha256:" + "a" * 64}},
        id="image-digest",
    ),
    pytest.param(
        {
            **ALL_SECRETS,
            "replicas": 3,
            "watchNamespaces": ["team-a", "team-b"],
            "serviceMonitor": {"enabled": True},
            "networkPolicy": {"enabled": True, "egress": [{"ports": [{"port": 443}]}]},
            "dashboard": {"enabled": True},
            "controller": {
                "logLevel": "DEBUG",
                "logFormat": "console",
                "extraEnv": [{"name": "TZ", "value": "UTC"}],
            },
            "imagePullSecrets": [{"name": "registry"}],
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
            "topologySpreadConstraints": [
                {
                    "maxSkew": 1,
                    "topologyKey": "topology.kubernetes.io/zone",
                    "whenUnsatisfiable": "ScheduleAnyway",
                    "labelSelector": {
                        "matchLabels": {"app.kubernetes.io/name": "canary-controller"}
                    },
                }
            ],
            "priorityClassName": "system-cluster-critical",
            "podAnnotations": {"example.com/team": "platform"},
            "podLabels": {"team": "platform"},
        },
        id="everything",
    ),
]
