"""The chart's RBAC is enough for the operator and no more, proven with the chart's own identity.

The chart is installed with the real helm; the operator then runs in-process with nothing but a token
minted for the chart's ServiceAccount, and with the configuration file the chart rendered. It must do
its whole job that way, cluster-wide and with watchNamespaces, while the API server refuses that identity
everything the operator never needs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from chart.helm import install, token_kubeconfig, uninstall
from localcluster import LocalCluster
from securemodels.config import OperatorConfig, PolicyReports
from securemodels.handlers import permissions
from support.kube import CHILDREN_WITH_ACCESS, Kubectl, wait_for
from support.manifests import smd
from support.operator import RESYNC_SECONDS, RunningOperator

pytestmark = pytest.mark.integration

RELEASE = "smo"
# What the operator holds in each managed namespace, with the compliance reports on (the default).
NAMESPACED_PERMISSIONS = permissions.NAMESPACED + permissions.compliance_reports(PolicyReports())
SERVICE_ACCOUNT = f"{RELEASE}-secure-model-operator"
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
# The first reconcile of an SMD under a freshly installed release: watches open, the CA is created.
FIRST_EVENT = 60.0
# kube-controller-manager's garbage collector notices a new kind (the SMD) at its next discovery resync,
# every 30 s, and only then cascades the deletion of an SMD to its children.
GARBAGE_COLLECTION = 90.0


@dataclass(frozen=True)
class Installed:
    """A chart release and the operator running with its ServiceAccount's token."""

    mode: str
    namespace: str  # the release namespace: the operator's own
    models: str  # SMDs live here
    clients: str  # mTLS clients of those SMDs live here
    unmanaged: str  # outside watchNamespaces in the namespaced mode
    operator: RunningOperator

    @property
    def subject(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{SERVICE_ACCOUNT}"


def create_namespace(kubectl: Kubectl, name: str, labels: dict[str, str] | None = None) -> None:
    kubectl.apply(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}
    )


def operator_identity(
    kubectl: Kubectl, cluster: LocalCluster, account: str, namespace: str, path: Path
) -> Path:
    """A kubeconfig with a TokenRequest token for `account`, and nothing else."""
    token = kubectl("create", "token", account, "-n", namespace, "--duration=1h").strip()
    return token_kubeconfig(cluster, token, namespace, path)


@pytest.fixture(scope="module", params=["cluster-wide", "namespaced"])
def installed(
    request: pytest.FixtureRequest,
    cluster: LocalCluster,
    kubectl: Kubectl,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Installed]:
    mode: str = request.param
    prefix = f"lp-{mode}"
    namespace, models, clients, unmanaged = prefix, f"{prefix}-models", f"{prefix}-clients", f"{prefix}-other"
    create_namespace(kubectl, namespace)
    create_namespace(kubectl, models, RESTRICTED)
    create_namespace(kubectl, clients)
    create_namespace(kubectl, unmanaged, RESTRICTED)
    watched = [models, clients] if mode == "namespaced" else []
    install(
        cluster, RELEASE, namespace, {"config": {"watchNamespaces": watched, "resyncSeconds": RESYNC_SECONDS}}
    )
    # The configuration the chart mounts into the pod, loaded as `securemodels run --config` loads it.
    config_file = tmp_path_factory.mktemp(mode) / "config.yaml"
    config_file.write_text(
        kubectl.get("configmap", f"{SERVICE_ACCOUNT}-config", namespace)["data"]["config.yaml"]
    )
    config = OperatorConfig.load(config_file.read_text(), namespace=namespace)
    kubeconfig = operator_identity(
        kubectl, cluster, SERVICE_ACCOUNT, namespace, config_file.parent / "kubeconfig"
    )
    operator = RunningOperator(kubeconfig, config).start()
    yield Installed(mode, namespace, models, clients, unmanaged, operator)
    operator.stop()
    uninstall(cluster, RELEASE, namespace)
    for name in (namespace, models, clients, unmanaged):
        kubectl("delete", "namespace", name, "--wait=false")


