{{/*
Name of the chart, for the app.kubernetes.io/name label.
*/}}
{{- define "pullsecret-injector.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: the base of every resource name.
*/}}
{{- define "pullsecret-injector.fullname" -}}
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

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "pullsecret-injector.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every resource.
*/}}
{{- define "pullsecret-injector.labels" -}}
helm.sh/chart: {{ include "pullsecret-injector.chart" . }}
{{ include "pullsecret-injector.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Labels that select the webhook's Pods.
*/}}
{{- define "pullsecret-injector.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pullsecret-injector.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
ServiceAccount the webhook runs as.
*/}}
{{- define "pullsecret-injector.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pullsecret-injector.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Container image: repository@digest when a digest is set, repository:tag otherwise.
*/}}
{{- define "pullsecret-injector.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Name of the MutatingWebhookConfiguration; also --webhook-config-name and the resourceNames of its RBAC rule.
Like the ClusterRole it is cluster-scoped: install one release per cluster.
*/}}
{{- define "pullsecret-injector.webhookConfigName" -}}
{{- include "pullsecret-injector.fullname" . }}
{{- end }}

{{/*
Name of the Lease the replicas elect their leader with, in the release namespace; also
--leader-election-id and the resourceNames of the leader election Role.
*/}}
{{- define "pullsecret-injector.leaderElectionID" -}}
{{- include "pullsecret-injector.fullname" . }}
{{- end }}

