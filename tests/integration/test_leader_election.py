"""Two operators, one Lease: one leads and writes, the other waits with warm caches; SIGKILL the leader
in the middle of reconciling and the other takes over within the Lease's duration. Who wrote what is
read from the API server's own audit log, by identity: at no moment do both write."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from chart.helm import token_kubeconfig
from localcluster import LocalCluster, free_port
from operatorprocess import start_operator
from support.audit import ACCESS_REVIEWS, accepted_writes
from support.kube import Kubectl, wait_for
from support.manifests import smd

pytestmark = pytest.mark.integration
COUNT = 30
LEASE = {"leaseDurationSeconds": 6, "renewDeadlineSeconds": 4, "retryPeriodSeconds": 1}
# Asked with a create, but changing nothing (reviews); and the Lease, which both replicas write by design.


@dataclass
class Replica:
    identity: str  # the user name the API server knows it by
    process: subprocess.Popen[bytes]
    port: int

    def readiness(self) -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as reply:
                return str(reply.read().decode())
        except OSError:
            return ""


@pytest.fixture
def replicas(cluster: LocalCluster, kubectl: Kubectl, tmp_path: Path) -> Iterator[list[Replica]]:
    """Two operator processes with identities of their own, sharing a Lease in their own namespace."""
    home = f"ha-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", home)
    started: list[Replica] = []
    for letter in "ab":
        account = f"operator-{letter}"
        kubectl("create", "serviceaccount", account, "-n", home)
        kubectl(
            "create",
            "clusterrolebinding",
            f"{home}-{account}",
            "--clusterrole=cluster-admin",
            f"--serviceaccount={home}:{account}",
        )
        token = kubectl("create", "token", account, "-n", home, "--duration=1h").strip()
        kubeconfig = token_kubeconfig(cluster, token, home, tmp_path / f"{account}.kubeconfig")
        port = free_port()
        settings = {"namespace": home, "resyncSeconds": 2, "leaderElection": LEASE}
        process = start_operator(tmp_path, settings, port, kubeconfig, name=account)
        started.append(Replica(f"system:serviceaccount:{home}:{account}", process, port))
    yield started
    for replica in started:
        if replica.process.poll() is None:
            replica.process.terminate()
            replica.process.wait(timeout=30)
    for letter in "ab":
        kubectl("delete", "clusterrolebinding", f"{home}-operator-{letter}")
    kubectl("delete", "namespace", home, "--wait=false")


def leader(replicas: list[Replica]) -> Replica | None:
    leading = [replica for replica in replicas if replica.readiness() == "ok (leading)"]
    standing_by = [replica for replica in replicas if replica.readiness() == "ok (standby)"]
    return leading[0] if len(leading) == 1 and len(standing_by) == len(replicas) - 1 else None


def writes(cluster: LocalCluster, identities: set[str]) -> list[tuple[datetime, str]]:
    """(when, who) of every write the API server accepted from these identities, but their Lease's and
    access reviews'."""
    return [
        (
            datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00")),
            event["user"]["username"],
        )
        for event in accepted_writes(cluster.audit_log, identities, not_of=(*ACCESS_REVIEWS, "leases"))
    ]


def test_one_replica_leads_a_killed_leader_is_replaced_within_the_lease_and_never_both_write(
    cluster: LocalCluster, kubectl: Kubectl, namespace: str, replicas: list[Replica]
) -> None:
    first = wait_for(lambda: leader(replicas), timeout=60, what="one leader and one standby")
    other = next(replica for replica in replicas if replica is not first)
    kubectl.apply([smd(f"m{index}", namespace) for index in range(COUNT)])
    # Killed in the middle of reconciling: some SMDs are done, some half done, some not begun.
    wait_for(lambda: len(kubectl.items("deployment", namespace)) >= COUNT // 3, timeout=60, interval=0.05)
    os.kill(first.process.pid, signal.SIGKILL)
    killed = time.monotonic()

    wait_for(
        lambda: other.readiness() == "ok (leading)", timeout=30, interval=0.1, what="the standby to lead"
    )
    takeover = time.monotonic() - killed

    def every_smd_ready() -> bool:
        items = kubectl.items("smd", namespace)
        return len(items) == COUNT and all(
            (item.get("status") or {}).get("phase") == "Ready" for item in items
        )

    wait_for(every_smd_ready, timeout=180, what="every SMD Ready under the new leader")
    assert takeover <= LEASE["leaseDurationSeconds"] + 2 * LEASE["retryPeriodSeconds"] + 1
    deployments = kubectl.items("deployment", namespace)
    assert sorted(item["metadata"]["name"] for item in deployments) == sorted(
        f"m{index}" for index in range(COUNT)
    )
    # The old leader's writes all come before the new leader's first: never two writers at once.
    timeline = writes(cluster, {first.identity, other.identity})
    by_old = [when for when, who in timeline if who == first.identity]
    by_new = [when for when, who in timeline if who == other.identity]
    assert by_old, "the first leader wrote nothing before it was killed"
    assert by_new, "the new leader wrote nothing"
    assert max(by_old) < min(by_new)
