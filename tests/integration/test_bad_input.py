"""Input that passes the schema but cannot be realised: reported, never a crash, nothing lost."""

from __future__ import annotations

import time

import pytest

from support.kube import Kubectl, wait_for
from support.manifests import smd
from support.operator import RESYNC_SECONDS, RunningOperator

pytestmark = pytest.mark.integration

MISSING_SECRET = {"secretFiles": [{"name": "token", "secretName": "absent"}]}


def test_a_missing_secret_blocks_the_smd_while_others_are_served(
    kubectl: Kubectl, namespace: str, operator: RunningOperator
) -> None:
    kubectl.apply(smd("broken", namespace, model=MISSING_SECRET))
    kubectl.apply(smd("healthy", namespace))

    wait_for(lambda: kubectl.status("broken", namespace).get("phase") == "Blocked", what="broken Blocked")
    wait_for(
        lambda: kubectl.status("healthy", namespace).get("phase") == "Ready",
        timeout=60,
        what="healthy Ready",
    )

    ready = kubectl.condition(kubectl.get("smd", "broken", namespace), "Ready")
    assert ready is not None
    assert (ready["status"], ready["reason"]) == ("False", "ReferenceNotFound")
    assert "Secret/absent" in ready["message"]
    assert kubectl.get("deployment", "broken", namespace) is None
    events = [
        item for item in kubectl.items("event", namespace) if item["involvedObject"]["name"] == "broken"
    ]
    assert any(item["reason"] == "ReferenceNotFound" and item["type"] == "Warning" for item in events)

    kubectl("create", "secret", "generic", "absent", "--from-literal=token=x", "-n", namespace)
    wait_for(
        lambda: kubectl.status("broken", namespace).get("phase") == "Ready", timeout=60, what="unblocked"
    )


def test_a_bad_update_keeps_the_running_workload_as_it_was(
    kubectl: Kubectl, namespace: str, operator: RunningOperator
) -> None:
    kubectl.apply(smd("live", namespace, model={"replicas": 2}))
    wait_for(lambda: kubectl.status("live", namespace).get("phase") == "Ready", timeout=60, what="live Ready")
    before = kubectl.get("deployment", "live", namespace)

    kubectl.apply(smd("live", namespace, model={"replicas": 2, **MISSING_SECRET}))

    wait_for(lambda: kubectl.status("live", namespace).get("phase") == "Blocked", what="Blocked")
    time.sleep(RESYNC_SECONDS * 2)
    after = kubectl.get("deployment", "live", namespace)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    pods = kubectl.items("pod", namespace, "app.kubernetes.io/instance=live")
    assert len(pods) == 2 and all(pod["status"]["phase"] == "Running" for pod in pods)