def can(kubectl: Kubectl, subject: str, *request: str) -> bool:
    """`kubectl auth can-i` as `subject`, asked with the admin's credentials."""
    result = kubectl.run("auth", "can-i", *request, f"--as={subject}")
    answer = result.stdout.strip()
    assert answer in ("yes", "no"), result.stderr
    return answer == "yes"


def test_the_operator_with_the_charts_identity_is_ready(installed: Installed) -> None:
    assert installed.operator.http("/readyz") == (200, "ok (leading)")


def test_the_operator_with_the_charts_identity_runs_an_smd_end_to_end(
    kubectl: Kubectl, installed: Installed
) -> None:
    models, clients = installed.models, installed.clients
    kubectl.apply(
        smd(
            "fraud",
            models,
            mtls={"clients": [{"name": "gw", "namespace": clients}]},
            access={
                "viewers": [{"kind": "Group", "name": "auditors"}],
                "deployers": [{"kind": "User", "name": "a"}],
            },
        )
    )

    found = wait_for(lambda: kubectl.ready("fraud", models), timeout=FIRST_EVENT, what="fraud Ready")

    compliant = kubectl.condition(found, "Compliant")
    assert compliant is not None
    assert compliant["status"] == "True"
    controls = {control["name"]: control["status"] for control in found["status"]["controls"]}
    assert {"image-digest", "network-isolation", "mtls", "rbac", "pod-security"} <= controls.keys()
    assert set(controls.values()) == {"Pass"}, controls
    assert sorted(item["kind"] for item in kubectl.children("fraud", models)) == CHILDREN_WITH_ACCESS
    client_secret = f"fraud.{models}.client-gw"
    assert kubectl.get("secret", client_secret, clients) is not None
    assert kubectl.get("secret", "securemodels-ca", installed.namespace) is not None

    kubectl("delete", "smd", "fraud", "-n", models)

    wait_for(lambda: not kubectl.children("fraud", models), timeout=GARBAGE_COLLECTION, what="children gone")
    wait_for(lambda: kubectl.get("secret", client_secret, clients) is None, what="client Secret gone")


# Tests about what lies outside watchNamespaces run against the namespaced release only.
NAMESPACED_ONLY = pytest.mark.parametrize("installed", ["namespaced"], indirect=True)


@NAMESPACED_ONLY
def test_with_watch_namespaces_an_smd_elsewhere_is_not_touched(
    kubectl: Kubectl, installed: Installed
) -> None:
    kubectl.apply(smd("elsewhere", installed.unmanaged))
    kubectl.apply(smd("here", installed.models))

    wait_for(lambda: kubectl.ready("here", installed.models), timeout=FIRST_EVENT, what="here Ready")

    assert "status" not in kubectl.get("smd", "elsewhere", installed.unmanaged)
    assert kubectl.items("deployment", installed.unmanaged) == []
    kubectl("delete", "smd", "here", "-n", installed.models)
    kubectl("delete", "smd", "elsewhere", "-n", installed.unmanaged)


@pytest.mark.parametrize(
    "request_args",
    [
        ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
        ("create", "clusterroles.rbac.authorization.k8s.io"),
        ("bind", "clusterroles.rbac.authorization.k8s.io"),
        ("escalate", "clusterroles.rbac.authorization.k8s.io"),
        ("impersonate", "users"),
        ("delete", "namespaces"),
        ("create", "namespaces"),
        ("create", "customresourcedefinitions.apiextensions.k8s.io"),
        ("create", "mutatingwebhookconfigurations.admissionregistration.k8s.io"),
        ("*", "*"),
        ("create", "nodes"),
    ],
    ids=lambda args: " ".join(args),
)
def test_the_identity_may_not_touch_the_cluster_beyond_its_needs(
    kubectl: Kubectl, installed: Installed, request_args: tuple[str, ...]
) -> None:
    assert not can(kubectl, installed.subject, *request_args)


