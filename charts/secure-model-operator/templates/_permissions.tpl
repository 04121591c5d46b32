{{/*
The operator's API permissions, the single source of the chart's RBAC. It mirrors
operator/securemodels/handlers/permissions.py, which the operator checks at startup (missing ones are
named in /readyz and the log); tests/chart/test_render.py fails when the two differ. No wildcards.

namespaced:   in every managed namespace (cluster-wide when config.watchNamespaces is empty)
cluster:      cluster-scoped kinds, always cluster-wide
ownNamespace: in the release namespace: the CA Secret, and Events about it
*/}}
{{- define "secure-model-operator.permissions" -}}
namespaced:
  # update and patch of SMDs are never used: held because the deployer Role grants them.
  - {apiGroup: securemodels.io, resource: securemodeldeployments, verbs: [get, list, watch, update, patch]}
  - {apiGroup: securemodels.io, resource: securemodeldeployments/status, verbs: [get, patch]}
  - {apiGroup: apps, resource: deployments, verbs: [get, list, watch, create, update]}
  - {apiGroup: apps, resource: replicasets, verbs: [list, watch]}
  - {apiGroup: "", resource: services, verbs: [get, list, watch, create, update]}
  - {apiGroup: "", resource: serviceaccounts, verbs: [get, list, watch, create, update]}
  - {apiGroup: "", resource: configmaps, verbs: [get, list, watch, create, update, delete]}
  - {apiGroup: "", resource: secrets, verbs: [get, list, watch, create, update, delete]}
  - {apiGroup: "", resource: persistentvolumeclaims, verbs: [get, list, watch, create, update, delete]}
  - {apiGroup: networking.k8s.io, resource: networkpolicies, verbs: [get, list, watch, create, update]}
  - {apiGroup: rbac.authorization.k8s.io, resource: roles, verbs: [get, list, watch, create, update, delete]}
  - {apiGroup: rbac.authorization.k8s.io, resource: rolebindings, verbs: [get, list, watch, create, update, delete]}
  - {apiGroup: "", resource: events, verbs: [create]}
  # Pods: watched to judge what runs, and held so that viewers may be granted them.
  - {apiGroup: "", resource: pods, verbs: [get, list, watch]}
  - {apiGroup: "", resource: pods/log, verbs: [get]}
  {{- with .Values.config.policyReports }}
  {{- if .enabled }}
  # The compliance reports of the configured API only.
  {{- if eq .api "openreports.io/v1alpha1" }}
  - {apiGroup: openreports.io, resource: reports, verbs: [get, list, watch, create, update, delete]}
  {{- else }}
  - {apiGroup: wgpolicyk8s.io, resource: policyreports, verbs: [get, list, watch, create, update, delete]}
  {{- end }}
  {{- end }}
  {{- end }}
cluster:
  - {apiGroup: rbac.authorization.k8s.io, resource: clusterrolebindings, verbs: [list, watch]}
  - {apiGroup: rbac.authorization.k8s.io, resource: clusterroles, verbs: [list, watch]}
  - {apiGroup: storage.k8s.io, resource: storageclasses, verbs: [list, watch]}
  - {apiGroup: "", resource: nodes, verbs: [list, watch]}
  - {apiGroup: "", resource: namespaces, verbs: [list, watch]}
  # The authorizer's answer about each model's account (the rbac control).
  - {apiGroup: authorization.k8s.io, resource: subjectaccessreviews, verbs: [create]}
ownNamespace:
  # Its own objects by name only (creating cannot be limited to a name).
  - {apiGroup: "", resource: secrets, verbs: [get, list, watch, update], resourceNames: [securemodels-ca, securemodels-stamp-key]}
  - {apiGroup: "", resource: secrets, verbs: [create]}
  - {apiGroup: "", resource: configmaps, verbs: [get, list, watch, update], resourceNames: [securemodels-ca-ledger]}
  - {apiGroup: "", resource: configmaps, verbs: [create]}
  - {apiGroup: "", resource: events, verbs: [create]}
leaderElection:
  - {apiGroup: coordination.k8s.io, resource: leases, verbs: [get, update], resourceNames: [{{ .Values.config.leaderElection.leaseName | default "secure-model-operator" }}]}
  - {apiGroup: coordination.k8s.io, resource: leases, verbs: [create]}
{{- end -}}

{{/* RBAC rules from a list of permissions (call with the list): one rule per resource. */}}
{{- define "secure-model-operator.rules" -}}
{{- $rules := list -}}
{{- range . -}}
{{- $rule := dict "apiGroups" (list .apiGroup) "resources" (list .resource) "verbs" .verbs -}}
{{- with .resourceNames }}{{- $_ := set $rule "resourceNames" . -}}{{- end -}}
{{- $rules = append $rules $rule -}}
{{- end -}}
{{- toYaml $rules -}}
{{- end -}}
