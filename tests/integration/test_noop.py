"""A resync skips an SMD none of whose inputs changed, and the full resync that judges it anyway writes
nothing.

The operator here manages one namespace only, so the write counters it exports count this SMD's
writes and no other test's.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from localcluster import LocalCluster
from securemodels.config import OperatorConfig
from securemodels.handlers.runtime import FULL_RESYNC_EVERY
from support.kube import Kubectl, wait_for
from support.manifests import smd
from support.operator import RESYNC_SECONDS, FakeClock, RunningOperator
from support.paths import OPERATOR_NAMESPACE

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def quiet_namespace(kubectl: Kubectl) -> Iterator[str]:
    name = f"t-noop-{uuid.uuid4().hex[:5]}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture(scope="module")
def operator(cluster: LocalCluster, quiet_namespace: str) -> Iterator[RunningOperator]:
    config = OperatorConfig(
        namespace=OPERATOR_NAMESPACE, resync_seconds=RESYNC_SECONDS, watch_namespaces=(quiet_namespace,)
    )
    running = RunningOperator(cluster.kubeconfig, config, FakeClock()).start()
    yield running
    running.stop()


def versions(kubectl: Kubectl, namespace: str) -> dict[str, str]:
    children = kubectl.children("steady", namespace)
    return {
        f"{item['kind']}/{item['metadata']['name']}": item["metadata"]["resourceVersion"] for item in children
    }


def test_an_unchanged_smd_is_skipped_by_resyncs_and_its_full_resync_writes_nothing(
    kubectl: Kubectl, quiet_namespace: str, operator: RunningOperator
) -> None:
    kubectl.apply(smd("steady", quiet_namespace, access={"viewers": [{"kind": "Group", "name": "auditors"}]}))
    wait_for(lambda: kubectl.ready("steady", quiet_namespace), timeout=60, what="steady Ready")
    time.sleep(RESYNC_SECONDS * 1.5)  # the pass after Ready settles
    before = versions(kubectl, quiet_namespace)
    smd_before = kubectl.get("smd", "steady", quiet_namespace)["metadata"]["resourceVersion"]
    reconciles_before = operator.metric("securemodels_reconcile_duration_seconds_count") or 0.0
    writes_before = {
        verb: operator.metric("securemodels_api_writes_total", verb=verb) or 0.0
        for verb in ("apply", "create", "delete", "patch_status")
    }

    time.sleep(RESYNC_SECONDS * 3)  # resyncs that find none of its inputs changed: nothing to judge
    # One of them may have been the full resync; judging at every one would have made three passes.
    assert (operator.metric("securemodels_reconcile_duration_seconds_count") or 0.0) <= reconciles_before + 1
    wait_for(
        lambda: (operator.metric("securemodels_reconcile_duration_seconds_count") or 0.0) > reconciles_before,
        timeout=RESYNC_SECONDS * (FULL_RESYNC_EVERY + 2),
        what="the full resync that judges every SMD afresh",
    )

    assert versions(kubectl, quiet_namespace) == before
    assert (
        len(before) == 8
    )  # SA, TLS Secret, sidecar ConfigMap, policy, Role, RoleBinding, Service, Deployment
    assert kubectl.get("smd", "steady", quiet_namespace)["metadata"]["resourceVersion"] == smd_before
    for verb, count in writes_before.items():
        assert (operator.metric("securemodels_api_writes_total", verb=verb) or 0.0) == count, verb
