"""Acting as someone else on the test control plane: kubectl with --as, and RBAC grants made by the
admin, so that a test can try what a deployer, a viewer or a security admin could do."""

from __future__ import annotations

import subprocess
import uuid
from dataclasses import dataclass
from typing import Any

import yaml

from support.kube import Kubectl

RBAC = "rbac.authorization.k8s.io"


@dataclass(frozen=True)
class AdmissionPolicy:
    """The chart's admission policy, installed: the ClusterRoles it refers to."""

    security_admin: str  # holds grant, weaken and set-owner on securemodeldeployments
    client_certificates: str  # bound in a namespace, opts it in to receive client certificates


class Impersonated:
    """kubectl as `user` (and `groups`), through the admin's right to impersonate."""

    def __init__(self, kubectl: Kubectl, user: str, groups: tuple[str, ...] = ()) -> None:
        self.kubectl, self.user, self.groups = kubectl, user, groups

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        identity = [f"--as={self.user}", *(f"--as-group={group}" for group in self.groups)]
        return self.kubectl.run(*identity, *args, stdin=stdin)

    def apply(self, manifest: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return self.run("apply", "-f", "-", stdin=yaml.safe_dump(manifest))

    def patch(
        self, kind: str, name: str, namespace: str, patch: str, kind_of_patch: str = "merge"
    ) -> subprocess.CompletedProcess[str]:
        return self.run("patch", kind, name, "-n", namespace, f"--type={kind_of_patch}", "-p", patch)


def grant(
    kubectl: Kubectl,
    user: str,
    namespace: str | None,
    rules: list[dict[str, Any]],
) -> str:
    """A Role (or ClusterRole, with no namespace) with `rules`, bound to `user`; returns its name."""
    name = f"grant-{uuid.uuid4().hex[:8]}"
    role_kind = "Role" if namespace else "ClusterRole"
    metadata: dict[str, Any] = {"name": name, **({"namespace": namespace} if namespace else {})}
    kubectl.apply(
        [
            {"apiVersion": f"{RBAC}/v1", "kind": role_kind, "metadata": metadata, "rules": rules},
            {
                "apiVersion": f"{RBAC}/v1",
                "kind": f"{role_kind}Binding",
                "metadata": metadata,
                "roleRef": {"apiGroup": RBAC, "kind": role_kind, "name": name},
                "subjects": [{"apiGroup": RBAC, "kind": "User", "name": user}],
            },
        ]
    )
    return name


def bind_cluster_role(kubectl: Kubectl, user: str, cluster_role: str, namespace: str | None = None) -> None:
    """Bind an existing ClusterRole to `user`, in one namespace or cluster-wide."""
    name = f"bind-{uuid.uuid4().hex[:8]}"
    kind = "RoleBinding" if namespace else "ClusterRoleBinding"
    metadata: dict[str, Any] = {"name": name, **({"namespace": namespace} if namespace else {})}
    kubectl.apply(
        {
            "apiVersion": f"{RBAC}/v1",
            "kind": kind,
            "metadata": metadata,
            "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": cluster_role},
            "subjects": [{"apiGroup": RBAC, "kind": "User", "name": user}],
        }
    )


def smd_rule(verbs: list[str], names: list[str] | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "apiGroups": ["securemodels.io"],
        "resources": ["securemodeldeployments"],
        "verbs": verbs,
    }
    if names:
        rule["resourceNames"] = names
    return rule