{{/*
Secret holding the serving certificate: written by the binary in self mode, by cert-manager otherwise.
*/}}
{{- define "pullsecret-injector.certSecretName" -}}
{{- if .Values.certManager.enabled }}
{{- printf "%s-cert-manager" (include "pullsecret-injector.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- default (printf "%s-cert" (include "pullsecret-injector.fullname" .) | trunc 63 | trimSuffix "-") .Values.certs.secretName }}
{{- end }}
{{- end }}

{{/*
The namespace selector, as YAML: the user's selector plus an expression that never selects the release
namespace, kube-system or webhook.excludedNamespaces. The webhook registration and the configuration file
both use it, so the binary's own namespace check agrees with what the API server sends it.
*/}}
{{- define "pullsecret-injector.namespaceSelector" -}}
{{- $user := .Values.namespaceSelector | default dict }}
{{- $matchLabels := $user.matchLabels }}
{{- if and (not $user.matchLabels) (not $user.matchExpressions) }}
{{- /* The default is applied here rather than in values.yaml, where Helm would merge a user's matchLabels into it. */}}
{{- $matchLabels = dict "pullsecret-injector.io/inject" "enabled" }}
{{- end }}
{{- $excluded := concat (list .Release.Namespace "kube-system") .Values.webhook.excludedNamespaces | uniq }}
{{- $expressions := list (dict "key" "kubernetes.io/metadata.name" "operator" "NotIn" "values" $excluded) }}
{{- $selector := dict "matchExpressions" (concat $expressions ($user.matchExpressions | default list)) }}
{{- with $matchLabels }}
{{- $_ := set $selector "matchLabels" . }}
{{- end }}
{{- toYaml $selector }}
{{- end }}

{{/*
The configuration file the binary reads (--config).
*/}}
{{- define "pullsecret-injector.config" -}}
{{- $registries := list }}
{{- range .Values.registries }}
{{- $entry := dict "registry" .registry "secret" (dict "namespace" (default $.Release.Namespace .secret.namespace) "name" .secret.name) }}
{{- with .namespaceSelector }}
{{- $_ := set $entry "namespaceSelector" . }}
{{- end }}
{{- $registries = append $registries $entry }}
{{- end }}
{{- toYaml (dict "namespaceSelector" (include "pullsecret-injector.namespaceSelector" . | fromYaml) "registries" $registries) }}
{{- end }}

{{/*
The namespaces that hold source Secrets, sorted and without duplicates.
*/}}
{{- define "pullsecret-injector.sourceNamespaces" -}}
{{- $namespaces := list }}
{{- range .Values.registries }}
{{- $namespaces = append $namespaces (default $.Release.Namespace .secret.namespace) }}
{{- end }}
{{- toYaml ($namespaces | uniq | sortAlpha) }}
{{- end }}

{{/*
The user name the API server gives the webhook's requests: its ServiceAccount's.
*/}}
{{- define "pullsecret-injector.serviceAccountUser" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "pullsecret-injector.serviceAccountName" .) }}
{{- end }}

{{/*
"true" when the admission guard is rendered: admissionGuard.enabled, and the API server serves
ValidatingAdmissionPolicy in admissionregistration.k8s.io/v1 (Kubernetes 1.30 and later). `helm install`
and `upgrade` ask the API server; `helm template` knows only what --api-versions tells it.
*/}}
{{- define "pullsecret-injector.admissionGuard" -}}
{{- if and .Values.admissionGuard.enabled (.Capabilities.APIVersions.Has "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy") }}
{{- "true" }}
{{- end }}
{{- end }}

{{/*
The Secret the metrics endpoint takes its certificate from, when it serves HTTPS and metrics.certSecret is
set; empty otherwise (a self-signed certificate, or plain HTTP).
*/}}
{{- define "pullsecret-injector.metricsCertSecret" -}}
{{- if and .Values.metrics.enabled .Values.metrics.secure }}
{{- .Values.metrics.certSecret }}
{{- end }}
{{- end }}

{{/*
"true" when the metrics endpoint is on and checks every scrape's token and authorization with the API
server: the ClusterRole then grants TokenReviews and SubjectAccessReviews, and the metrics-reader
ClusterRole is rendered.
*/}}
{{- define "pullsecret-injector.metricsSecure" -}}
{{- if and .Values.metrics.enabled .Values.metrics.secure }}
{{- "true" }}
{{- end }}
{{- end }}

{{/*
"true" in policy mode (injection.mode: policy): the binary writes a MutatingAdmissionPolicy instead of
serving a webhook, and the chart renders no webhook configuration, webhook port or certificate.
*/}}
{{- define "pullsecret-injector.policyMode" -}}
{{- if eq .Values.injection.mode "policy" }}
{{- "true" }}
{{- end }}
{{- end }}

{{/*
Name of the MutatingAdmissionPolicy and of its binding that the binary writes in policy mode (and deletes
in webhook mode); also --policy-name and the resourceNames of their RBAC rules. Cluster-scoped, like the
ClusterRole.
*/}}
{{- define "pullsecret-injector.policyName" -}}
{{- include "pullsecret-injector.fullname" . }}
{{- end }}

{{/*
Fails the render in policy mode where the API server does not serve MutatingAdmissionPolicy in
admissionregistration.k8s.io/v1 (Kubernetes 1.36 and later): the binary would not start. `helm template`
knows only what --api-versions tells it.
*/}}
{{- define "pullsecret-injector.checkPolicyMode" -}}
{{- if and (include "pullsecret-injector.policyMode" .) (not (.Capabilities.APIVersions.Has "admissionregistration.k8s.io/v1/MutatingAdmissionPolicy")) }}
{{- fail "injection.mode: policy needs the API server to serve admissionregistration.k8s.io/v1 MutatingAdmissionPolicy (Kubernetes 1.36 or later); this cluster does not. Use injection.mode: webhook, or with helm template pass --api-versions admissionregistration.k8s.io/v1/MutatingAdmissionPolicy" }}
{{- end }}
{{- if and (include "pullsecret-injector.policyMode" .) (eq .Values.serviceAccountPullSecrets "append") }}
{{- fail "serviceAccountPullSecrets: append needs injection.mode: webhook: the policy the API server evaluates cannot change ServiceAccounts" }}
{{- end }}
{{- end }}
