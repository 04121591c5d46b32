"""Control `rbac`: the model runs with no Kubernetes permissions, and people get only what they need.

A model server that is compromised should find no token and no rights. Viewers may read this SMD, the
pods and their logs; deployers may change this SMD and nothing else: no exec, no Secrets, no Deployments.
Roles name the SMD with resourceNames; pods cannot be narrowed that way (their names are generated),
so viewers read the pods of the namespace.
"""

from __future__ import annotations

from typing import Any

from securemodels.api import v1alpha1
from securemodels.desired import naming
from securemodels.desired.model import Blocker, Context, ControlResult, Manifest

NAME = "rbac"
CONDITION = "LeastPrivilege"
RBAC_GROUP = "rbac.authorization.k8s.io"
VIEWER = "viewer"
DEPLOYER = "deployer"


def service_account(context: Context) -> Manifest:
    owner = context.owner
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": naming.metadata(owner, owner.name, "serviceaccount"),
        "automountServiceAccountToken": False,
    }


def role_rules(context: Context, purpose: str) -> list[dict[str, Any]]:
    smd_rule = {
        "apiGroups": [v1alpha1.GROUP],
        "resources": [v1alpha1.PLURAL],
        "resourceNames": [context.owner.name],
    }
    if purpose == DEPLOYER:
        return [{**smd_rule, "verbs": ["get", "update", "patch"]}]
    return [
        {**smd_rule, "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    ]


def _subject(subject: v1alpha1.Subject) -> dict[str, str]:
    if subject.kind == "ServiceAccount":
        return {"kind": "ServiceAccount", "name": subject.name, "namespace": subject.namespace or ""}
    return {"kind": subject.kind, "apiGroup": RBAC_GROUP, "name": subject.name}


def _grants(context: Context) -> dict[str, list[v1alpha1.Subject]]:
    access = context.spec.access
    return {
        purpose: subjects
        for purpose, subjects in ((VIEWER, access.viewers), (DEPLOYER, access.deployers))
        if subjects
    }


def roles_and_bindings(context: Context) -> list[Manifest]:
    owner = context.owner
    manifests: list[Manifest] = []
    for purpose, subjects in _grants(context).items():
        name = owner.child(purpose)
        manifests.append(
            {
                "apiVersion": f"{RBAC_GROUP}/v1",
                "kind": "Role",
                "metadata": naming.metadata(owner, name, "rbac"),
                "rules": role_rules(context, purpose),
            }
        )
        manifests.append(
            {
                "apiVersion": f"{RBAC_GROUP}/v1",
                "kind": "RoleBinding",
                "metadata": naming.metadata(owner, name, "rbac"),
                "roleRef": {"apiGroup": RBAC_GROUP, "kind": "Role", "name": name},
                "subjects": [_subject(subject) for subject in subjects],
            }
        )
    return manifests


# Kubernetes' own default bindings (e.g. OIDC discovery for every service account) carry this label.
BOOTSTRAP_LABEL = "kubernetes.io/bootstrapping"


def _binds_model_account(binding: Manifest, owner: naming.Owner) -> bool:
    """Names the model's account, or a group it belongs to (other than in Kubernetes' defaults)."""
    groups = {"system:authenticated", "system:serviceaccounts", f"system:serviceaccounts:{owner.namespace}"}
    if (binding["metadata"].get("labels") or {}).get(BOOTSTRAP_LABEL) == "rbac-defaults":
        groups = set()
    for subject in binding.get("subjects") or []:
        kind, name = subject.get("kind"), subject.get("name")
        if (
            kind == "ServiceAccount"
            and name == owner.name
            and subject.get("namespace", owner.namespace) == owner.namespace
        ):
            return True
        if kind == "Group" and name in groups:
            return True
    return False


def preflight(context: Context) -> Blocker | None:
    access = context.spec.access
    granted = {"metadata": {}, "subjects": [_subject(item) for item in (*access.viewers, *access.deployers)]}
    if _binds_model_account(granted, context.owner):
        return Blocker(
            "AccessGrantsModelAccount",
            "spec.access names the model's own ServiceAccount, or a group it belongs to; the model never "
            "gets Kubernetes permissions",
        )
    return None


def check(
    context: Context,
    account: Manifest | None,
    roles: tuple[Manifest, ...],
    bindings: tuple[Manifest, ...],
    cluster_bindings: tuple[Manifest, ...],
) -> ControlResult:
    owner = context.owner
    account_problems = []
    if account is None:
        account_problems.append(f"ServiceAccount {owner.name} does not exist")
    elif account.get("automountServiceAccountToken") is not False:
        account_problems.append(f"ServiceAccount {owner.name} mounts its token into pods")
    granted_to_model = [
        f"{binding['kind']} {binding['metadata']['name']} grants permissions to the model's ServiceAccount"
        for binding in (*bindings, *cluster_bindings)
        if _binds_model_account(binding, owner)
    ]
    access_problems = []
    live_roles = {role["metadata"]["name"]: role for role in roles}
    live_bindings = {binding["metadata"]["name"]: binding for binding in bindings}
    for wanted in roles_and_bindings(context):
        name, kind = wanted["metadata"]["name"], wanted["kind"]
        live = (live_roles if kind == "Role" else live_bindings).get(name)
        if live is None:
            access_problems.append(f"{kind} {name} does not exist")
        elif kind == "Role" and live.get("rules") != wanted["rules"]:
            access_problems.append(f"Role {name} has rules beyond the spec")
        elif kind == "RoleBinding" and (
            live.get("subjects") != wanted["subjects"] or live.get("roleRef") != wanted["roleRef"]
        ):
            access_problems.append(f"RoleBinding {name} binds other subjects or roles than the spec")
    for reason, problems in (
        ("ExcessPrivilege", granted_to_model),
        ("AccessNotAsDeclared", access_problems),
        ("ServiceAccountNotHardened", account_problems),
    ):
        if problems:
            every = [*granted_to_model, *access_problems, *account_problems]
            return ControlResult(NAME, "Fail", reason, "; ".join(every))
    return ControlResult(
        NAME, "Pass", "LeastPrivilege", "model account has no token and no bindings; access as declared"
    )
