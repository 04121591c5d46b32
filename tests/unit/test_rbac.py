"""Control rbac: the model's account has no token and no rights; people get narrow, named Roles."""

from __future__ import annotations

from typing import Any

import pytest

from securemodels import desired
from securemodels.desired import status
from securemodels.desired.controls import rbac
from securemodels.desired.model import Manifest, Observed
from unit.builders import NAMESPACE, Mutation, binding, build, context, find, kinds, observe, tampered

VIEWER = {"kind": "Group", "name": "ml-auditors"}
DEPLOYER = {"kind": "User", "name": "alice@example.com"}
ROBOT = {"kind": "ServiceAccount", "name": "ci", "namespace": "ci"}
ACCESS: dict[str, Any] = {"access": {"viewers": [VIEWER, ROBOT], "deployers": [DEPLOYER]}}
SMD_RULE = {
    "apiGroups": ["securemodels.io"],
    "resources": ["securemodeldeployments"],
    "resourceNames": ["fraud"],
}
BOOTSTRAP = {rbac.BOOTSTRAP_LABEL: "rbac-defaults"}


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


def test_check_passes_the_built_objects() -> None:
    ctx = context(**ACCESS)
    observed = observe(ctx)
    result = rbac.check(ctx, observed.service_account, observed.roles, observed.role_bindings, ())

    assert (result.name, result.status, result.reason) == ("rbac", "Pass", "LeastPrivilege")


def judge_rbac(**changes: Any) -> tuple[str, str]:
    ctx = context(**ACCESS)
    observed = observe(ctx, **changes)
    result = rbac.check(
        ctx, observed.service_account, observed.roles, observed.role_bindings, observed.cluster_role_bindings
    )
    return result.status, result.message


@pytest.mark.parametrize(
    ("account", "problem"),
    [
        (None, "ServiceAccount fraud does not exist"),
        ({"metadata": {"name": "fraud"}, "automountServiceAccountToken": True}, "mounts its token"),
        ({"metadata": {"name": "fraud"}}, "mounts its token"),
    ],
    ids=["deleted", "automount on", "automount unset"],
)
def test_check_fails_on_the_service_account(account: Manifest | None, problem: str) -> None:
    verdict, message = judge_rbac(service_account=account)

    assert verdict == "Fail"
    assert problem in message


MODEL_SA = {"kind": "ServiceAccount", "name": "fraud", "namespace": NAMESPACE}
BINDINGS: list[tuple[str, str, list[dict[str, str]], dict[str, str], bool]] = [
    ("the model's account", "RoleBinding", [MODEL_SA], {}, True),
    ("the model's account, cluster-wide", "ClusterRoleBinding", [MODEL_SA], {}, True),
    (
        "every account of the namespace",
        "RoleBinding",
        [{"kind": "Group", "name": f"system:serviceaccounts:{NAMESPACE}"}],
        {},
        True,
    ),
    (
        "every account of the cluster",
        "ClusterRoleBinding",
        [{"kind": "Group", "name": "system:serviceaccounts"}],
        {},
        True,
    ),
    (
        "every authenticated user",
        "ClusterRoleBinding",
        [{"kind": "Group", "name": "system:authenticated"}],
        {},
        True,
    ),
    (
        "Kubernetes' own default",
        "ClusterRoleBinding",
        [{"kind": "Group", "name": "system:serviceaccounts"}],
        BOOTSTRAP,
        False,
    ),
    (
        "Kubernetes' own default for everyone",
        "ClusterRoleBinding",
        [{"kind": "Group", "name": "system:authenticated"}],
        BOOTSTRAP,
        False,
    ),
    ("an account of that name elsewhere", "RoleBinding", [{**MODEL_SA, "namespace": "other"}], {}, False),
    (
        "the accounts of another namespace",
        "RoleBinding",
        [{"kind": "Group", "name": "system:serviceaccounts:other"}],
        {},
        False,
    ),
    ("a user named like the account", "RoleBinding", [{"kind": "User", "name": "fraud"}], {}, False),
]


@pytest.mark.parametrize(
    ("kind", "subjects", "labels", "grants"), [c[1:] for c in BINDINGS], ids=[c[0] for c in BINDINGS]
)
def test_check_fails_on_bindings_that_reach_the_model_account(
    kind: str, subjects: list[dict[str, str]], labels: dict[str, str], grants: bool
) -> None:
    extra = binding(kind, "extra", subjects, labels)
    observed = observe(context(**ACCESS))
    if kind == "RoleBinding":
        verdict, message = judge_rbac(role_bindings=(*observed.role_bindings, extra))
    else:
        verdict, message = judge_rbac(cluster_role_bindings=(extra,))

    if grants:
        assert verdict == "Fail"
        assert f"{kind} extra grants permissions to the model's ServiceAccount" in message
    else:
        assert verdict == "Pass", message


