{{/* The port of /healthz, /readyz and /metrics inside the pod (controller.api.DEFAULT_PORT). */}}
{{- define "canary-controller.apiPort" -}}
8080
{{- end }}

{{/* The port of the read-only dashboard inside the pod (controller.dashboard.DEFAULT_PORT). */}}
{{- define "canary-controller.dashboardPort" -}}
8090
{{- end }}

{{/* The controller's configuration, as controller.settings reads it (CANARY_*). */}}
{{- define "canary-controller.env" -}}
# Every address of the pod: kubelet probes it and Prometheus scrapes it there (the
# controller's own default is loopback); the NetworkPolicy limits who gets in.
- name: CANARY_API_HOST
  value: "0.0.0.0"
- name: CANARY_API_PORT
  value: {{ include "canary-controller.apiPort" . | quote }}
{{- if .Values.webDashboard.enabled }}
- name: CANARY_DASHBOARD_PORT
  value: {{ include "canary-controller.dashboardPort" . | quote }}
{{- end }}
- name: CANARY_REPLICA_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: CANARY_PROMETHEUS_URL
  value: {{ .Values.prometheus.url | quote }}
- name: CANARY_PROMETHEUS_TIMEOUT_SECONDS
  value: {{ .Values.prometheus.timeoutSeconds | quote }}
- name: CANARY_NAMESPACE
  value: {{ join "," .Values.watchNamespaces | quote }}
- name: CANARY_WEBHOOK_ALLOW
  value: {{ join "," .Values.gates.webhookAllow | quote }}
- name: CANARY_JOB_GATES
  value: {{ .Values.gates.jobs.enabled | quote }}
- name: CANARY_LOG_LEVEL
  value: {{ .Values.controller.logLevel | quote }}
- name: CANARY_LOG_FORMAT
  value: {{ .Values.controller.logFormat | quote }}
{{- if not .Values.database.existingSecret }}
- name: CANARY_DATABASE_URL
  value: "sqlite:////var/lib/canary/canary.db"
{{- end }}
{{- with .Values.slack.baseUrl }}
- name: CANARY_SLACK_BASE_URL
  value: {{ . | quote }}
{{- end }}
{{- if .Values.slack.actions.enabled }}
# /slack/actions on a port of its own, apart from /metrics, for its own Ingress.
- name: CANARY_SLACK_ACTIONS_HOST
  value: "0.0.0.0"
- name: CANARY_SLACK_ACTIONS_PORT
  value: {{ .Values.slack.actions.port | quote }}
{{- end }}
{{- if include "canary-controller.hasSecrets" . }}
- name: CANARY_SECRETS_DIR
  value: {{ include "canary-controller.secretsDir" . }}
{{- end }}
{{- if or .Values.prometheus.ca.existingSecret .Values.prometheus.ca.existingConfigMap }}
- name: CANARY_PROMETHEUS_CA_FILE
  value: {{ printf "%s/ca.crt" (include "canary-controller.caDir" .) }}
{{- end }}
{{- end }}

{{- define "canary-controller.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if not .Values.database.existingSecret }}
- name: data
  mountPath: /var/lib/canary
{{- end }}
{{- if include "canary-controller.hasSecrets" . }}
- name: secrets
  mountPath: {{ include "canary-controller.secretsDir" . }}
  readOnly: true
{{- end }}
{{- if or .Values.prometheus.ca.existingSecret .Values.prometheus.ca.existingConfigMap }}
- name: prometheus-ca
  mountPath: {{ include "canary-controller.caDir" . }}
  readOnly: true
{{- end }}
{{- end }}

{{- define "canary-controller.caVolume" -}}
{{- with .Values.prometheus.ca.existingSecret }}
- name: prometheus-ca
  secret:
    secretName: {{ . }}
    defaultMode: 0444
    items:
      - {key: {{ $.Values.prometheus.ca.key | quote }}, path: ca.crt}
{{- end }}
{{- with .Values.prometheus.ca.existingConfigMap }}
- name: prometheus-ca
  configMap:
    name: {{ . }}
    defaultMode: 0444
    items:
      - {key: {{ $.Values.prometheus.ca.key | quote }}, path: ca.crt}
{{- end }}
{{- end }}
