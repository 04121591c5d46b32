"""Exactly the API permissions the operator uses; the Helm chart's RBAC grants these and no more.

Checked at startup with SelfSubjectAccessReviews: an identity that lacks one is reported by name in the
log and in /readyz, instead of failing later with a bare 403.
"""

from __future__ import annotations

from dataclasses import dataclass

from securemodels.api import v1alpha1


@dataclass(frozen=True)
class Permission:
    group: str
    resource: str
    verbs: tuple[str, ...]

    def describe(self, verb: str, namespace: str | None) -> str:
        resource = f"{self.resource}.{self.group}" if self.group else self.resource
        return f"{verb} {resource}" + (f" in namespace {namespace}" if namespace else " (cluster-wide)")


# In the namespaces the operator manages (or cluster-wide when it manages all of them).
NAMESPACED = (
    Permission(v1alpha1.GROUP, v1alpha1.PLURAL, ("get", "list", "watch", "update", "patch")),
    Permission(v1alpha1.GROUP, f"{v1alpha1.PLURAL}/status", ("get", "patch")),
    Permission("apps", "deployments", ("get", "list", "watch", "create", "patch")),
    Permission("", "services", ("get", "create", "patch")),
    Permission("", "serviceaccounts", ("get", "create", "patch")),
    Permission("", "configmaps", ("get", "list", "create", "patch", "delete")),
    Permission("", "secrets", ("get", "list", "create", "patch", "delete")),
    Permission("", "persistentvolumeclaims", ("get", "list", "create", "patch", "delete")),
    Permission("networking.k8s.io", "networkpolicies", ("get", "list", "create", "patch")),
    Permission("rbac.authorization.k8s.io", "roles", ("get", "list", "create", "patch", "delete")),
    Permission("rbac.authorization.k8s.io", "rolebindings", ("get", "list", "create", "patch", "delete")),
    Permission("", "events", ("create",)),
    # Pods: the operator lists them to find strays with the model's labels, and must hold what it grants
    # to viewers (RBAC forbids escalation).
    Permission("", "pods", ("get", "list", "watch")),
    Permission("", "pods/log", ("get",)),
)
CLUSTER = (
    Permission("rbac.authorization.k8s.io", "clusterrolebindings", ("list",)),
    Permission("storage.k8s.io", "storageclasses", ("get",)),
    Permission("", "nodes", ("list",)),
    Permission("", "namespaces", ("get",)),
)
# In the operator's own namespace: the CA Secret.
OWN_NAMESPACE = (
    Permission("", "secrets", ("get", "create", "patch")),
    Permission("", "events", ("create",)),  # Events about the CA Secret
)
