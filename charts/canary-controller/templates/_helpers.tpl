{{/* Names and labels, the standard way. */}}

{{- define "canary-controller.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "canary-controller.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "canary-controller.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object (with the name and instance) ... */}}
{{- define "canary-controller.labels" -}}
app.kubernetes.io/name: {{ include "canary-controller.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{ include "canary-controller.metaLabels" . }}
{{- end }}

{{/* ... of which these do not say which workload it is. */}}
{{- define "canary-controller.metaLabels" -}}
helm.sh/chart: {{ include "canary-controller.chart" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: canary-controller
{{- end }}

{{/* The controller's pods; the migration Job's pod has another component. */}}
{{- define "canary-controller.selectorLabels" -}}
app.kubernetes.io/name: {{ include "canary-controller.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{- define "canary-controller.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "canary-controller.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "canary-controller.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The migration mode in effect: `auto` is a Job with Postgres (it runs once per
install or upgrade, before any controller pod) and an init container with
SQLite (the file lives on the pod's own volume, where no Job can reach it).
*/}}
{{- define "canary-controller.migrationMode" -}}
{{- $mode := .Values.migrations.mode }}
{{- if eq $mode "auto" }}
{{- ternary "job" "initContainer" (ne .Values.database.existingSecret "") }}
{{- else }}
{{- $mode }}
{{- end }}
{{- end }}

{{/* Refuse combinations that would break at run time, with the reason. */}}
{{- define "canary-controller.validate" -}}
{{- if and (gt (int .Values.replicas) 1) (not .Values.database.existingSecret) }}
{{- fail "replicas > 1 needs the shared Postgres store: set database.existingSecret (each replica would otherwise have its own SQLite file and tick every rollout)" }}
{{- end }}
{{- if and (eq (include "canary-controller.migrationMode" .) "job") (not .Values.database.existingSecret) }}
{{- fail "migrations.mode=job needs database.existingSecret: a Job cannot reach the SQLite file on the controller pod's volume" }}
{{- end }}
{{- if and .Values.prometheus.ca.existingSecret .Values.prometheus.ca.existingConfigMap }}
{{- fail "set prometheus.ca.existingSecret or prometheus.ca.existingConfigMap, not both" }}
{{- end }}
{{- if .Values.slack.actions.enabled }}
{{- if not .Values.slack.actions.signingSecret.existingSecret }}
{{- fail "slack.actions.enabled needs slack.actions.signingSecret.existingSecret: without the signing secret no request can be verified as Slack's" }}
{{- end }}
{{- if not .Values.slack.existingSecret }}
{{- fail "slack.actions.enabled needs slack.existingSecret: the bot token answers in the thread and opens the Abort form" }}
{{- end }}
{{- if and .Values.slack.actions.ingress.enabled (not .Values.slack.actions.ingress.host) }}
{{- fail "slack.actions.ingress.enabled needs slack.actions.ingress.host: the host of the app's Request URL" }}
{{- end }}
{{- else if .Values.slack.actions.ingress.enabled }}
{{- fail "slack.actions.ingress.enabled needs slack.actions.enabled" }}
{{- end }}
{{- end }}

{{/* True (non-empty) when any secret is mounted as a file in the secrets directory. */}}
{{- define "canary-controller.hasSecrets" -}}
{{- if or .Values.database.existingSecret .Values.slack.existingSecret .Values.prometheus.token.existingSecret .Values.webhook.existingSecret (and .Values.slack.actions.enabled .Values.slack.actions.signingSecret.existingSecret) }}true{{ end }}
{{- end }}

{{- define "canary-controller.secretsDir" -}}
/var/run/secrets/canary-controller
{{- end }}

{{- define "canary-controller.caDir" -}}
/etc/canary-controller/prometheus-ca
{{- end }}

{{/*
The Secrets, projected into one directory under the names controller.settings
reads (a file per setting: database_url, slack_token, slack_signing_secret,
prometheus_token, webhook_url).
*/}}
{{- define "canary-controller.secretsVolume" -}}
- name: secrets
  projected:
    defaultMode: 0440
    sources:
      {{- with .Values.database.existingSecret }}
      - secret:
          name: {{ . }}
          items:
            - {key: {{ $.Values.database.key | quote }}, path: database_url}
      {{- end }}
      {{- with .Values.slack.existingSecret }}
      - secret:
          name: {{ . }}
          items:
            - {key: {{ $.Values.slack.key | quote }}, path: slack_token}
      {{- end }}
      {{- if .Values.slack.actions.enabled }}
      {{- with .Values.slack.actions.signingSecret.existingSecret }}
      - secret:
          name: {{ . }}
          items:
            - {key: {{ $.Values.slack.actions.signingSecret.key | quote }}, path: slack_signing_secret}
      {{- end }}
      {{- end }}
      {{- with .Values.prometheus.token.existingSecret }}
      - secret:
          name: {{ . }}
          items:
            - {key: {{ $.Values.prometheus.token.key | quote }}, path: prometheus_token}
      {{- end }}
      {{- with .Values.webhook.existingSecret }}
      - secret:
          name: {{ . }}
          items:
            - {key: {{ $.Values.webhook.key | quote }}, path: webhook_url}
      {{- end }}
{{- end }}

{{/* Pod spec settings shared by the controller and the migration Job. */}}
{{- define "canary-controller.podCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
