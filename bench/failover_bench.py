"""Failover: two operator processes share the Lease with the default timing; the leader is SIGKILLed
while a child is missing, and the clock runs until the other leads and until the child is back."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import yaml

from bench import operator_bench
from localcluster import LocalCluster, free_port
from operatorprocess import start_operator
from securemodels.config import LeaderElection

POLL = 0.05
COUNT = 20


def _readiness(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as reply:
            return str(reply.read().decode())
    except OSError:
        return ""


def _policy_exists(cluster: LocalCluster, namespace: str) -> bool:
    command = [cluster.kubectl_path, f"--kubeconfig={cluster.kubeconfig}", "-n", namespace]
    result = subprocess.run(
        [*command, "get", "networkpolicy", "m0-network"], capture_output=True, check=False
    )
    return result.returncode == 0


def run(cluster: LocalCluster, workdir: Path) -> dict[str, float]:
    """Seconds from the SIGKILL until the standby leads, and until it has restored the deleted policy."""
    namespace = "bench-failover"
    cluster.kubectl("create", "namespace", namespace)
    settings = {
        "namespace": operator_bench.OPERATOR_NAMESPACE,
        "resyncSeconds": operator_bench.RESYNC_SECONDS,
    }
    ports = [free_port(), free_port()]
    processes = [
        start_operator(workdir, settings, port, cluster.kubeconfig, name=f"failover-{index}")
        for index, port in enumerate(ports)
    ]
    try:
        operator_bench.wait(lambda: any(_readiness(port) == "ok (leading)" for port in ports), timeout=60)
        leader = next(index for index, port in enumerate(ports) if _readiness(port) == "ok (leading)")
        standby = ports[1 - leader]
        cluster.kubectl(
            "apply",
            "-f",
            "-",
            stdin=yaml.safe_dump_all([operator_bench.smd(f"m{i}", namespace) for i in range(COUNT)]),
        )
        operator_bench.wait(lambda: operator_bench.all_ready(cluster, namespace, COUNT), timeout=300)

        cluster.kubectl("delete", "networkpolicy", "m0-network", "-n", namespace)
        os.kill(processes[leader].pid, signal.SIGKILL)
        killed = time.monotonic()
        leads = restored = None
        while time.monotonic() - killed < 120 and (leads is None or restored is None):
            if leads is None and _readiness(standby) == "ok (leading)":
                leads = time.monotonic() - killed
            if restored is None and _policy_exists(cluster, namespace):
                restored = time.monotonic() - killed
            time.sleep(POLL)
        if leads is None or restored is None:
            raise TimeoutError("the standby did not take over within 120 s")
        return {
            "failover_lease_seconds": float(LeaderElection().lease_duration_seconds),
            "failover_seconds_to_lead": leads,
            "failover_seconds_to_repair": restored,
        }
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=30)
