"""The cluster-wide registry allow-list from the operator's configuration, on the real control plane."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import yaml

from localcluster import LocalCluster
from securemodels.config import OperatorConfig
from support.kube import Kubectl, wait_for
from support.manifests import smd
from support.operator import RESYNC_SECONDS, FakeClock, RunningOperator
from support.paths import OPERATOR_NAMESPACE

pytestmark = pytest.mark.integration
TRUSTED = "registry.example.com"
DIGEST = "@sha256:" + "cd" * 32


@pytest.fixture(scope="module")
def operator(cluster: LocalCluster) -> Iterator[RunningOperator]:
    config = OperatorConfig(
        namespace=OPERATOR_NAMESPACE,
        resync_seconds=RESYNC_SECONDS,
        allowed_registries=(TRUSTED,),
        sidecar_image=f"{TRUSTED}/mirror/nginx-unprivileged:1.27-alpine{DIGEST}",
    )
    running = RunningOperator(cluster.kubeconfig, config, FakeClock()).start()
    yield running
    running.stop()


def test_an_image_outside_the_cluster_allow_list_is_blocked_with_an_event(
    kubectl: Kubectl, namespace: str, operator: RunningOperator
) -> None:
    kubectl.apply(smd("foreign", namespace, model={"image": f"quay.io/someone/model{DIGEST}"}))

    wait_for(lambda: kubectl.status("foreign", namespace).get("phase") == "Blocked")

    ready = kubectl.condition(kubectl.get("smd", "foreign", namespace), "Ready")
    assert ready is not None
    assert ready["reason"] == "RegistryNotAllowed"
    assert "quay.io/someone/model" in ready["message"] and TRUSTED in ready["message"]
    assert kubectl.get("deployment", "foreign", namespace) is None
    assert any(event["reason"] == "RegistryNotAllowed" for event in kubectl.items("event", namespace))


def test_an_image_inside_both_allow_lists_is_deployed(
    kubectl: Kubectl, namespace: str, operator: RunningOperator
) -> None:
    image = f"{TRUSTED}/ml/model{DIGEST}"
    kubectl.apply(
        smd("local", namespace, model={"image": image}, imagePolicy={"allowedRegistries": [TRUSTED]})
    )

    wait_for(
        lambda: kubectl.status("local", namespace).get("phase") == "Ready",
        timeout=60,
    )

    containers = kubectl.get("deployment", "local", namespace)["spec"]["template"]["spec"]["containers"]
    assert containers[0]["image"] == image
    found = kubectl.get("smd", "local", namespace)
    assert kubectl.control(found, "image-digest")["status"] == "Pass"  # type: ignore[index]


def test_the_smds_own_allow_list_is_enforced_at_admission(kubectl: Kubectl, namespace: str) -> None:
    manifest = smd(
        "elsewhere",
        namespace,
        imagePolicy={"allowedRegistries": [TRUSTED]},
        model={"image": f"quay.io/x/model{DIGEST}"},
    )

    result = kubectl.run("apply", "-f", "-", stdin=yaml.safe_dump(manifest))

    assert result.returncode != 0
    assert "spec.model.image" in result.stderr
    assert "spec.imagePolicy.allowedRegistries" in result.stderr
