"""The chart's life on a real control plane: install, upgrade, uninstall, and refusals at install."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from chart.helm import helm, install, uninstall, with_image
from localcluster import LocalCluster
from securemodels.config import OperatorConfig
from support.kube import Kubectl, wait_for
from support.manifests import smd
from support.paths import CHART

pytestmark = pytest.mark.integration

RELEASE = "lifecycle"
FULLNAME = f"{RELEASE}-secure-model-operator"
CRD_NAME = "securemodeldeployments.securemodels.io"


@pytest.fixture
def release_namespace(kubectl: Kubectl) -> Iterator[str]:
    kubectl("create", "namespace", "smo-lifecycle")
    yield "smo-lifecycle"
    kubectl("delete", "namespace", "smo-lifecycle", "--wait=false")


def operator_config(kubectl: Kubectl, namespace: str) -> OperatorConfig:
    config_map = kubectl.get("configmap", f"{FULLNAME}-config", namespace)
    return OperatorConfig.model_validate(yaml.safe_load(config_map["data"]["config.yaml"]))


def pod_template_checksum(kubectl: Kubectl, namespace: str) -> str:
    deployment = kubectl.get("deployment", FULLNAME, namespace)
    return str(deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"])


def replica_sets(kubectl: Kubectl, namespace: str) -> dict[str, int]:
    """pod-template-hash -> desired replicas, of the operator's ReplicaSets."""
    return {
        item["metadata"]["labels"]["pod-template-hash"]: item["spec"]["replicas"]
        for item in kubectl.items("replicaset", namespace, f"app.kubernetes.io/instance={RELEASE}")
    }


def test_install_upgrade_and_uninstall_keep_the_crd_and_the_models(
    cluster: LocalCluster, kubectl: Kubectl, release_namespace: str, namespace: str
) -> None:
    first: dict[str, Any] = {"config": {"resyncSeconds": 30, "allowedRegistries": ["docker.io"]}}
    install(cluster, RELEASE, release_namespace, first)

    assert operator_config(kubectl, release_namespace).resync_seconds == 30
    checksum = pod_template_checksum(kubectl, release_namespace)
    (first_hash,) = wait_for(
        lambda: replica_sets(kubectl, release_namespace), what="the operator's ReplicaSet"
    )
    kubectl.apply(smd("survivor", namespace))

    # The same values again: nothing about the pod changes, so nothing restarts.
    install(cluster, RELEASE, release_namespace, first, command="upgrade")
    assert pod_template_checksum(kubectl, release_namespace) == checksum
    assert replica_sets(kubectl, release_namespace) == {first_hash: 2}  # a leader and a standby

    second = {"config": {"resyncSeconds": 45, "allowedRegistries": ["docker.io", "registry.example.com"]}}
    install(cluster, RELEASE, release_namespace, second, command="upgrade")

    config = operator_config(kubectl, release_namespace)
    assert config.resync_seconds == 45
    assert config.allowed_registries == ("docker.io", "registry.example.com")
    assert pod_template_checksum(kubectl, release_namespace) != checksum

    def rolled() -> dict[str, int] | None:
        sets = replica_sets(kubectl, release_namespace)
        return sets if len(sets) == 2 and sets[first_hash] == 0 else None

    assert sorted(wait_for(rolled, what="a new ReplicaSet replacing the old one").values()) == [0, 2]
    deployment = kubectl.get("deployment", FULLNAME, release_namespace)
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"  # the Lease hands over

    uninstall(cluster, RELEASE, release_namespace)

    assert kubectl.get("deployment", FULLNAME, release_namespace) is None
    assert kubectl.get("serviceaccount", FULLNAME, release_namespace) is None
    assert kubectl.get("clusterrole", f"{release_namespace}-{FULLNAME}") is None
    assert kubectl.get("crd", CRD_NAME) is not None, "Helm must never delete the CRD: that deletes every SMD"
    assert kubectl.get("smd", "survivor", namespace) is not None
    kubectl("delete", "smd", "survivor", "-n", namespace)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"image": {"digest": "latest"}},
            "at '/image/digest': 'latest' does not match pattern '^sha256:[a-f0-9]{64}$'",
        ),
        ({"replicas": 9}, "at '/replicas': maximum: got 9, want 5"),
        ({"config": {"resyncSeconds": -1}}, "at '/config/resyncSeconds': exclusiveMinimum"),
    ],
    ids=["digest", "replicas", "resync"],
)
def test_an_install_with_bad_values_is_refused_and_leaves_nothing(
    cluster: LocalCluster, kubectl: Kubectl, namespace: str, values: dict[str, Any], message: str
) -> None:
    result = helm(
        "install",
        "refused",
        str(CHART),
        "--namespace",
        namespace,
        values=with_image(values),
        kubeconfig=cluster.kubeconfig,
    )

    assert result.returncode != 0
    assert message in result.stderr
    assert helm("status", "refused", "--namespace", namespace, kubeconfig=cluster.kubeconfig).returncode != 0
    assert kubectl.items("deployment", namespace) == []
