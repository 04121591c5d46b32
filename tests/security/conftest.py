"""The security suite: attacks on the real control plane, each beside a positive control.

The chart's admission policy is installed once for the session, exactly as `helm template` renders it,
so that escalation attempts meet what a cluster with the chart would answer.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator

import pytest
import yaml

from chart.helm import render
from localcluster import LocalCluster
from securemodels.config import LeaderElection, OperatorConfig
from support.access import AdmissionPolicy
from support.kube import Kubectl, wait_for
from support.operator import RESYNC_SECONDS, FakeClock, RunningOperator
from support.paths import OPERATOR_NAMESPACE


def _probe_refused(kubectl: Kubectl, namespace: str) -> bool:
    """The policy is enforced: a user who may create SMDs but holds no 'weaken' is refused a weakening."""
    result = kubectl.run(
        "--as=policy-probe",
        "create",
        "--dry-run=server",
        "-f",
        "-",
        stdin=yaml.safe_dump(
            {
                "apiVersion": "securemodels.io/v1alpha1",
                "kind": "SecureModelDeployment",
                "metadata": {"name": "probe", "namespace": namespace},
                "spec": {
                    "model": {"image": "registry.example.com/probe@sha256:" + "0" * 64},
                    "mtls": {"minTLSVersion": "1.2"},
                },
            }
        ),
    )
    return result.returncode != 0 and "weaken" in result.stderr


@pytest.fixture(scope="session")
def admission_policy(cluster: LocalCluster, kubectl: Kubectl) -> Iterator[AdmissionPolicy]:
    objects = render(None, "securemodels-system", "--show-only", "templates/admission-policy.yaml")
    kubectl.apply(objects)
    roles = {item["metadata"]["name"] for item in objects if item["kind"] == "ClusterRole"}
    security_admin = next(name for name in roles if name.endswith("-security-admin"))
    client_certificates = next(name for name in roles if name.endswith("-client-certificates"))
    probe_namespace = f"policy-probe-{uuid.uuid4().hex[:5]}"
    kubectl("create", "namespace", probe_namespace)
    kubectl(
        "create", "rolebinding", "probe", "--clusterrole=edit", "--user=policy-probe", "-n", probe_namespace
    )
    kubectl(
        "create",
        "role",
        "probe-smd",
        "--verb=create",
        "--resource=securemodeldeployments.securemodels.io",
        "-n",
        probe_namespace,
    )
    kubectl(
        "create", "rolebinding", "probe-smd", "--role=probe-smd", "--user=policy-probe", "-n", probe_namespace
    )
    wait_for(
        lambda: _probe_refused(kubectl, probe_namespace),
        timeout=30,
        what="the admission policy to be enforced",
    )
    yield AdmissionPolicy(security_admin, client_certificates)
    for item in objects:
        subprocess.run(
            [
                kubectl.cluster.kubectl_path,
                f"--kubeconfig={kubectl.cluster.kubeconfig}",
                "delete",
                item["kind"],
                item["metadata"]["name"],
                "--ignore-not-found",
            ],
            capture_output=True,
            check=False,
        )
    kubectl("delete", "namespace", probe_namespace, "--wait=false")


@pytest.fixture(scope="module")
def operator(cluster: LocalCluster, clock: FakeClock) -> Iterator[RunningOperator]:
    """The operator, in-process, with a short resync, as for every test directory; with a Lease of its
    own, so that it never waits for one a previous module's operator still holds."""
    config = OperatorConfig(
        namespace=OPERATOR_NAMESPACE,
        resync_seconds=RESYNC_SECONDS,
        leader_election=LeaderElection(lease_name=f"security-{uuid.uuid4().hex[:8]}"),
    )
    running = RunningOperator(cluster.kubeconfig, config, clock).start()
    yield running
    running.stop()
