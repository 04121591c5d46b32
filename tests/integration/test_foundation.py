"""The first hardened reconcile, on the real control plane: admission, Ready, deletion (no-op: test_noop)."""

from __future__ import annotations

import json
import time

import pytest
import yaml

from support.kube import CHILDREN_WITH_ACCESS, Kubectl, wait_for
from support.manifests import smd
from support.operator import RESYNC_SECONDS, RunningOperator

pytestmark = pytest.mark.integration


def test_a_tag_instead_of_a_digest_is_refused_by_the_api_server(kubectl: Kubectl, namespace: str) -> None:
    manifest = smd("tagged", namespace, model={"image": "nginx:latest"})

    result = kubectl.run("apply", "-f", "-", stdin=yaml.safe_dump(manifest))

    assert result.returncode != 0
    assert "spec.model.image" in result.stderr
    assert "pinned by digest" in result.stderr
    assert kubectl.get("smd", "tagged", namespace) is None
    assert kubectl.items("deployment", namespace) == []


def test_a_valid_smd_becomes_ready_with_owned_labelled_children_and_admitted_pods(
    kubectl: Kubectl, namespace: str, operator: RunningOperator
) -> None:
    kubectl.apply(
        smd(
            "fraud",
            namespace,
            model={"replicas": 2},
            access={
                "viewers": [{"kind": "Group", "name": "auditors"}],
                "deployers": [{"kind": "User", "name": "a"}],
            },
        )
    )

    found = wait_for(lambda: kubectl.ready("fraud", namespace), timeout=60, what="fraud Ready")

    uid = found["metadata"]["uid"]
    status = found["status"]
    assert status["phase"] == "Ready"
    assert status["observedGeneration"] == found["metadata"]["generation"]
    compliant = kubectl.condition(found, "Compliant")
    assert compliant is not None and compliant["status"] == "True"
    assert {control["name"]: control["status"] for control in status["controls"]} == {
        "image-digest": "Pass",
        "network-isolation": "Pass",
        "mtls": "Pass",
        "rbac": "Pass",
        "storage-encryption": "Pass",
        "data-residency": "Pass",
        "pod-security": "Pass",
        "weights-verification": "Pass",
    }
    assert sorted(item["kind"] for item in kubectl.children("fraud", namespace)) == CHILDREN_WITH_ACCESS
    for item in kubectl.children("fraud", namespace):
        owners = item["metadata"]["ownerReferences"]
        assert [(owner["kind"], owner["uid"], owner["controller"]) for owner in owners] == [
            ("SecureModelDeployment", uid, True)
        ], item["metadata"]["name"]
        labels = item["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "secure-model-operator"
        assert labels["app.kubernetes.io/instance"] == "fraud"
        assert labels["app.kubernetes.io/name"] == "secure-model"
    # kube-controller-manager created the pods, and Pod Security "restricted" admitted them.
    pods = kubectl.items("pod", namespace, "app.kubernetes.io/instance=fraud")
    assert len(pods) == 2
    assert all(pod["status"]["phase"] == "Running" for pod in pods)


def test_pod_security_admission_is_really_enforced_in_the_test_namespace(
    kubectl: Kubectl, namespace: str
) -> None:
    """Guards the test above: a pod with default settings must be refused in the same kind of namespace."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "naughty", "namespace": namespace},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }

    result = kubectl.run("apply", "-f", "-", stdin=json.dumps(pod))

    assert result.returncode != 0
    assert "violates PodSecurity" in result.stderr


def test_deleting_the_smd_removes_every_child(
    kubectl: Kubectl, namespace: str, operator: RunningOperator
) -> None:
    kubectl("create", "namespace", f"{namespace}-gw")
    kubectl.apply(
        smd("doomed", namespace, mtls={"clients": [{"name": "gw", "namespace": f"{namespace}-gw"}]})
    )
    wait_for(lambda: kubectl.ready("doomed", namespace), timeout=60, what="doomed Ready")
    assert kubectl.get("secret", f"doomed.{namespace}.client-gw", f"{namespace}-gw") is not None

    kubectl("delete", "smd", "doomed", "-n", namespace)

    wait_for(lambda: not kubectl.children("doomed", namespace), timeout=60, what="children gone")
    wait_for(
        lambda: not kubectl.items("pod", namespace, "app.kubernetes.io/instance=doomed"), what="pods gone"
    )
    wait_for(
        lambda: kubectl.get("secret", f"doomed.{namespace}.client-gw", f"{namespace}-gw") is None,
        what="client Secret in the other namespace gone",
    )
    kubectl("delete", "namespace", f"{namespace}-gw", "--wait=false")


def test_an_smd_being_deleted_is_left_to_go(
    kubectl: Kubectl, namespace: str, operator: RunningOperator
) -> None:
    """Someone else's finalizer holds the SMD: the operator must not restore what is being torn down."""
    manifest = smd("leaving", namespace)
    manifest["metadata"]["finalizers"] = ["example.com/hold"]
    kubectl.apply(manifest)
    wait_for(lambda: kubectl.ready("leaving", namespace), timeout=60, what="leaving Ready")

    kubectl("delete", "smd", "leaving", "-n", namespace, "--wait=false")
    kubectl("delete", "networkpolicy", "leaving-network", "-n", namespace)
    time.sleep(RESYNC_SECONDS * 2)

    assert kubectl.get("networkpolicy", "leaving-network", namespace) is None
    kubectl(
        "patch", "smd", "leaving", "-n", namespace, "--type=merge", "-p", '{"metadata":{"finalizers":null}}'
    )
