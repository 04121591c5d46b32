"""The cluster-wide requirement of signed weights, on the real control plane: an SMD without them is
Blocked with the reason and one Event, and what already ran keeps running, untouched, as does everything
the user owns."""

from __future__ import annotations

import time
from typing import Any

import pytest

from localcluster import LocalCluster
from securemodels.config import OperatorConfig
from support.kube import Kubectl, wait_for
from support.manifests import smd
from support.operator import RESYNC_SECONDS, FakeClock, RunningOperator
from support.paths import OPERATOR_NAMESPACE

pytestmark = pytest.mark.integration

VERIFIER = "registry.example.com/secure-model-operator@sha256:" + "5e" * 32


def operator_with(cluster: LocalCluster, clock: FakeClock, *, required: bool) -> RunningOperator:
    config = OperatorConfig(
        namespace=OPERATOR_NAMESPACE,
        resync_seconds=RESYNC_SECONDS,
        weights_verifier_image=VERIFIER,
        require_signed_weights=required,
    )
    return RunningOperator(cluster.kubeconfig, config, clock).start()


def ready_condition(kubectl: Kubectl, name: str, namespace: str) -> dict[str, Any] | None:
    return kubectl.condition(kubectl.get("smd", name, namespace), "Ready")


def test_required_signatures_block_an_unsigned_model_and_keep_what_runs(
    cluster: LocalCluster, kubectl: Kubectl, namespace: str, clock: FakeClock
) -> None:
    kubectl("create", "configmap", "settings", "--from-literal=mode=fast", "-n", namespace)
    from_settings = {"configMapKeyRef": {"name": "settings", "key": "mode"}}
    kubectl.apply(smd("unsigned", namespace, model={"env": [{"name": "MODE", "valueFrom": from_settings}]}))
    lenient = operator_with(cluster, clock, required=False)
    try:
        wait_for(
            lambda: kubectl.status("unsigned", namespace).get("phase") == "Ready", timeout=60, what="Ready"
        )
        before = kubectl.get("deployment", "unsigned", namespace)
        children = sorted(
            (item["kind"], item["metadata"]["name"]) for item in kubectl.children("unsigned", namespace)
        )
    finally:
        lenient.stop()

    strict = operator_with(cluster, clock, required=True)
    try:
        wait_for(
            lambda: kubectl.status("unsigned", namespace).get("phase") == "Blocked",
            timeout=30,
            what="Blocked",
        )
        ready = ready_condition(kubectl, "unsigned", namespace)
        assert ready is not None and ready["reason"] == "SignatureRequired"
        assert "declare spec.model.weights with a signature" in ready["message"]
        time.sleep(RESYNC_SECONDS * 3)  # several passes: still one Event, nothing written
        events = [
            item for item in kubectl.items("event", namespace)
            if item["involvedObject"]["name"] == "unsigned" and item["reason"] == "SignatureRequired"
        ]  # fmt: skip
        assert len(events) == 1 and events[0]["type"] == "Warning" and events[0].get("count", 1) == 1
        after = kubectl.get("deployment", "unsigned", namespace)
        assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
        assert (
            sorted(
                (item["kind"], item["metadata"]["name"]) for item in kubectl.children("unsigned", namespace)
            )
            == children
        )
        assert kubectl.get("configmap", "settings", namespace) is not None
        pods = kubectl.items("pod", namespace, "app.kubernetes.io/instance=unsigned")
        assert pods and all(pod["status"]["phase"] == "Running" for pod in pods)

        # A new unsigned SMD is never realised.
        kubectl.apply(smd("another", namespace))
        wait_for(
            lambda: kubectl.status("another", namespace).get("phase") == "Blocked", what="another Blocked"
        )
        assert kubectl.get("deployment", "another", namespace) is None
    finally:
        strict.stop()
