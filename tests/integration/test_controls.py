"""Every control, judged from live state on the real control plane, including tampering by hand."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from support.kube import Kubectl, wait_for
from support.manifests import smd
from support.operator import RESYNC_SECONDS, RunningOperator

pytestmark = pytest.mark.integration

FIRST_CONTAINER = "/spec/template/spec/containers/0"
# Tampering must show within one resync period; allow for the reconcile itself and scheduling jitter.
WITHIN_A_RESYNC = RESYNC_SECONDS * 3


def phase(kubectl: Kubectl, name: str, namespace: str) -> str | None:
    return kubectl.status(name, namespace).get("phase")


def control_status(kubectl: Kubectl, name: str, namespace: str, control: str) -> dict[str, Any] | None:
    return kubectl.control(kubectl.get("smd", name, namespace), control)


def wait_ready(kubectl: Kubectl, name: str, namespace: str) -> None:
    wait_for(lambda: phase(kubectl, name, namespace) == "Ready", timeout=60, what=f"{name} Ready")


def wait_control(
    kubectl: Kubectl, name: str, namespace: str, control: str, status: str, timeout: float = WITHIN_A_RESYNC
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        found = control_status(kubectl, name, namespace, control)
        return found if found and found["status"] == status else None

    return wait_for(probe, timeout=timeout, interval=0.1, what=f"{control} {status}")


def compliance_metric(operator: RunningOperator, name: str, namespace: str, control: str) -> float | None:
    return operator.metric("securemodels_compliance_status", namespace=namespace, name=name, control=control)


# ---------------------------------------------------------------------------------------------- tampering


def test_a_deleted_network_policy_fails_the_control_then_is_restored(
    kubectl: Kubectl, namespace: str, operator: RunningOperator
) -> None:
    kubectl.apply(smd("net", namespace))
    wait_ready(kubectl, "net", namespace)

    kubectl("delete", "networkpolicy", "net-network", "-n", namespace)

    failed = wait_control(kubectl, "net", namespace, "network-isolation", "Fail")
    assert "NetworkPolicy net-network was deleted outside the operator; restored" in failed["message"]
    wait_for(
        lambda: compliance_metric(operator, "net", namespace, "network-isolation") == 0.0, what="metric 0"
    )
    wait_for(lambda: kubectl.get("networkpolicy", "net-network", namespace), what="policy restored")
    wait_control(kubectl, "net", namespace, "network-isolation", "Pass")
    assert compliance_metric(operator, "net", namespace, "network-isolation") == 1.0


def test_a_foreign_policy_that_opens_the_model_fails_the_control_and_is_left_alone(
    kubectl: Kubectl, namespace: str, operator: RunningOperator
) -> None:
    kubectl.apply(smd("open", namespace))
    wait_ready(kubectl, "open", namespace)
    foreign = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "allow-all", "namespace": namespace},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{}]},
    }

    kubectl.apply(foreign)

    failed = wait_control(kubectl, "open", namespace, "network-isolation", "Fail")
    assert "allow-all" in failed["message"]
    assert phase(kubectl, "open", namespace) == "Degraded"
    kubectl("delete", "networkpolicy", "allow-all", "-n", namespace)
    wait_control(kubectl, "open", namespace, "network-isolation", "Pass")


def test_a_role_bound_to_the_model_account_fails_rbac_and_the_users_binding_is_kept(
    kubectl: Kubectl, namespace: str, operator: RunningOperator
) -> None:
    kubectl.apply(smd("acct", namespace))
    wait_ready(kubectl, "acct", namespace)

    kubectl("create", "role", "reader", "--verb=get", "--resource=secrets", "-n", namespace)
    kubectl(
        "create",
        "rolebinding",
        "sneaky",
        "--role=reader",
        f"--serviceaccount={namespace}:acct",
        "-n",
        namespace,
    )

    failed = wait_control(kubectl, "acct", namespace, "rbac", "Fail")
    assert "the model's ServiceAccount may get secrets" in failed["message"]
    assert f"RoleBinding {namespace}/sneaky" in failed["message"]
    wait_for(lambda: compliance_metric(operator, "acct", namespace, "rbac") == 0.0, what="metric 0")
    # The binding is not the operator's to delete: it stays, and so does the verdict.
    for _ in range(2):
        wait_for(lambda: control_status(kubectl, "acct", namespace, "rbac"), what="status")
    assert kubectl.get("rolebinding", "sneaky", namespace) is not None
    assert control_status(kubectl, "acct", namespace, "rbac")["status"] == "Fail"  # type: ignore[index]

    kubectl("delete", "rolebinding", "sneaky", "-n", namespace)
    wait_control(kubectl, "acct", namespace, "rbac", "Pass")


def test_removing_the_node_affinity_fails_residency_then_it_is_restored(
    kubectl: Kubectl, namespace: str, operator: RunningOperator
) -> None:
    kubectl.apply(smd("eu", namespace, residency={"regions": ["eu-west-1"]}))
    wait_ready(kubectl, "eu", namespace)

    kubectl(
        "patch",
        "deployment",
        "eu",
        "-n",
        namespace,
        "--type=json",
        "-p",
        '[{"op": "remove", "path": "/spec/template/spec/affinity"}]',
    )

    failed = wait_control(kubectl, "eu", namespace, "data-residency", "Fail")
    # The Deployment's drift, or the pod its new template made before the repair (which runs elsewhere).
    assert "affinity (removed)" in failed["message"]
    wait_for(lambda: compliance_metric(operator, "eu", namespace, "data-residency") == 0.0, what="metric 0")
    wait_control(kubectl, "eu", namespace, "data-residency", "Pass")
    affinity = kubectl.get("deployment", "eu", namespace)["spec"]["template"]["spec"]["affinity"]
    terms = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [
        {
            "matchExpressions": [
                {"key": "topology.kubernetes.io/region", "operator": "In", "values": ["eu-west-1"]}
            ]
        }
    ]


def test_loosening_the_container_security_context_fails_pod_security_then_it_is_restored(
    kubectl: Kubectl, namespace: str, operator: RunningOperator
) -> None:
    kubectl.apply(smd("hard", namespace))
    wait_ready(kubectl, "hard", namespace)

    kubectl(
        "patch",
        "deployment",
        "hard",
        "-n",
        namespace,
        "--type=json",
        "-p",
        json.dumps(
            [
                {
                    "op": "replace",
                    "path": f"{FIRST_CONTAINER}/securityContext/readOnlyRootFilesystem",
                    "value": False,
                }
            ]
        ),
    )

    failed = wait_control(kubectl, "hard", namespace, "pod-security", "Fail")
    # Named as the template's drift, or also as a pod's if one rolled out with it before the repair.
    assert "containers[model].securityContext.readOnlyRootFilesystem" in failed["message"] or (
        "container model has a writable root filesystem" in failed["message"]
    )
    wait_control(kubectl, "hard", namespace, "pod-security", "Pass")


def test_swapping_the_image_for_a_tag_fails_image_digest_then_it_is_restored(
    kubectl: Kubectl, namespace: str, operator: RunningOperator
) -> None:
    kubectl.apply(smd("pinned", namespace))
    wait_ready(kubectl, "pinned", namespace)

    kubectl(
        "set", "image", "deployment/pinned", "model=registry.example.com/ml/fraud:latest", "-n", namespace
    )

    failed = wait_control(kubectl, "pinned", namespace, "image-digest", "Fail")
    assert "is not pinned by digest" in failed["message"]
    wait_control(kubectl, "pinned", namespace, "image-digest", "Pass")


# ------------------------------------------------------------------------------------------ weakenings


def test_ingress_from_anywhere_is_refused_without_the_opt_in(kubectl: Kubectl, namespace: str) -> None:
    manifest = smd("wide", namespace, network={"ingress": [{"from": [{"namespaceSelector": {}}]}]})

    result = kubectl.run("apply", "-f", "-", stdin=yaml.safe_dump(manifest))

    assert result.returncode != 0
    assert "spec.network.ingress" in result.stderr
    assert "allowIngressFromAnywhere" in result.stderr


def test_an_opted_in_weakening_is_reported_in_status_and_metrics(
    kubectl: Kubectl, namespace: str, operator: RunningOperator
) -> None:
    kubectl.apply(
        smd(
            "wide",
            namespace,
            network={"ingress": [{"from": [{"namespaceSelector": {}}]}], "allowIngressFromAnywhere": True},
            mtls={"minTLSVersion": "1.2"},
        )
    )

    wait_ready(kubectl, "wide", namespace)

    found = kubectl.get("smd", "wide", namespace)
    assert kubectl.control(found, "network-isolation")["status"] == "Weakened"  # type: ignore[index]
    assert kubectl.control(found, "mtls")["status"] == "Weakened"  # type: ignore[index]
    assert found["status"]["compliant"] is False
    compliant = kubectl.condition(found, "Compliant")
    assert compliant is not None
    assert (compliant["status"], compliant["reason"]) == ("False", "ControlsWeakened")
    assert (
        operator.metric(
            "securemodels_control_weakened",
            namespace=namespace,
            name="wide",
            control="network-isolation",
            weakening="IngressFromAnywhere",
        )
        == 1.0
    )
    assert (
        operator.metric(
            "securemodels_control_weakened",
            namespace=namespace,
            name="wide",
            control="mtls",
            weakening="TLS12",
        )
        == 1.0
    )
    assert operator.metric("securemodels_compliant", namespace=namespace, name="wide") == 0.0


# ------------------------------------------------------------------------------------------ residency


def test_a_region_no_node_is_in_degrades_with_a_clear_reason(
    kubectl: Kubectl, namespace: str, operator: RunningOperator
) -> None:
    kubectl.apply(smd("mars", namespace, residency={"regions": ["mars-north-1"]}))

    wait_for(lambda: phase(kubectl, "mars", namespace) == "Degraded", timeout=30, what="Degraded")

    ready = kubectl.condition(kubectl.get("smd", "mars", namespace), "Ready")
    assert ready is not None
    assert ready["reason"] == "NoNodeInRegion"
    assert "mars-north-1" in ready["message"]
    pods = kubectl.items("pod", namespace, "app.kubernetes.io/instance=mars")
    assert pods and all(pod["status"]["phase"] == "Pending" for pod in pods)
    events = kubectl.items("event", namespace)
    assert any(event["reason"] == "NoNodeInRegion" and event["type"] == "Warning" for event in events)


# ---------------------------------------------------------------------------------------------- storage


def storage_class(
    name: str, provisioner: str, parameters: dict[str, str], attested: bool = False
) -> dict[str, Any]:
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": name,
            **({"annotations": {"securemodels.io/encrypted": "true"}} if attested else {}),
        },
        "provisioner": provisioner,
        "parameters": parameters,
        "volumeBindingMode": "Immediate",
    }


def volume_for(class_name: str) -> dict[str, Any]:
    """A pre-provisioned volume, so the claim binds without a real CSI driver."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"pv-{class_name}"},
        "spec": {
            "storageClassName": class_name,
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "csi": {"driver": "ebs.csi.aws.com", "volumeHandle": f"vol-{class_name}"},
        },
    }


