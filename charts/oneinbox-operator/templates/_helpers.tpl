{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "oneinbox-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: the release name if it already contains the chart name, else "<release>-<chart>".
Used for every object, cluster-scoped ones included, so that two releases never collide.
*/}}
{{- define "oneinbox-operator.fullname" -}}
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

{{- define "oneinbox-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "oneinbox-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "oneinbox-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "oneinbox-operator.labels" -}}
helm.sh/chart: {{ include "oneinbox-operator.chart" . }}
{{ include "oneinbox-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: oneinbox-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "oneinbox-operator.serviceAccountName" -}}
{{- .Values.serviceAccount.name }}
{{- end }}

{{- define "oneinbox-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "oneinbox-operator.leaseName" -}}
{{- default (include "oneinbox-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/* Where the API key Secret is mounted; the file name is fixed, whatever the Secret's key. */}}
{{- define "oneinbox-operator.apiKeyDir" -}}
/var/run/secrets/oneinbox
{{- end }}

{{/*
The ClusterRole (or Role) rules: exactly what the code uses; deploy/rbac.yaml has the same rules
and tests/chart.rs compares them.
*/}}
{{- define "oneinbox-operator.rules" -}}
# Watch PhoneNumbers; patch adds/removes the finalizer and the id annotation.
- apiGroups: ["oneinbox.ai"]
  resources: ["phonenumbers"]
  verbs: ["get", "list", "watch", "patch"]
# Status is written by server-side apply.
- apiGroups: ["oneinbox.ai"]
  resources: ["phonenumbers/status"]
  verbs: ["patch"]
# get: read the Secrets a PhoneNumber references (its SIP password, its apiKeySecretRef) when
# it registers, when its drift check is due and when one of them changed since the last check;
# list/watch: a metadata-only watch maps Secret changes to the objects that use them.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch"]
# Events on transitions; the recorder patches repeats into a series.
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