@pytest.mark.parametrize(
    "request_args",
    [
        ("create", "pods", "--subresource=exec"),
        ("create", "pods"),
        ("delete", "deployments.apps"),
        ("patch", "deployments.apps"),
        ("escalate", "roles.rbac.authorization.k8s.io"),
        ("bind", "roles.rbac.authorization.k8s.io"),
        ("*", "secrets"),
        ("*", "*"),
        ("create", "serviceaccounts", "--subresource=token"),
    ],
    ids=lambda args: " ".join(args),
)
def test_the_identity_may_not_do_what_the_operator_never_does_in_a_managed_namespace(
    kubectl: Kubectl, installed: Installed, request_args: tuple[str, ...]
) -> None:
    assert not can(kubectl, installed.subject, *request_args, "-n", installed.models)


def test_the_identity_holds_what_the_operator_needs_in_a_managed_namespace(
    kubectl: Kubectl, installed: Installed
) -> None:
    """Guards the refusals above: the same question for a permission it has must say yes."""
    for permission in permissions.NAMESPACED:
        name, _, subresource = permission.resource.partition("/")
        resource = f"{name}.{permission.group}" if permission.group else name
        extra = [f"--subresource={subresource}"] if subresource else []
        for verb in permission.verbs:
            assert can(kubectl, installed.subject, verb, resource, *extra, "-n", installed.models), (
                verb,
                resource,
            )


def review(kubectl: Kubectl, subject: str, verb: str, group: str, resource: str, namespace: str) -> bool:
    """A SubjectAccessReview: unlike `kubectl auth can-i`, it needs no CRD for the resource."""
    body = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": subject,
            "groups": ["system:serviceaccounts", "system:authenticated"],
            "resourceAttributes": {
                "verb": verb,
                "group": group,
                "resource": resource,
                "namespace": namespace,
            },
        },
    }
    answer = json.loads(kubectl("create", "-f", "-", "-o", "json", stdin=json.dumps(body)))
    return bool(answer["status"].get("allowed"))


def test_the_identity_writes_the_configured_compliance_reports_and_no_other_report(
    kubectl: Kubectl, installed: Installed
) -> None:
    (reports,) = permissions.compliance_reports(PolicyReports())
    for verb in reports.verbs:
        assert review(kubectl, installed.subject, verb, reports.group, reports.resource, installed.models), (
            verb
        )
    assert not review(kubectl, installed.subject, "create", "openreports.io", "reports", installed.models)
    assert not review(kubectl, installed.subject, "create", "wgpolicyk8s.io", "clusterpolicyreports", "")
    assert not review(
        kubectl, installed.subject, "deletecollection", reports.group, reports.resource, installed.models
    )


@NAMESPACED_ONLY
def test_with_watch_namespaces_the_identity_reads_no_secret_outside_them(
    kubectl: Kubectl, installed: Installed
) -> None:
    assert not can(kubectl, installed.subject, "list", "secrets", "--all-namespaces")
    for verb in ("get", "list", "watch", "create", "delete"):
        assert not can(kubectl, installed.subject, verb, "secrets", "-n", installed.unmanaged), verb
    assert not can(
        kubectl,
        installed.subject,
        "list",
        "securemodeldeployments.securemodels.io",
        "-n",
        installed.unmanaged,
    )
    # In its own namespace it reads and writes its own Secrets by name (the CA, the stamp key), no other,
    # and never deletes one.
    for secret in ("securemodels-ca", "securemodels-stamp-key"):
        for verb in ("get", "list", "watch", "update"):
            assert can(kubectl, installed.subject, verb, f"secrets/{secret}", "-n", installed.namespace), verb
    for verb in ("get", "list", "watch", "update"):
        assert not can(
            kubectl, installed.subject, verb, "secrets/someone-elses", "-n", installed.namespace
        ), verb
        assert not can(kubectl, installed.subject, verb, "secrets", "-n", installed.namespace), verb
    assert not can(kubectl, installed.subject, "delete", "secrets", "-n", installed.namespace)


def test_the_installed_rbac_names_no_wildcard(kubectl: Kubectl, installed: Installed) -> None:
    selector = f"app.kubernetes.io/instance={RELEASE}"
    roles = kubectl.items("clusterrole", None, selector) + kubectl.items("role", None, selector)

    assert roles
    for role in roles:
        for rule in role["rules"]:
            entries = [*rule.get("apiGroups", []), *rule.get("resources", []), *rule["verbs"]]
            assert "*" not in "".join(entries), (role["metadata"]["name"], rule)