def add_verb(verb: str) -> Mutation:
    return lambda role: role["rules"][0]["verbs"].append(verb)


ROLE_CHANGES: list[tuple[str, Mutation]] = [
    ("extra verb", add_verb("delete")),
    ("wildcard verb", add_verb("*")),
    ("resourceNames dropped", lambda role: role["rules"][0].pop("resourceNames")),
    (
        "secrets added",
        lambda role: role["rules"].append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}),
    ),
]


@pytest.mark.parametrize("mutation", [c[1] for c in ROLE_CHANGES], ids=[c[0] for c in ROLE_CHANGES])
def test_check_fails_on_roles_with_more_rules(mutation: Mutation) -> None:
    observed = observe(context(**ACCESS))
    roles = tuple(
        tampered(role, mutation) if role["metadata"]["name"] == "fraud-deployer" else role
        for role in observed.roles
    )
    verdict, message = judge_rbac(roles=roles)

    assert verdict == "Fail"
    assert "Role fraud-deployer has rules beyond the spec" in message


BINDING_CHANGES: list[tuple[str, Mutation]] = [
    (
        "extra subject",
        lambda item: item["subjects"].append(
            {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "eve"}
        ),
    ),
    (
        "bound to a ClusterRole",
        lambda item: item.update(roleRef={**item["roleRef"], "kind": "ClusterRole", "name": "admin"}),
    ),
]


@pytest.mark.parametrize("mutation", [c[1] for c in BINDING_CHANGES], ids=[c[0] for c in BINDING_CHANGES])
def test_check_fails_on_bindings_changed_by_someone_else(mutation: Mutation) -> None:
    observed = observe(context(**ACCESS))
    bindings = tuple(
        tampered(item, mutation) if item["metadata"]["name"] == "fraud-viewer" else item
        for item in observed.role_bindings
    )
    verdict, message = judge_rbac(role_bindings=bindings)

    assert verdict == "Fail"
    assert "RoleBinding fraud-viewer binds other subjects or roles than the spec" in message


@pytest.mark.parametrize("kind", ["Role", "RoleBinding"])
def test_check_fails_when_a_declared_object_is_missing(kind: str) -> None:
    observed = observe(context(**ACCESS))
    if kind == "Role":
        verdict, message = judge_rbac(
            roles=tuple(item for item in observed.roles if item["metadata"]["name"] != "fraud-viewer")
        )
    else:
        verdict, message = judge_rbac(
            role_bindings=tuple(
                item for item in observed.role_bindings if item["metadata"]["name"] != "fraud-viewer"
            )
        )

    assert verdict == "Fail"
    assert f"{kind} fraud-viewer does not exist" in message


@pytest.mark.parametrize(
    "subject",
    [
        {"kind": "ServiceAccount", "name": "fraud", "namespace": NAMESPACE},
        {"kind": "Group", "name": f"system:serviceaccounts:{NAMESPACE}"},
        {"kind": "Group", "name": "system:serviceaccounts"},
    ],
    ids=["the model's account", "its namespace's accounts", "every account"],
)
def test_access_cannot_give_the_model_account_rights(subject: dict[str, str]) -> None:
    # "The model's own ServiceAccount never gets permissions": such a spec is refused before anything is
    # applied, rather than built and then judged as failing forever.
    ctx = context(access={"viewers": [subject]})

    blocked = desired.preflight(ctx, Observed())
    judged = next(result for result in status.judge(ctx, observe(ctx)) if result.name == rbac.NAME)

    assert blocked or judged.status == "Pass", judged.message


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"service_account": None}, "ServiceAccountNotHardened"),
        ({"roles": ()}, "AccessNotAsDeclared"),
    ],
    ids=["missing account", "missing roles"],
)
def test_the_reason_names_the_kind_of_problem(changes: dict[str, Any], reason: str) -> None:
    ctx = context(**ACCESS)
    observed = observe(ctx, **changes)

    result = rbac.check(
        ctx, observed.service_account, observed.roles, observed.role_bindings, observed.cluster_role_bindings
    )

    assert (result.status, result.reason) == ("Fail", reason)