@pytest.fixture(scope="module")
def storage_classes(kubectl: Kubectl) -> None:
    kubectl.apply(
        [
            storage_class("encrypted-ebs", "ebs.csi.aws.com", {"encrypted": "true", "type": "gp3"}),
            storage_class("plain-ebs", "ebs.csi.aws.com", {"type": "gp3"}),
            storage_class("attested", "nfs.example.com/provisioner", {}, attested=True),
            volume_for("encrypted-ebs"),
            volume_for("attested"),
        ]
    )


@pytest.mark.parametrize("class_name", ["encrypted-ebs", "attested"])
def test_a_volume_is_created_on_an_encrypting_storage_class(
    kubectl: Kubectl, namespace: str, operator: RunningOperator, storage_classes: None, class_name: str
) -> None:
    kubectl.apply(smd("vault", namespace, storage={"size": "1Gi", "storageClassName": class_name}))

    wait_ready(kubectl, "vault", namespace)

    claim = kubectl.get("pvc", "vault-models", namespace)
    assert claim["spec"]["storageClassName"] == class_name
    assert claim["status"]["phase"] == "Bound"
    assert control_status(kubectl, "vault", namespace, "storage-encryption")["status"] == "Pass"  # type: ignore[index]
    volumes = kubectl.get("deployment", "vault", namespace)["spec"]["template"]["spec"]["volumes"]
    assert {"name": "models", "persistentVolumeClaim": {"claimName": "vault-models"}} in volumes


