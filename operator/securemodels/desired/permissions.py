"""What the model's account must not be allowed to do, as questions for the API server's authorizer.

Each probe is one SubjectAccessReview. The model's ServiceAccount is asked with the groups the API
server gives every service account of its namespace, so that bindings to those groups count too; a
service account that does not exist (so nothing can be bound to it by name) is asked the same, and
what it may do too is the cluster's doing, not the model's.

Pure: the probes and the review bodies; the handler sends them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from securemodels.api import v1alpha1

# The account of the baseline question: no ServiceAccount can have this name (a DNS label cannot start
# with "-"), so no ServiceAccount subject can bind it.
BASELINE_ACCOUNT = "-securemodels-baseline"


@dataclass(frozen=True)
class Probe:
    verb: str
    group: str
    resource: str
    subresource: str = ""
    cluster_wide: bool = False

    def describe(self, elsewhere: str | None = None) -> str:
        """What the probe asks, as words; `elsewhere`: the namespace it was asked in, when not the
        model's own."""
        if elsewhere is not None and not self.cluster_wide:
            return f"{self.describe()} in namespace {elsewhere}"
        if self.verb == "*" and self.resource == "*":
            return "do anything" + (" cluster-wide" if self.cluster_wide else "")
        resource = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        if self.group not in ("", "*"):
            resource = f"{resource}.{self.group}"
        where = " cluster-wide" if self.cluster_wide else ""
        return f"{self.verb} {resource}{where}"

    def attributes(self, namespace: str) -> dict[str, str]:
        found = {"verb": self.verb, "group": self.group, "resource": self.resource}
        if self.subresource:
            found["subresource"] = self.subresource
        if not self.cluster_wide:
            found["namespace"] = namespace
        return found


RBAC_GROUP = "rbac.authorization.k8s.io"

# Sensitive actions, in the model's namespace unless cluster-wide: reading credentials (a watch or a
# list streams every Secret as a get does), running code (any kind that makes pods runs it under any
# account of the namespace), minting tokens or certificates, changing what runs, what may reach the
# model or who may do what, and everything at once.
PROBES = (
    Probe("*", "*", "*", cluster_wide=True),
    Probe("get", "", "secrets"),
    Probe("list", "", "secrets"),
    Probe("watch", "", "secrets"),
    Probe("list", "", "secrets", cluster_wide=True),
    Probe("watch", "", "secrets", cluster_wide=True),
    Probe("get", "", "configmaps"),
    Probe("create", "", "pods"),
    Probe("create", "", "pods", "exec"),
    Probe("create", "", "pods", "attach"),
    Probe("create", "", "pods", "portforward"),
    Probe("patch", "", "pods", "ephemeralcontainers"),
    Probe("create", "", "replicationcontrollers"),
    Probe("create", "apps", "deployments"),
    Probe("patch", "apps", "deployments"),
    Probe("create", "apps", "replicasets"),
    Probe("create", "apps", "statefulsets"),
    Probe("create", "apps", "daemonsets"),
    Probe("create", "batch", "jobs"),
    Probe("create", "batch", "cronjobs"),
    Probe("create", "", "serviceaccounts", "token"),
    Probe("create", RBAC_GROUP, "rolebindings"),
    Probe("escalate", RBAC_GROUP, "roles"),
    Probe("bind", RBAC_GROUP, "roles"),
    Probe("create", RBAC_GROUP, "clusterrolebindings", cluster_wide=True),
    Probe("create", "networking.k8s.io", "networkpolicies"),
    Probe("patch", "networking.k8s.io", "networkpolicies"),
    Probe("create", "", "services"),
    Probe("patch", v1alpha1.GROUP, v1alpha1.PLURAL),
    Probe("impersonate", "", "users", cluster_wide=True),
    Probe("impersonate", "", "groups", cluster_wide=True),
    Probe("impersonate", "", "serviceaccounts", cluster_wide=True),
    Probe("create", "certificates.k8s.io", "certificatesigningrequests", cluster_wide=True),
    Probe("get", "", "nodes", "proxy", cluster_wide=True),
    Probe("create", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", cluster_wide=True),
)


def user_of(namespace: str, account: str) -> str:
    return f"system:serviceaccount:{namespace}:{account}"


def groups_of(namespace: str) -> list[str]:
    """The groups the API server puts every service account of the namespace in."""
    return ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"]


def review(namespace: str, account: str, probe: Probe, where: str | None = None) -> dict[str, Any]:
    """The SubjectAccessReview asking whether the account (of `namespace`) may do what the probe says,
    in `where` (default: its own namespace)."""
    return {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": user_of(namespace, account),
            "groups": groups_of(namespace),
            "resourceAttributes": probe.attributes(where or namespace),
        },
    }
