"""The operator never changes what the user applied, so Argo CD (or `kubectl diff`) sees no drift."""

from __future__ import annotations

import time

import pytest
import yaml

from support.kube import Kubectl, wait_for
from support.manifests import smd
from support.operator import RESYNC_SECONDS, RunningOperator

pytestmark = pytest.mark.integration


def test_after_reconciling_the_smd_shows_no_diff_and_only_status_is_ours(
    kubectl: Kubectl, namespace: str, operator: RunningOperator
) -> None:
    manifest = smd("gitops", namespace, access={"viewers": [{"kind": "Group", "name": "auditors"}]})
    manifest["metadata"]["labels"] = {"team": "fraud"}
    manifest["metadata"]["annotations"] = {"owner": "ml-platform"}
    kubectl.apply(manifest)
    wait_for(
        lambda: kubectl.status("gitops", namespace).get("phase") == "Ready",
        timeout=60,
    )
    time.sleep(RESYNC_SECONDS * 2)  # resyncs and status writes happen meanwhile

    diff = kubectl.run("diff", "-f", "-", stdin=yaml.safe_dump(manifest))
    live = kubectl.get("smd", "gitops", namespace, "--show-managed-fields")

    assert diff.returncode == 0, diff.stdout
    assert live["metadata"].get("finalizers") is None
    assert live["metadata"]["labels"] == {"team": "fraud"}
    assert set(live["metadata"]["annotations"]) == {
        "owner",
        "kubectl.kubernetes.io/last-applied-configuration",
    }
    assert live["metadata"]["generation"] == 1
    ours = [entry for entry in live["metadata"]["managedFields"] if entry["manager"] == "securemodels"]
    assert ours
    assert all(entry.get("subresource") == "status" for entry in ours)