@pytest.mark.parametrize(
    ("class_name", "reason", "message"),
    [
        ("plain-ebs", "StorageClassNotEncrypted", "does not set parameter encrypted"),
        ("no-such-class", "StorageClassNotFound", "no-such-class does not exist"),
    ],
)
def test_no_volume_and_blocked_on_a_class_that_does_not_encrypt(
    kubectl: Kubectl,
    namespace: str,
    operator: RunningOperator,
    storage_classes: None,
    class_name: str,
    reason: str,
    message: str,
) -> None:
    kubectl.apply(smd("leaky", namespace, storage={"size": "1Gi", "storageClassName": class_name}))

    wait_for(lambda: phase(kubectl, "leaky", namespace) == "Blocked", what="Blocked")

    ready = kubectl.condition(kubectl.get("smd", "leaky", namespace), "Ready")
    assert ready is not None
    assert ready["reason"] == reason
    assert message in ready["message"]
    assert class_name in ready["message"]
    assert kubectl.get("pvc", "leaky-models", namespace) is None
    assert kubectl.get("deployment", "leaky", namespace) is None
    events = kubectl.items("event", namespace)
    assert any(event["reason"] == reason for event in events)


# ------------------------------------------------------------------------------------------------- RBAC


def can(kubectl: Kubectl, subject: list[str], *question: str) -> bool:
    result = kubectl.run("auth", "can-i", *question, *subject)
    return result.stdout.strip() == "yes"


