"""Fixtures shared by every test directory: the local control plane is started at most once."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from localcluster import LocalCluster, running_cluster
from securemodels.config import OperatorConfig
from support.kube import Kubectl, wait_for
from support.operator import RESYNC_SECONDS, FakeClock, RunningOperator
from support.paths import CRD, OPERATOR_NAMESPACE


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with running_cluster(tmp_path_factory.mktemp("cluster")) as local:
        local.kubectl("apply", "--server-side", "-f", str(CRD))
        established = '{.status.conditions[?(@.type=="Established")].status}'
        wait_for(
            lambda: (
                Kubectl(local).run("get", "-f", str(CRD), "-o", f"jsonpath={established}").stdout == "True"
            ),
            what="the CRD to be established",
        )
        local.kubectl("create", "namespace", OPERATOR_NAMESPACE)
        yield local


@pytest.fixture(scope="session")
def real_node_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A second local control plane, with a real node beside its kwok nodes (Linux and root): for the
    end-to-end tests, whose pods really run. Apart from `cluster`, so the other tests see no change."""
    with running_cluster(tmp_path_factory.mktemp("real-node-cluster"), real_node=True) as local:
        yield local


@pytest.fixture(scope="session")
def kubectl(cluster: LocalCluster) -> Kubectl:
    return Kubectl(cluster)


@pytest.fixture
def namespace(kubectl: Kubectl, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace enforcing Pod Security "restricted"."""
    name = f"t-{request.node.name[:30].lower().replace('_', '-').strip('-')}-{uuid.uuid4().hex[:5]}"
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                "labels": {
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                },
            },
        }
    )
    yield name
    kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture(scope="module")
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="module")
def operator(cluster: LocalCluster, clock: FakeClock) -> Iterator[RunningOperator]:
    """The operator, in-process, with a short resync so drift shows up quickly."""
    config = OperatorConfig(namespace=OPERATOR_NAMESPACE, resync_seconds=RESYNC_SECONDS)
    running = RunningOperator(cluster.kubeconfig, config, clock).start()
    yield running
    running.stop()
