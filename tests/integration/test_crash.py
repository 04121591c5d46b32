"""SIGKILL in the middle of reconciling, then a restart: the operator converges with no duplicates."""

from __future__ import annotations

import os
import signal
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from localcluster import LocalCluster, free_port
from operatorprocess import start_operator
from support.kube import Kubectl, wait_for
from support.manifests import smd
from support.paths import OPERATOR_NAMESPACE

pytestmark = pytest.mark.integration
COUNT = 10


@pytest.fixture
def launch(cluster: LocalCluster, tmp_path: Path) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """Starts `securemodels run` as its own process, as in a pod; stops whatever is left at the end."""
    processes: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        settings = {"namespace": OPERATOR_NAMESPACE, "resyncSeconds": 2}
        process = start_operator(
            tmp_path, settings, free_port(), cluster.kubeconfig, name=f"operator-{len(processes)}"
        )
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)


def test_a_killed_operator_converges_after_restart_with_no_duplicates(
    kubectl: Kubectl, namespace: str, launch: Callable[[], subprocess.Popen[bytes]]
) -> None:
    gateway = f"{namespace}-gw"
    kubectl("create", "namespace", gateway)
    kubectl.apply(
        [
            smd(f"m{index}", namespace, mtls={"clients": [{"name": "gw", "namespace": gateway}]})
            for index in range(COUNT)
        ]
    )
    first = launch()

    # Kill it as soon as it has started writing children: some reconciles are half done.
    wait_for(lambda: kubectl.items("deployment", namespace), timeout=60, interval=0.05, what="first writes")
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    half_done = len(kubectl.items("deployment", namespace))
    launch()

    def all_ready() -> bool:
        items = kubectl.items("smd", namespace)
        return len(items) == COUNT and all(
            (item.get("status") or {}).get("phase") == "Ready" for item in items
        )

    wait_for(all_ready, timeout=120, what="every SMD Ready after the restart")

    assert 0 < half_done <= COUNT
    selector = "app.kubernetes.io/managed-by=secure-model-operator"
    for kind in ("deployment", "service", "serviceaccount", "networkpolicy", "secret", "configmap"):
        owners = Counter(
            item["metadata"]["labels"]["app.kubernetes.io/instance"]
            for item in kubectl.items(kind, namespace, selector)
        )
        per_smd = {"secret": 1, "configmap": 1}.get(kind, 1)
        assert owners == {f"m{index}": per_smd for index in range(COUNT)}, kind
    # One ReplicaSet per Deployment: the restart did not roll the pods to a second template.
    replica_sets = Counter(
        item["metadata"]["labels"]["app.kubernetes.io/instance"]
        for item in kubectl.items("replicaset", namespace)
    )
    assert replica_sets == {f"m{index}": 1 for index in range(COUNT)}
    client_secrets = kubectl.items("secret", gateway, selector)
    assert sorted(item["metadata"]["name"] for item in client_secrets) == sorted(
        f"m{index}.{namespace}.client-gw" for index in range(COUNT)
    )
    assert len(kubectl.items("secret", OPERATOR_NAMESPACE, "app.kubernetes.io/component=ca")) == 1
    kubectl("delete", "namespace", gateway, "--wait=false")
