{{/*
Every permission the controller has, in one place. Each rule names the code
that needs it; docs/routing.md lists the verbs each router uses and
docs/deploy.md explains them. tests/chart/test_rbac.py pins this exact set, so a
change here is a deliberate change there too.

Not here, on purpose:
- list/watch on routes: routers read one named object per tick, never a list;
- update on routes: every write is a JSON merge patch carrying the
  resourceVersion read, so a concurrent change fails with 409;
- coordination.k8s.io leases: replicas share rollouts through leases in the
  store, not Kubernetes Leases;
- API discovery (GET /apis/<group>/<version>, to tell "CRD not installed" from
  "object not found"): every authenticated user may, through system:discovery.
*/}}
{{- define "canary-controller.rbacRules" -}}
# The ModelRollout source: watch the rollouts and report progress in their status.
- apiGroups: ["canary.ai"]
  resources: ["modelrollouts"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["canary.ai"]
  resources: ["modelrollouts/status"]
  verbs: ["get", "patch"]
# Kubernetes Events on the ModelRollout, one per transition (named after it: a repeat is refused).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- if .Values.rbac.routers.nginxIngress }}
# routing/nginx.py: reads and annotates the stable Ingress (get, patch) and
# creates, updates and deletes the managed canary Ingress beside it.
- apiGroups: ["networking.k8s.io"]
  resources: ["ingresses"]
  verbs: ["get", "create", "patch", "delete"]
{{- end }}
{{- if .Values.rbac.routers.gatewayApi }}
# routing/gateway_api.py: weights and mirrors on the user's HTTPRoute; creates nothing.
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["get", "patch"]
{{- end }}
{{- if .Values.rbac.routers.istio }}
# routing/istio.py: weights and mirrors on the user's VirtualService; creates nothing.
- apiGroups: ["networking.istio.io"]
  resources: ["virtualservices"]
  verbs: ["get", "patch"]
# routing/istio.py: the managed sticky-session DestinationRule (<route>-canary-sticky).
- apiGroups: ["networking.istio.io"]
  resources: ["destinationrules"]
  verbs: ["get", "create", "patch", "delete"]
{{- end }}
{{- if .Values.gates.jobs.enabled }}
# runtime/gates.py: a Job gate's Job, read each tick, deleted when read finished, and the
# Jobs of the gate's earlier attempts listed to be deleted.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "create", "delete"]
# runtime/gates.py: the ConfigMap holding the eval cases a Job gate mounts.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["create", "delete"]
{{- end }}
{{- if .Values.gates.webhookSecrets }}
# runtime/gates.py: the headers a webhook gate sends (headersFrom: a Secret).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- end }}
{{- end }}
