"""The fault suite's own control plane: its API server and etcd are killed and restarted, so it is not
the session's. The operator runs as its own processes, with identities of their own, as in pods."""

from __future__ import annotations

import subprocess
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest

from chart.helm import token_kubeconfig
from localcluster import LocalCluster, free_port, running_cluster
from operatorprocess import start_operator
from support.kube import Kubectl, wait_for
from support.paths import CRD
from support.tools import report_crds

OPERATOR_HOME = "faults-operator"
# Short, so that the suite is quick: a killed leader is replaced within seconds.
LEASE = {"leaseDurationSeconds": 6, "renewDeadlineSeconds": 4, "retryPeriodSeconds": 1}
RESYNC_SECONDS = 2


@dataclass
class Operator:
    identity: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def http(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as reply:
                return reply.status, reply.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()
        except OSError:
            return 0, ""

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


@dataclass
class Faults:
    cluster: LocalCluster
    kubectl: Kubectl
    workdir: Path
    started: list[Operator] = field(default_factory=list)

    def operator(self, name: str) -> Operator:
        """An operator process as ServiceAccount `name` (cluster-admin), sharing the suite's Lease."""
        account = f"{name}-{uuid.uuid4().hex[:4]}"
        self.kubectl("create", "serviceaccount", account, "-n", OPERATOR_HOME)
        self.kubectl(
            "create", "clusterrolebinding", account, "--clusterrole=cluster-admin",
            f"--serviceaccount={OPERATOR_HOME}:{account}",
        )  # fmt: skip
        token = self.kubectl("create", "token", account, "-n", OPERATOR_HOME, "--duration=2h").strip()
        kubeconfig = token_kubeconfig(
            self.cluster, token, OPERATOR_HOME, self.workdir / f"{account}.kubeconfig"
        )
        port = free_port()
        settings = {
            "namespace": OPERATOR_HOME,
            "resyncSeconds": RESYNC_SECONDS,
            "workers": 8,
            "leaderElection": LEASE,
        }
        process = start_operator(self.workdir, settings, port, kubeconfig, name=account)
        found = Operator(
            f"system:serviceaccount:{OPERATOR_HOME}:{account}", process, port, self.workdir / f"{account}.log"
        )
        self.started.append(found)
        wait_for(lambda: found.http("/readyz")[0] == 200, timeout=60, what=f"{account} ready")
        return found

    def stop_all(self) -> None:
        for operator in self.started:
            if operator.alive:
                operator.process.terminate()
                operator.process.wait(timeout=30)
        self.started.clear()


def established(kubectl: Kubectl, crd: Path) -> bool:
    condition = '{.status.conditions[?(@.type=="Established")].status}'
    return kubectl.run("get", "-f", str(crd), "-o", f"jsonpath={condition}").stdout == "True"


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faults]:
    workdir = tmp_path_factory.mktemp("faults")
    # Compaction every few seconds: a watch resumed after an outage meets 410 Gone, as in a busy cluster.
    with running_cluster(workdir / "cluster", apiserver_flags=("--etcd-compaction-interval=3s",)) as cluster:
        kubectl = Kubectl(cluster)
        # The PolicyReport CRD too, as a cluster with Kyverno or Policy Reporter has: the operator then
        # does its whole job, reports included, through every fault.
        for crd in (CRD, report_crds() / "wgpolicyk8s.io_policyreports.yaml"):
            kubectl("apply", "--server-side", "-f", str(crd))
            wait_for(partial(established, kubectl, crd), what=f"{crd.name} to be established")
        kubectl("create", "namespace", OPERATOR_HOME)
        found = Faults(cluster, kubectl, workdir)
        yield found
        found.stop_all()


@pytest.fixture
def fault_namespace(faults: Faults, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"f-{request.node.name[:24].lower().replace('_', '-').strip('-')}-{uuid.uuid4().hex[:4]}"
    faults.kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}},
        }
    )
    yield name
    faults.stop_all()
    # Gone before the next test starts: what one test leaves behind must not be another's fleet.
    faults.kubectl("delete", "namespace", name, "--timeout=180s")


Probe = Callable[[], object]