# ------------------------------------------------------------------------------------- a missing grant

MISSING = next(item for item in permissions.NAMESPACED if item.resource == "networkpolicies")
MISSING_VERB = "create"


def rules(
    items: tuple[permissions.Permission, ...], leave_out: tuple[str, str] | None = None
) -> list[dict[str, Any]]:
    found = []
    for item in items:
        verbs = [verb for verb in item.verbs if (item.resource, verb) != leave_out]
        if verbs:
            rule: dict[str, Any] = {"apiGroups": [item.group], "resources": [item.resource], "verbs": verbs}
            if item.names:
                rule["resourceNames"] = list(item.names)
            found.append(rule)
    return found


def rbac_by_hand(account: str, namespace: str, watched: str) -> list[dict[str, Any]]:
    """Everything permissions.py lists, in the shape the chart grants it, except one verb."""
    subjects = [{"kind": "ServiceAccount", "name": account, "namespace": namespace}]
    grants = [
        ("ClusterRole", None, rules(permissions.CLUSTER)),
        ("Role", watched, rules(NAMESPACED_PERMISSIONS, leave_out=(MISSING.resource, MISSING_VERB))),
        (
            "Role",
            namespace,
            rules(permissions.OWN_NAMESPACE + permissions.leader_election("secure-model-operator")),
        ),
    ]
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account, "namespace": namespace}}
    ]
    for kind, where, granted in grants:
        metadata = {"name": f"{namespace}-{account}", **({"namespace": where} if where else {})}
        objects.append(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": kind,
                "metadata": metadata,
                "rules": granted,
            }
        )
        objects.append(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": f"{kind}Binding",
                "metadata": metadata,
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": metadata["name"]},
                "subjects": subjects,
            }
        )
    return objects


@pytest.fixture
def short_handed(
    cluster: LocalCluster, kubectl: Kubectl, tmp_path: Path, namespace: str
) -> Iterator[tuple[RunningOperator, str]]:
    """An operator whose identity lacks one permission, managing the test's namespace only."""
    own = f"{namespace}-op"
    create_namespace(kubectl, own)
    objects = rbac_by_hand("short-handed", own, namespace)
    kubectl.apply(objects)
    kubeconfig = operator_identity(kubectl, cluster, "short-handed", own, tmp_path / "kubeconfig")
    config = OperatorConfig(namespace=own, watch_namespaces=(namespace,), resync_seconds=RESYNC_SECONDS)
    operator = RunningOperator(kubeconfig, config).start()
    yield operator, namespace
    operator.stop()
    kubectl("delete", "clusterrole,clusterrolebinding", f"{own}-short-handed")
    kubectl("delete", "namespace", own, "--wait=false")


def test_a_missing_permission_is_named_in_readyz_and_the_log_without_a_crash(
    kubectl: Kubectl, short_handed: tuple[RunningOperator, str], caplog: pytest.LogCaptureFixture
) -> None:
    operator, namespace = short_handed
    missing = MISSING.describe(MISSING_VERB, namespace)
    refused_before = operator.metric("securemodels_reconcile_errors_total", reason="http403") or 0.0

    status, body = operator.http("/readyz")

    assert status == 503
    assert body == f"missing permissions: {missing}"
    # Logged at startup, which happened while the fixture set the operator up.
    logged = [record.getMessage() for record in caplog.get_records("setup") if record.levelname == "ERROR"]
    assert f"the operator's identity may not {missing}" in logged
    # It keeps running: the reconcile that needs the permission fails and is retried, the process stays
    # up (liveness passes, so the kubelet would not restart it) and still reports what is missing.
    kubectl.apply(smd("blocked", namespace))
    wait_for(
        lambda: (
            (operator.metric("securemodels_reconcile_errors_total", reason="http403") or 0.0) > refused_before
        ),
        timeout=FIRST_EVENT,
        what="a reconcile refused with 403",
    )
    assert operator.http("/healthz") == (200, "ok")
    assert operator.http("/readyz") == (503, f"missing permissions: {missing}")
    assert operator.error is None
    kubectl("delete", "smd", "blocked", "-n", namespace)
