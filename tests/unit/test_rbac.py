"""Control rbac: the model's account has no token and no rights; people get narrow, named Roles."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from securemodels.desired import judging, permissions
from securemodels.desired.controls import rbac
from securemodels.desired.model import Context, ControlResult, Observed, Permissions
from unit.builders import NAMESPACE, Mutation, altered, build, context, find, kinds, observe, removed

VIEWER = {"kind": "Group", "name": "ml-auditors"}
DEPLOYER = {"kind": "User", "name": "alice@example.com"}
ROBOT = {"kind": "ServiceAccount", "name": "ci", "namespace": "ci"}
ACCESS: dict[str, Any] = {"access": {"viewers": [VIEWER, ROBOT], "deployers": [DEPLOYER]}}
SMD_RULE = {
    "apiGroups": ["securemodels.io"],
    "resources": ["securemodeldeployments"],
    "resourceNames": ["fraud"],
}


def test_service_account_does_not_mount_its_token() -> None:
    account = rbac.service_account(context())

    assert account["kind"] == "ServiceAccount"
    assert account["metadata"]["name"] == "fraud"
    assert account["automountServiceAccountToken"] is False


def test_no_roles_without_subjects() -> None:
    owned = build(context()).owned

    assert rbac.roles_and_bindings(context()) == []
    assert "Role" not in kinds(owned)
    assert "RoleBinding" not in kinds(owned)


@pytest.mark.parametrize(
    ("access", "roles"),
    [({"viewers": [VIEWER]}, ["fraud-viewer"]), ({"deployers": [DEPLOYER]}, ["fraud-deployer"])],
    ids=["viewers only", "deployers only"],
)
def test_a_role_only_for_the_declared_purpose(access: dict[str, Any], roles: list[str]) -> None:
    manifests = rbac.roles_and_bindings(context(access=access))

    assert [(item["kind"], item["metadata"]["name"]) for item in manifests] == [
        ("Role", roles[0]),
        ("RoleBinding", roles[0]),
    ]


def test_viewer_reads_the_smd_by_name_and_the_pods_and_their_logs() -> None:
    role = find(rbac.roles_and_bindings(context(**ACCESS)), "Role", "fraud-viewer")

    assert role["rules"] == [
        {**SMD_RULE, "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    ]


def test_deployer_changes_only_the_smd_by_name() -> None:
    role = find(rbac.roles_and_bindings(context(**ACCESS)), "Role", "fraud-deployer")

    assert role["rules"] == [{**SMD_RULE, "verbs": ["get", "update", "patch"]}]


def test_no_wildcards_no_secrets_no_exec() -> None:
    rules = [rule for item in rbac.roles_and_bindings(context(**ACCESS)) for rule in item.get("rules", [])]
    values = {
        value for rule in rules for field in ("apiGroups", "resources", "verbs") for value in rule[field]
    }

    assert rules
    assert "*" not in values
    assert not {"secrets", "pods/exec", "pods/attach", "pods/portforward", "create", "delete"} & values


def test_bindings_name_their_role_and_the_declared_subjects() -> None:
    manifests = rbac.roles_and_bindings(context(**ACCESS))
    viewers = find(manifests, "RoleBinding", "fraud-viewer")
    deployers = find(manifests, "RoleBinding", "fraud-deployer")

    assert viewers["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "fraud-viewer",
    }
    assert viewers["subjects"] == [
        {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "ml-auditors"},
        {"kind": "ServiceAccount", "name": "ci", "namespace": "ci"},
    ]
    assert deployers["subjects"] == [
        {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice@example.com"}
    ]


def declared() -> Context:
    return context(**ACCESS)


def check(observed: Observed, ctx: Context | None = None) -> ControlResult:
    return rbac.check(ctx or declared(), observed)


def test_check_passes_the_built_objects_when_nothing_is_allowed() -> None:
    result = check(observe(declared()))

    assert (result.name, result.status, result.reason) == ("rbac", "Pass", "LeastPrivilege")
    assert observe(declared()).permissions == Permissions()


@pytest.mark.parametrize(
    ("mutation", "problem"),
    [
        (lambda account: account.update(automountServiceAccountToken=True), "mounts its token"),
        (lambda account: account.pop("automountServiceAccountToken"), "mounts its token"),
    ],
    ids=["automount on", "automount unset"],
)
def test_check_fails_on_an_account_that_mounts_its_token(mutation: Mutation, problem: str) -> None:
    result = check(altered(observe(declared()), "ServiceAccount", mutation))

    assert (result.status, result.reason) == ("Fail", "ServiceAccountNotHardened")
    assert f"ServiceAccount fraud {problem} into pods" in result.message


def test_check_fails_without_the_account() -> None:
    result = check(removed(observe(declared()), "ServiceAccount"))

    assert (result.status, result.reason) == ("Fail", "ServiceAccountNotHardened")
    assert "ServiceAccount fraud does not exist" in result.message


@pytest.mark.parametrize(("kind", "name"), [("Role", "fraud-viewer"), ("RoleBinding", "fraud-deployer")])
def test_check_fails_when_a_declared_object_is_missing(kind: str, name: str) -> None:
    result = check(removed(observe(declared()), kind, name))

    assert (result.status, result.reason) == ("Fail", "AccessNotAsDeclared")
    assert f"{kind} {name} does not exist" in result.message


def test_check_fails_while_the_permissions_are_unknown() -> None:
    result = check(replace(observe(declared()), permissions=None))

    assert (result.status, result.reason) == ("Fail", "PermissionsUnknown")
    assert "the model's permissions could not be asked of the API server yet" in result.message


PERMISSIONS: list[tuple[str, Permissions, tuple[str, ...], list[str]]] = [
    (
        "its own grant, with where it comes from",
        Permissions(allowed=("get secrets", "create pods/exec")),
        ("RoleBinding ml-prod/extra", "ClusterRoleBinding admin-for-fraud"),
        [
            "the model's ServiceAccount may get secrets, create pods/exec "
            "(through RoleBinding ml-prod/extra, ClusterRoleBinding admin-for-fraud)"
        ],
    ),
    (
        "its own grant, from nowhere known",
        Permissions(allowed=("do anything cluster-wide",)),
        (),
        ["the model's ServiceAccount may do anything cluster-wide"],
    ),
    (
        "every account's grant",
        Permissions(allowed=("get configmaps",), everyone=("get configmaps",)),
        ("RoleBinding ml-prod/extra",),
        ["every service account of the namespace, the model's included, may get configmaps"],
    ),
    (
        "both",
        Permissions(allowed=("get secrets", "get configmaps"), everyone=("get configmaps",)),
        (),
        [
            "the model's ServiceAccount may get secrets",
            "every service account of the namespace, the model's included, may get configmaps",
        ],
    ),
]


@pytest.mark.parametrize(
    ("answers", "culprits", "problems"), [c[1:] for c in PERMISSIONS], ids=[c[0] for c in PERMISSIONS]
)
def test_check_fails_on_what_the_authorizer_allows_the_model_account(
    answers: Permissions, culprits: tuple[str, ...], problems: list[str]
) -> None:
    result = check(replace(observe(declared()), permissions=answers, bindings_naming_model=culprits))

    assert (result.status, result.reason) == ("Fail", "ExcessPrivilege")
    assert result.message.split("; ") == problems


def test_bindings_naming_the_account_alone_are_not_a_failure() -> None:
    observed = replace(observe(declared()), bindings_naming_model=("RoleBinding ml-prod/harmless",))

    assert check(observed).status == "Pass"


REASONS: list[tuple[str, dict[str, Any], str]] = [
    (
        "excess privilege first",
        {"permissions": Permissions(allowed=("get secrets",)), "account": None},
        "ExcessPrivilege",
    ),
    ("then unknown permissions", {"permissions": None, "account": None}, "PermissionsUnknown"),
    ("then the account", {"account": None, "role": None}, "ServiceAccountNotHardened"),
    ("then the declared access", {"role": None}, "AccessNotAsDeclared"),
    (
        "findings are access not as declared",
        {"findings": ("Role fraud-viewer was changed",)},
        "AccessNotAsDeclared",
    ),
    (
        "findings do not hide an excess",
        {
            "findings": ("Role fraud-viewer was changed",),
            "permissions": Permissions(allowed=("get secrets",)),
        },
        "ExcessPrivilege",
    ),
]


@pytest.mark.parametrize(("situation", "reason"), [c[1:] for c in REASONS], ids=[c[0] for c in REASONS])
def test_the_gravest_problem_names_the_reason(situation: dict[str, Any], reason: str) -> None:
    observed = observe(declared())
    if "account" in situation:
        observed = removed(observed, "ServiceAccount")
    if "role" in situation:
        observed = removed(observed, "Role", "fraud-viewer")
    if "permissions" in situation:
        observed = replace(observed, permissions=situation["permissions"])
    if "findings" in situation:
        observed = replace(observed, findings={rbac.NAME: situation["findings"]})

    assert check(observed).reason == reason


def test_judging_fails_rbac_for_a_changed_role() -> None:
    ctx = declared()
    observed = replace(observe(ctx), drift={ctx.names.roles["deployer"]: ("rules",)})
    (result,) = [item for item in judging.judge(ctx, observed) if item.name == rbac.NAME]

    assert (result.status, result.reason) == ("Fail", "AccessNotAsDeclared")
    assert "Role fraud-deployer was changed outside the operator at rules; restored" in result.message


MODEL_ACCOUNT: list[tuple[str, dict[str, str], bool]] = [
    ("its ServiceAccount", {"kind": "ServiceAccount", "name": "fraud", "namespace": NAMESPACE}, True),
    ("its user name", {"kind": "User", "name": f"system:serviceaccount:{NAMESPACE}:fraud"}, True),
    ("its namespace's accounts", {"kind": "Group", "name": f"system:serviceaccounts:{NAMESPACE}"}, True),
    ("every account", {"kind": "Group", "name": "system:serviceaccounts"}, True),
    ("everyone authenticated", {"kind": "Group", "name": "system:authenticated"}, True),
    (
        "an account of that name elsewhere",
        {"kind": "ServiceAccount", "name": "fraud", "namespace": "ci"},
        False,
    ),
    ("another account here", {"kind": "ServiceAccount", "name": "fraud-ci", "namespace": NAMESPACE}, False),
    ("a user named like the account", {"kind": "User", "name": "fraud"}, False),
    (
        "another account's user name",
        {"kind": "User", "name": f"system:serviceaccount:{NAMESPACE}:other"},
        False,
    ),
    ("another namespace's accounts", {"kind": "Group", "name": "system:serviceaccounts:ci"}, False),
    (
        "a group named like the account",
        {"kind": "Group", "name": f"system:serviceaccount:{NAMESPACE}:fraud"},
        False,
    ),
]


@pytest.mark.parametrize(
    ("subject", "names"), [c[1:] for c in MODEL_ACCOUNT], ids=[c[0] for c in MODEL_ACCOUNT]
)
def test_preflight_refuses_access_that_names_the_model_account(subject: dict[str, str], names: bool) -> None:
    for field in ("viewers", "deployers"):
        blocker = rbac.preflight(context(access={field: [ROBOT, subject]}), Observed())

        if names:
            assert blocker is not None
            assert blocker.reason == rbac.Reason.GRANTS_MODEL_ACCOUNT
            assert "spec.access names the model's own ServiceAccount" in blocker.message
        else:
            assert blocker is None


def test_names_model_account_reads_binding_subjects() -> None:
    owner_of_model = declared().owner
    subjects = [{"kind": "ServiceAccount", "name": "fraud", "namespace": NAMESPACE}]

    assert rbac.names_model_account(subjects, owner_of_model)
    assert not rbac.names_model_account([{"kind": "ServiceAccount", "name": "fraud"}], owner_of_model)
    assert not rbac.names_model_account([], owner_of_model)
    assert permissions.user_of(NAMESPACE, "fraud") == f"system:serviceaccount:{NAMESPACE}:fraud"
