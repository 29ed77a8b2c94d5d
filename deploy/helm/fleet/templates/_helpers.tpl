{{- define "fleet.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}{{ .Release.Name | trunc 50 | trimSuffix "-" }}{{- else -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "fleet.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "recorder") */}}
{{- define "fleet.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The image of one role: (dict "root" $ "role" "recorder") */}}
{{- define "fleet.image" -}}
{{ printf "%s-%s:%s" .root.Values.image.repository .role (.root.Values.image.tag | default .root.Chart.AppVersion) }}
{{- end -}}

{{- define "fleet.secretName" -}}
{{- if .Values.secrets.create -}}{{ include "fleet.fullname" . }}{{- else -}}{{ .Values.secrets.existingSecret }}{{- end -}}
{{- end -}}

{{/* The [nats], [queues], [storage] and [log] sections every role's file shares. */}}
{{- define "fleet.sharedToml" -}}
[nats]
url = {{ .Values.nats.url | quote }}
{{- if .Values.nats.credentials }}
credentials_file = "/etc/fleet/secrets/nats.creds"
{{- end }}

[queues]
replicas = {{ .Values.queues.replicas }}

[storage]
kind = "s3"
prefix = {{ .Values.storage.prefix | quote }}

[storage.s3]
bucket = {{ .Values.storage.bucket | quote }}
{{- if .Values.storage.endpoint }}
endpoint = {{ .Values.storage.endpoint | quote }}
{{- end }}
region = {{ .Values.storage.region | quote }}
force_path_style = {{ .Values.storage.forcePathStyle }}

[log]
format = {{ .Values.log.format | quote }}
level = {{ .Values.log.level | quote }}
{{- end -}}

{{/* Environment every role gets: secrets as the FLEET_* overrides of their config keys. */}}
{{- define "fleet.secretEnv" -}}
- name: FLEET_STORAGE__S3__ACCESS_KEY_ID
  valueFrom:
    secretKeyRef: {name: {{ include "fleet.secretName" . }}, key: s3-access-key-id, optional: true}
- name: FLEET_STORAGE__S3__SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef: {name: {{ include "fleet.secretName" . }}, key: s3-secret-access-key, optional: true}
{{- end -}}

{{/* The pod-level settings every role shares. */}}
{{- define "fleet.podCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
automountServiceAccountToken: false
{{- end -}}
