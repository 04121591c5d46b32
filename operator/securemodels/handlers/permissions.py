"""Exactly the API permissions the operator uses; the Helm chart's RBAC grants these and no more.

Checked at startup with SelfSubjectAccessReviews: an identity that lacks one is reported by name in the
log and in /readyz, instead of failing later with a bare 403.
"""

from __future__ import annotations

from dataclasses import dataclass

from securemodels.api import v1alpha1
from securemodels.config import PolicyReports
from securemodels.desired import naming


@dataclass(frozen=True)
class Permission:
    group: str
    resource: str
    verbs: tuple[str, ...]
    names: tuple[str, ...] = ()  # resourceNames: only these objects

    def describe(self, verb: str, namespace: str | None, name: str | None = None) -> str:
        resource = f"{self.resource}.{self.group}" if self.group else self.resource
        resource += f" {name}" if name else ""
        return f"{verb} {resource}" + (f" in namespace {namespace}" if namespace else " (cluster-wide)")


# In the namespaces the operator manages (or cluster-wide when it manages all of them). Children are
# created with POST and replaced with PUT (never patched), and watched into caches.
_WATCHED = ("get", "list", "watch")
NAMESPACED = (
    # update and patch of SMDs are never used: they are held because the deployer Role grants them, and
    # RBAC lets no one grant what they do not hold.
    Permission(v1alpha1.GROUP, v1alpha1.PLURAL, ("get", "list", "watch", "update", "patch")),
    Permission(v1alpha1.GROUP, f"{v1alpha1.PLURAL}/status", ("get", "patch")),
    Permission("apps", "deployments", (*_WATCHED, "create", "update")),
    Permission("apps", "replicasets", ("list", "watch")),
    Permission("", "services", (*_WATCHED, "create", "update")),
    Permission("", "serviceaccounts", (*_WATCHED, "create", "update")),
    Permission("", "configmaps", (*_WATCHED, "create", "update", "delete")),
    Permission("", "secrets", (*_WATCHED, "create", "update", "delete")),
    Permission("", "persistentvolumeclaims", (*_WATCHED, "create", "update", "delete")),
    Permission("networking.k8s.io", "networkpolicies", (*_WATCHED, "create", "update")),
    Permission("rbac.authorization.k8s.io", "roles", (*_WATCHED, "create", "update", "delete")),
    Permission("rbac.authorization.k8s.io", "rolebindings", (*_WATCHED, "create", "update", "delete")),
    Permission("", "events", ("create",)),
    # Pods: watched to judge what runs, and held so that viewers may be granted them.
    Permission("", "pods", _WATCHED),
    Permission("", "pods/log", ("get",)),
)
CLUSTER = (
    Permission("rbac.authorization.k8s.io", "clusterrolebindings", ("list", "watch")),
    Permission("rbac.authorization.k8s.io", "clusterroles", ("list", "watch")),
    Permission("storage.k8s.io", "storageclasses", ("list", "watch")),
    Permission("", "nodes", ("list", "watch")),
    Permission("", "namespaces", ("list", "watch")),
    # The authorizer's answer about each model's account (the rbac control).
    Permission("authorization.k8s.io", "subjectaccessreviews", ("create",)),
)
# In the operator's own namespace, when it manages other namespaces only: its CA Secret, the CA ledger and
# the stamp key, each by name (a list or watch with a metadata.name field selector), and Events about them.
# Creating cannot be limited to a name.
_OWN_SECRETS = tuple(name for kind, name in naming.OWN_OBJECTS if kind == "Secret")
_OWN_CONFIG_MAPS = tuple(name for kind, name in naming.OWN_OBJECTS if kind == "ConfigMap")
OWN_NAMESPACE = (
    Permission("", "secrets", (*_WATCHED, "update"), _OWN_SECRETS),
    Permission("", "secrets", ("create",)),
    Permission("", "configmaps", (*_WATCHED, "update"), _OWN_CONFIG_MAPS),
    Permission("", "configmaps", ("create",)),
    Permission("", "events", ("create",)),
)


def leader_election(lease_name: str) -> tuple[Permission, ...]:
    """In the operator's own namespace, whenever leader election is on: its Lease, by name."""
    return (
        Permission("coordination.k8s.io", "leases", ("get", "update"), (lease_name,)),
        Permission("coordination.k8s.io", "leases", ("create",)),
    )


def compliance_reports(settings: PolicyReports) -> tuple[Permission, ...]:
    """In the managed namespaces, when compliance reports are on: the configured report kind (get, to
    see whether a name someone else held is free; delete, for a namespace left without models)."""
    if not settings.enabled:
        return ()
    group = settings.api.split("/")[0]
    resource = {"PolicyReport": "policyreports", "Report": "reports"}[settings.kind]
    return (Permission(group, resource, ("get", "list", "watch", "create", "update", "delete")),)
