"""The end-to-end suite's session: a cluster whose pods really run, and the operator installed with Helm.

Locally, the real-node cluster (tests/conftest.py); with USE_EXISTING_CLUSTER=1, the current kubeconfig's
cluster. Either way the operator image built from this checkout is installed with the chart, under the
chart's RBAC and NetworkPolicy, watching the test's namespaces only.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from chart.helm import helm
from e2e.cluster import E2ECluster, images, use_existing_cluster
from support.kube import wait_for
from support.paths import CHART

RELEASE = "e2e"
OPERATOR_NAMESPACE = "e2e-operator"
MODELS = "e2e-models"
CLIENTS = "e2e-clients"
OUTSIDERS = "e2e-outsiders"
EGRESS = "e2e-egress"
MONITORING = "e2e-monitoring"
# The chart's default config.leaderElection.leaseName: the replica holding it reconciles.
LEASE = "secure-model-operator"
# The chart's default. Drift is restored from the watches, not at the resync; a repaired verdict (Fail)
# stands until the next resync, which the tampering test waits for.
RESYNC_SECONDS = 30


@dataclass(frozen=True)
class Installed:
    cluster: E2ECluster
    images: dict[str, str]
    operator_namespace: str

    def operator_pods(self) -> list[dict[str, Any]]:
        """The Helm-installed operator's replicas, as many as the chart's default asks for."""
        selector = f"app.kubernetes.io/instance={RELEASE}"
        (deployment,) = self.cluster.items("deployment", self.operator_namespace, selector)
        pods = self.cluster.items("pod", self.operator_namespace, selector)
        running = [pod for pod in pods if not pod["metadata"].get("deletionTimestamp")]
        assert len(running) == deployment["spec"]["replicas"], [pod["metadata"]["name"] for pod in pods]
        return running

    def leader(self) -> dict[str, Any]:
        """The replica holding the leader Lease: the one that reconciles, and counts its repairs."""

        def holder() -> dict[str, Any] | None:
            lease = self.cluster.get("lease", LEASE, self.operator_namespace)
            identity = ((lease or {}).get("spec") or {}).get("holderIdentity")
            return next((pod for pod in self.operator_pods() if pod["metadata"]["name"] == identity), None)

        return wait_for(holder, timeout=60, what="a replica to hold the leader Lease")


@pytest.fixture(scope="session")
def e2e_cluster(request: pytest.FixtureRequest) -> E2ECluster:
    if use_existing_cluster():
        return E2ECluster(Path(os.environ.get("KUBECONFIG") or Path.home() / ".kube" / "config"))
    local = request.getfixturevalue("real_node_cluster")
    return E2ECluster(local.kubeconfig)


@pytest.fixture(scope="session")
def installed(e2e_cluster: E2ECluster) -> Iterator[Installed]:
    """The chart installed with the operator image, watching the models' and clients' namespaces.

    The images are on the nodes already (imported into the real node's containerd, or loaded into
    kind), and there is no registry to ask: the operator's containers pull only what is absent."""
    references = images()
    for namespace in (OPERATOR_NAMESPACE, MODELS, CLIENTS, OUTSIDERS, EGRESS, MONITORING):
        e2e_cluster.namespace(namespace)
    address, port = e2e_cluster.api_server_endpoint()
    repository, digest = references["operator"].split("@")
    values = {
        "image": {"repository": repository, "digest": digest, "pullPolicy": "IfNotPresent"},
        "config": {
            "watchNamespaces": [MODELS, CLIENTS],
            "resyncSeconds": RESYNC_SECONDS,
            "sidecarImage": references["sidecar"],
            "imagePullPolicy": "IfNotPresent",
            "monitoringNamespace": MONITORING,
        },
        "networkPolicy": {"apiServerCIDRs": [f"{address}/32"], "apiServerPorts": [port]},
    }
    result = helm(
        "install", RELEASE, str(CHART), "--namespace", OPERATOR_NAMESPACE, "--wait", "--timeout=4m",
        values=values, kubeconfig=e2e_cluster.kubeconfig,
    )  # fmt: skip
    if result.returncode != 0:
        pods = e2e_cluster.run("get", "pods", "-n", OPERATOR_NAMESPACE, "-o", "wide").stdout
        logs = e2e_cluster.run(
            "logs", "-n", OPERATOR_NAMESPACE, "-l", f"app.kubernetes.io/instance={RELEASE}"
        ).stdout
        raise AssertionError(f"helm install failed: {result.stderr}\n{pods}\n{logs[-3000:]}")
    yield Installed(e2e_cluster, references, OPERATOR_NAMESPACE)
    if use_existing_cluster():  # a local cluster goes away whole; someone else's is left as found
        helm(
            "uninstall",
            RELEASE,
            "--namespace",
            OPERATOR_NAMESPACE,
            "--wait",
            kubeconfig=e2e_cluster.kubeconfig,
        )
        e2e_cluster.delete_namespaces(OPERATOR_NAMESPACE, MODELS, CLIENTS, OUTSIDERS, EGRESS, MONITORING)
