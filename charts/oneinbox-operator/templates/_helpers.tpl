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

{{/* The CRDs' labels (templates/crds.yaml): the chart's, with component "crds". */}}
{{- define "oneinbox-operator.crdLabels" -}}
helm.sh/chart: {{ include "oneinbox-operator.chart" . }}
{{ include "oneinbox-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: crds
app.kubernetes.io/part-of: oneinbox-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The ServiceAccount: the full name unless set, so two releases in a namespace never share it. */}}
{{- define "oneinbox-operator.serviceAccountName" -}}
{{- default (include "oneinbox-operator.fullname" .) .Values.serviceAccount.name }}
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

{{/* Where the API CA bundle is mounted (apiCA); the file name is fixed, whatever the key. */}}
{{- define "oneinbox-operator.apiCADir" -}}
/etc/oneinbox/api-ca
{{- end }}

{{/*
The job label of the operator's series in Prometheus: prometheus-operator names a ServiceMonitor
target's job after the Service, a PodMonitor target's after "<namespace>/<PodMonitor name>".
*/}}
{{- define "oneinbox-operator.job" -}}
{{- if .Values.prometheusRule.job }}
{{- .Values.prometheusRule.job }}
{{- else if .Values.podMonitor.enabled }}
{{- printf "%s/%s" .Release.Namespace (include "oneinbox-operator.fullname" .) }}
{{- else }}
{{- include "oneinbox-operator.fullname" . }}
{{- end }}
{{- end }}

{{/* The label matchers of this release's series in alert expressions. */}}
{{- define "oneinbox-operator.selector" -}}
namespace="{{ .Release.Namespace }}",job="{{ include "oneinbox-operator.job" . }}"
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
# List and watch PhoneNumbers (the controller's cache; no single GET); patch adds/removes
# the finalizer and the id annotation.
- apiGroups: ["oneinbox.ai"]
  resources: ["phonenumbers"]
  verbs: ["list", "watch", "patch"]
# Status is written by server-side apply.
- apiGroups: ["oneinbox.ai"]
  resources: ["phonenumbers/status"]
  verbs: ["patch"]
# The accounts of a namespace: list/watch (the cache), patch (the in-use finalizer).
- apiGroups: ["oneinbox.ai"]
  resources: ["oneinboxaccounts"]
  verbs: ["list", "watch", "patch"]
# Account status is written by server-side apply.
- apiGroups: ["oneinbox.ai"]
  resources: ["oneinboxaccounts/status"]
  verbs: ["patch"]
# get: read the Secrets a PhoneNumber references (its SIP password) and the accounts' API key
# Secrets, when they are new or changed (never while unchanged); list/watch: a metadata-only
# watch maps Secret changes to the objects and accounts that use them (not with
# secretAccess: get, where each drift check reads the Secrets instead).
- apiGroups: [""]
  resources: ["secrets"]
  {{- if eq .Values.secretAccess "get" }}
  verbs: ["get"]
  {{- else }}
  verbs: ["get", "list", "watch"]
  {{- end }}
# Events on transitions, each a new Event (no series cache, so never a patch).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{/*
The operator's CRDs, by name, get only: a deletion while its CRD is being deleted is an
uninstall; the operator orphans the number instead of deregistering it, and releases an account
in use. Cluster-scoped, so with watchNamespace it has a ClusterRole of its own.
*/}}
{{- define "oneinbox-operator.definitionRules" -}}
# get the operator's CRDs when an object is deleted: during a CRD's deletion (an uninstall)
# every number is orphaned, whatever its deletionPolicy, and accounts in use are released.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  resourceNames: ["phonenumbers.oneinbox.ai", "oneinboxaccounts.oneinbox.ai", "clusteroneinboxaccounts.oneinbox.ai"]
  verbs: ["get"]
{{- end }}

{{/*
Whether the operator watches cluster accounts (--cluster-accounts): clusterAccounts, or when it is
null, on unless watchNamespace is set ("true" or "false").
*/}}
{{- define "oneinbox-operator.clusterAccounts" -}}
{{- if kindIs "invalid" .Values.clusterAccounts -}}
{{- not .Values.watchNamespace -}}
{{- else -}}
{{- .Values.clusterAccounts -}}
{{- end -}}
{{- end }}

{{/*
The namespaces the operator-wide key serves (--operator-key-namespaces), empty for every one.
operatorKeyNamespaces null: the deny-by-default selector on a new install; on an upgrade, the
running Deployment's flag, or every namespace if it had none (a release from before the value).
*/}}
{{- define "oneinbox-operator.operatorKeyNamespaces" -}}
{{- $value := .Values.operatorKeyNamespaces -}}
{{- if not (kindIs "invalid" $value) -}}
{{- $value -}}
{{- else if .Values.watchNamespace -}}
{{- else if .Release.IsInstall -}}
oneinbox.ai/operator-key=allowed
{{- else -}}
{{- $running := lookup "apps/v1" "Deployment" .Release.Namespace (include "oneinbox-operator.fullname" .) -}}
{{- range (dig "spec" "template" "spec" "containers" list $running) -}}
{{- range (default list .args) -}}
{{- if hasPrefix "--operator-key-namespaces=" . -}}
{{- trimPrefix "--operator-key-namespaces=" . -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end }}

{{/*
With cluster accounts only (clusterAccounts, by default not with watchNamespace): the
ClusterOneInboxAccounts, and Namespace labels for their allowedNamespaces.
*/}}
{{- define "oneinbox-operator.clusterRules" -}}
# The cluster accounts: list/watch (the cache), patch (the in-use finalizer).
- apiGroups: ["oneinbox.ai"]
  resources: ["clusteroneinboxaccounts"]
  verbs: ["list", "watch", "patch"]
- apiGroups: ["oneinbox.ai"]
  resources: ["clusteroneinboxaccounts/status"]
  verbs: ["patch"]
{{- include "oneinbox-operator.namespaceRules" . }}
{{- end }}

{{/*
Namespace labels, for cluster accounts or the operator-wide key's namespaces.
*/}}
{{- define "oneinbox-operator.namespaceRules" }}
# Namespace labels (metadata only) decide which namespaces a cluster account allows, and which
# the operator-wide key serves.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- end }}

{{/*
PhoneNumber rights for people, aggregated into Kubernetes' default roles; deploy/rbac.yaml has
the same rules and tests/chart.rs compares them.
*/}}
{{- define "oneinbox-operator.viewRules" -}}
- apiGroups: ["oneinbox.ai"]
  resources: ["phonenumbers", "phonenumbers/status", "oneinboxaccounts", "oneinboxaccounts/status"]
  verbs: ["get", "list", "watch"]
{{- end }}

{{- define "oneinbox-operator.editRules" -}}
- apiGroups: ["oneinbox.ai"]
  resources: ["phonenumbers"]
  verbs: ["create", "update", "patch", "delete", "deletecollection"]
{{- end }}
