{{/* Names and labels shared by every template. */}}

{{- define "secure-model-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "secure-model-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Cluster-scoped objects carry the release namespace in their name: two releases with the same name in
different namespaces (each operator watching its own namespaces) must not claim the same ClusterRole.
*/}}
{{- define "secure-model-operator.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "secure-model-operator.fullname" .) -}}
{{- end -}}

{{- define "secure-model-operator.serviceAccountName" -}}
{{- include "secure-model-operator.fullname" . -}}
{{- end -}}

{{/* Selectors use only name and instance: both are immutable for the life of a release. */}}
{{- define "secure-model-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "secure-model-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of every object; call with (dict "context" $ "component" "<what it is>"). */}}
{{- define "secure-model-operator.labels" -}}
{{- $ := .context -}}
{{ include "secure-model-operator.selectorLabels" $ }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/managed-by: {{ $.Release.Service }}
app.kubernetes.io/part-of: secure-model-operator
app.kubernetes.io/version: {{ $.Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" $.Chart.Name $.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{/* The image, by digest only: a tag can be moved to other content, a digest cannot. */}}
{{- define "secure-model-operator.image" -}}
{{- $repository := required "image.repository is required: the operator image's repository, without tag (e.g. ghcr.io/acme/secure-model-operator)" .Values.image.repository -}}
{{- $digest := required "image.digest is required: the operator image's digest, sha256:<64 hex> (tags are not accepted)" .Values.image.digest -}}
{{- printf "%s@%s" $repository $digest -}}
{{- end -}}

{{- define "secure-model-operator.configPath" -}}
/etc/securemodels/config.yaml
{{- end -}}
