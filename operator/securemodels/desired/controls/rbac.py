"""Control `rbac`: the model runs with no Kubernetes permissions, and people get only what they need.

A model server that is compromised should find no token and no rights. Viewers may read this SMD, the
pods and their logs; deployers may change this SMD and nothing else: no exec, no Secrets, no Deployments.
Roles name the SMD with resourceNames; pods cannot be narrowed that way (their names are generated),
so viewers read the pods of the namespace.

Judged by the API server's authorizer, not by reading bindings: a SubjectAccessReview per sensitive
action for the model's account (desired/permissions.py), so no way of writing a binding (a User subject
spelling the account's name, a group it belongs to, an aggregated role) escapes. Bindings that name the
account are listed only to say where a grant comes from.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from securemodels.api import v1alpha1
from securemodels.desired import naming, permissions
from securemodels.desired.controls.base import verdict
from securemodels.desired.model import Blocker, Context, ControlResult, Manifest, Observed

NAME = "rbac"
CONDITION = "LeastPrivilege"
RBAC_GROUP = "rbac.authorization.k8s.io"
VIEWER = naming.VIEWER
DEPLOYER = naming.DEPLOYER


class Reason(StrEnum):
    LEAST_PRIVILEGE = "LeastPrivilege"
    EXCESS_PRIVILEGE = "ExcessPrivilege"
    NOT_AS_DECLARED = "AccessNotAsDeclared"
    ACCOUNT_NOT_HARDENED = "ServiceAccountNotHardened"
    PERMISSIONS_UNKNOWN = "PermissionsUnknown"
    GRANTS_MODEL_ACCOUNT = "AccessGrantsModelAccount"


def service_account(context: Context) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": naming.metadata(context.owner, context.names.service_account, "serviceaccount"),
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


def grants(context: Context) -> dict[str, list[v1alpha1.Subject]]:
    access = context.spec.access
    return {
        purpose: subjects
        for purpose, subjects in ((VIEWER, access.viewers), (DEPLOYER, access.deployers))
        if subjects
    }


def roles_and_bindings(context: Context) -> list[Manifest]:
    owner, names = context.owner, context.names
    manifests: list[Manifest] = []
    for purpose, subjects in grants(context).items():
        role = names.roles[purpose]
        manifests.append(
            {
                "apiVersion": f"{RBAC_GROUP}/v1",
                "kind": "Role",
                "metadata": naming.metadata(owner, role, "rbac"),
                "rules": role_rules(context, purpose),
            }
        )
        manifests.append(
            {
                "apiVersion": f"{RBAC_GROUP}/v1",
                "kind": "RoleBinding",
                "metadata": naming.metadata(owner, names.role_bindings[purpose], "rbac"),
                "roleRef": {"apiGroup": RBAC_GROUP, "kind": "Role", "name": role.name},
                "subjects": [_subject(subject) for subject in subjects],
            }
        )
    return manifests


def names_model_account(subjects: list[dict[str, Any]], owner: naming.Owner) -> bool:
    """A subject list that reaches the model's account: by its ServiceAccount, its user name, or a group
    it belongs to."""
    groups = set(permissions.groups_of(owner.namespace))
    for subject in subjects:
        kind, name = subject.get("kind"), subject.get("name")
        if kind == "ServiceAccount" and name == owner.name and subject.get("namespace") == owner.namespace:
            return True
        if kind == "User" and name == permissions.user_of(owner.namespace, owner.name):
            return True
        if kind == "Group" and name in groups:
            return True
    return False


def preflight(context: Context, observed: Observed) -> Blocker | None:
    access = context.spec.access
    subjects = [_subject(item) for item in (*access.viewers, *access.deployers)]
    if names_model_account(subjects, context.owner):
        return Blocker(
            Reason.GRANTS_MODEL_ACCOUNT,
            "spec.access names the model's own ServiceAccount, or a group it belongs to; the model never "
            "gets Kubernetes permissions",
        )
    return None


def check(context: Context, observed: Observed) -> ControlResult:
    names = context.names
    problems = list(observed.findings.get(NAME, ()))
    reasons = [Reason.NOT_AS_DECLARED] if problems else []
    account = observed.get(names.service_account)
    if account is None:
        problems.append(f"ServiceAccount {names.service_account.name} does not exist")
        reasons.append(Reason.ACCOUNT_NOT_HARDENED)
    elif account.get("automountServiceAccountToken") is not False:
        problems.append(f"ServiceAccount {names.service_account.name} mounts its token into pods")
        reasons.append(Reason.ACCOUNT_NOT_HARDENED)
    for wanted in roles_and_bindings(context):
        ref = naming.ChildRef(wanted["kind"], context.owner.namespace, wanted["metadata"]["name"])
        if observed.get(ref) is None:
            problems.append(f"{ref.kind} {ref.name} does not exist")
            reasons.append(Reason.NOT_AS_DECLARED)
    answers = observed.permissions
    if answers is None:
        problems.append("the model's permissions could not be asked of the API server yet")
        reasons.append(Reason.PERMISSIONS_UNKNOWN)
    elif answers.allowed:
        reasons.append(Reason.EXCESS_PRIVILEGE)
        own = [probe for probe in answers.allowed if probe not in answers.everyone]
        shared = [probe for probe in answers.allowed if probe in answers.everyone]
        culprits = observed.bindings_naming_model
        if own:
            where = f" (through {', '.join(culprits)})" if culprits else ""
            problems.append(f"the model's ServiceAccount may {', '.join(own)}{where}")
        if shared:
            problems.append(
                f"every service account of the namespace, the model's included, may {', '.join(shared)}"
            )
    # The gravest finding names the verdict.
    order = (
        Reason.EXCESS_PRIVILEGE,
        Reason.PERMISSIONS_UNKNOWN,
        Reason.ACCOUNT_NOT_HARDENED,
        Reason.NOT_AS_DECLARED,
    )
    failing = next((reason for reason in order if reason in reasons), Reason.NOT_AS_DECLARED)
    return verdict(
        NAME,
        problems,
        failing,
        Reason.LEAST_PRIVILEGE,
        "the authorizer grants the model's account nothing; access as declared",
    )
