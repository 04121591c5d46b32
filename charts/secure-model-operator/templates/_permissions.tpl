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
  - {apiGroup: securemodels.io, resource: securemodeldeployments, verbs: [get, list, watch, update, patch]}
  - {apiGroup: securemodels.io, resource: securemodeldeployments/status, verbs: [get, patch]}
  - {apiGroup: apps, resource: deployments, verbs: [get, list, watch, create, patch]}
  - {apiGroup: "", resource: services, verbs: [get, create, patch]}
  - {apiGroup: "", resource: serviceaccounts, verbs: [get, create, patch]}
  - {apiGroup: "", resource: configmaps, verbs: [get, list, create, patch, delete]}
  - {apiGroup: "", resource: secrets, verbs: [get, list, create, patch, delete]}
  - {apiGroup: "", resource: persistentvolumeclaims, verbs: [get, list, create, patch, delete]}
  - {apiGroup: networking.k8s.io, resource: networkpolicies, verbs: [get, list, create, patch]}
  - {apiGroup: rbac.authorization.k8s.io, resource: roles, verbs: [get, list, create, patch, delete]}
  - {apiGroup: rbac.authorization.k8s.io, resource: rolebindings, verbs: [get, list, create, patch, delete]}
  - {apiGroup: "", resource: events, verbs: [create]}
  # Pods: listed to find strays with a model's labels, and held so that viewers may be granted them.
  - {apiGroup: "", resource: pods, verbs: [get, list, watch]}
  - {apiGroup: "", resource: pods/log, verbs: [get]}
cluster:
  - {apiGroup: rbac.authorization.k8s.io, resource: clusterrolebindings, verbs: [list]}
  - {apiGroup: storage.k8s.io, resource: storageclasses, verbs: [get]}
  - {apiGroup: "", resource: nodes, verbs: [list]}
  - {apiGroup: "", resource: namespaces, verbs: [get]}
ownNamespace:
  - {apiGroup: "", resource: secrets, verbs: [get, create, patch]}
  - {apiGroup: "", resource: events, verbs: [create]}
{{- end -}}

{{/* RBAC rules from a list of permissions (call with the list): one rule per resource. */}}
{{- define "secure-model-operator.rules" -}}
{{- $rules := list -}}
{{- range . -}}
{{- $rules = append $rules (dict "apiGroups" (list .apiGroup) "resources" (list .resource) "verbs" .verbs) -}}
{{- end -}}
{{- toYaml $rules -}}
{{- end -}}