def test_viewers_deployers_strangers_and_the_model_get_exactly_their_rights(
    kubectl: Kubectl, namespace: str, operator: RunningOperator
) -> None:
    kubectl.apply(
        smd(
            "guarded",
            namespace,
            access={
                "viewers": [{"kind": "Group", "name": "auditors"}],
                "deployers": [{"kind": "User", "name": "alice"}],
            },
        )
    )
    wait_ready(kubectl, "guarded", namespace)
    ns = ["-n", namespace]
    viewer = ["--as=bob", "--as-group=auditors", *ns]
    deployer = ["--as=alice", *ns]
    stranger = ["--as=mallory", *ns]
    model = [f"--as=system:serviceaccount:{namespace}:guarded", *ns]

    assert can(kubectl, viewer, "get", "securemodeldeployments.securemodels.io/guarded")
    assert can(kubectl, viewer, "list", "pods")
    assert can(kubectl, viewer, "get", "pods", "--subresource=log")
    for question in (
        ("create", "pods", "--subresource=exec"),
        ("get", "secrets"),
        ("patch", "securemodeldeployments.securemodels.io/guarded"),
        ("update", "deployments"),
        ("delete", "pods"),
        ("get", "securemodeldeployments.securemodels.io/other"),
    ):
        assert not can(kubectl, viewer, *question), question

    assert can(kubectl, deployer, "patch", "securemodeldeployments.securemodels.io/guarded")
    assert can(kubectl, deployer, "update", "securemodeldeployments.securemodels.io/guarded")
    for question in (
        ("patch", "deployments/guarded"),
        ("patch", "services/guarded"),
        ("get", "secrets"),
        ("create", "pods", "--subresource=exec"),
        ("delete", "securemodeldeployments.securemodels.io/guarded"),
        ("patch", "securemodeldeployments.securemodels.io/other"),
    ):
        assert not can(kubectl, deployer, *question), question

    for subject in (stranger, model):
        for question in (
            ("get", "securemodeldeployments.securemodels.io/guarded"),
            ("list", "pods"),
            ("get", "secrets"),
            ("get", "configmaps"),
        ):
            assert not can(kubectl, subject, *question), (subject, question)
    account = kubectl.get("serviceaccount", "guarded", namespace)
    assert account["automountServiceAccountToken"] is False
