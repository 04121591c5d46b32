"""Quarantine, the incident switch, on the real control plane: only a security admin may set or lift
it; while set, the model's policy admits nothing, its sidecar is told to refuse every client, and the
workload is frozen (no pod, ReplicaSet or template touched, even when someone changes the spec); a
policy reopened by hand is closed again; lifting it restores the model as it was, without a restart."""

from __future__ import annotations

import json
from typing import Any

import pytest

from support.access import AdmissionPolicy, Impersonated, bind_cluster_role, grant, smd_rule
from support.kube import Kubectl, wait_for
from support.manifests import smd
from support.operator import RunningOperator

pytestmark = pytest.mark.integration

REASON = "INC-4711: prompt exfiltration suspected"
QUARANTINE = json.dumps({"spec": {"quarantine": {"reason": REASON}}})
LIFT = json.dumps({"spec": {"quarantine": None}})


def _phase(kubectl: Kubectl, namespace: str) -> str | None:
    return kubectl.status("m", namespace).get("phase")


def _workload(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    """What a quarantine must leave exactly as it was: the pods, their ReplicaSets, the template."""
    deployment = kubectl.get("deployment", "m", namespace)
    return {
        "template": deployment["spec"]["template"],
        "generation": deployment["metadata"]["generation"],
        "replica_sets": sorted(item["metadata"]["uid"] for item in kubectl.items("replicaset", namespace)),
        "pods": sorted(
            (item["metadata"]["uid"], item["metadata"]["resourceVersion"])
            for item in kubectl.items("pod", namespace)
        ),
    }


def _reasons(kubectl: Kubectl, namespace: str) -> list[str]:
    return [
        item["reason"] for item in kubectl.items("event", namespace) if item["involvedObject"]["name"] == "m"
    ]


def _accepted(user: Impersonated, namespace: str, patch: str, what: str) -> None:
    """RBAC grants reach the authorizer within moments: try again until then."""
    wait_for(lambda: user.patch("smd", "m", namespace, patch).returncode == 0, timeout=15, what=what)


def test_only_a_security_admin_may_quarantine_and_the_model_is_cut_off_frozen_then_restored(
    kubectl: Kubectl, namespace: str, operator: RunningOperator, admission_policy: AdmissionPolicy
) -> None:
    kubectl.apply(
        smd(
            "m",
            namespace,
            network={"ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "gateway"}}}]}]},
            mtls={"clients": [{"name": "gateway", "namespace": namespace}]},
        )
    )
    wait_for(lambda: _phase(kubectl, namespace) == "Ready", timeout=60, what="Ready")
    before = _workload(kubectl, namespace)
    policy_before = kubectl.get("networkpolicy", "m-network", namespace)["spec"]

    deployer = Impersonated(kubectl, "dora")
    grant(kubectl, "dora", namespace, [smd_rule(["get", "update", "patch"], ["m"])])
    wait_for(
        lambda: (
            deployer.patch("smd", "m", namespace, json.dumps({"spec": {"model": {"replicas": 1}}})).returncode
            == 0
        ),
        timeout=15,
        what="the deployer's ordinary change",
    )
    refused = deployer.patch("smd", "m", namespace, QUARANTINE)
    assert refused.returncode != 0 and "spec.quarantine" in refused.stderr, refused.stderr

    security = Impersonated(kubectl, "sam")
    bind_cluster_role(kubectl, "sam", admission_policy.security_admin, namespace)
    _accepted(security, namespace, QUARANTINE, "the security admin's quarantine")

    wait_for(lambda: _phase(kubectl, namespace) == "Quarantined", timeout=30, what="Quarantined")
    policy = kubectl.get("networkpolicy", "m-network", namespace)["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert not policy.get("ingress") and not policy.get("egress")  # DNS included
    assert kubectl.get("configmap", "m-sidecar", namespace)["data"]["quarantined"] == REASON
    assert REASON in kubectl.status("m", namespace)["conditions"][0]["message"]
    assert operator.metric("securemodels_quarantined", namespace=namespace, name="m") == 1
    assert "Quarantined" in _reasons(kubectl, namespace)

    # Frozen: a new image is not rolled out, and the pods are those of before.
    kubectl(
        "patch", "smd", "m", "-n", namespace, "--type=merge", "-p",
        json.dumps({"spec": {"model": {"args": ["--changed-during-the-incident"]}}}),
    )  # fmt: skip
    wait_for(
        lambda: (
            kubectl.status("m", namespace).get("observedGeneration")
            == kubectl.get("smd", "m", namespace)["metadata"]["generation"]
        ),
        timeout=30,
        what="the change judged",
    )
    # Reopened by hand (someone 'helping'): closed again.
    kubectl(
        "patch", "networkpolicy", "m-network", "-n", namespace, "--type=merge", "-p",
        json.dumps({"spec": {"ingress": [{}]}}),
    )  # fmt: skip
    wait_for(
        lambda: not kubectl.get("networkpolicy", "m-network", namespace)["spec"].get("ingress"),
        timeout=30,
        what="the policy closed again",
    )
    assert _workload(kubectl, namespace) == before
    assert _phase(kubectl, namespace) == "Quarantined"

    refused = deployer.patch("smd", "m", namespace, LIFT)
    assert refused.returncode != 0 and "spec.quarantine" in refused.stderr, refused.stderr
    _accepted(security, namespace, LIFT, "the security admin's lift")

    wait_for(lambda: _phase(kubectl, namespace) in ("Progressing", "Ready"), timeout=30, what="lifted")
    wait_for(
        lambda: kubectl.get("networkpolicy", "m-network", namespace)["spec"] == policy_before,
        timeout=30,
        what="the declared policy back",
    )
    assert "quarantined" not in kubectl.get("configmap", "m-sidecar", namespace)["data"]
    assert "QuarantineLifted" in _reasons(kubectl, namespace)
    assert operator.metric("securemodels_quarantined", namespace=namespace, name="m") == 0
    # The change made during the quarantine is rolled out now, as the spec says.
    wait_for(
        lambda: (
            "--changed-during-the-incident"
            in kubectl.get("deployment", "m", namespace)["spec"]["template"]["spec"]["containers"][0].get(
                "args", []
            )
        ),
        timeout=30,
        what="the spec's change rolled out after the lift",
    )


def test_without_the_change_during_the_incident_lifting_restarts_nothing(
    kubectl: Kubectl, namespace: str, operator: RunningOperator, admission_policy: AdmissionPolicy
) -> None:
    kubectl.apply(smd("m", namespace))
    wait_for(lambda: _phase(kubectl, namespace) == "Ready", timeout=60, what="Ready")
    before = _workload(kubectl, namespace)

    kubectl("patch", "smd", "m", "-n", namespace, "--type=merge", "-p", QUARANTINE)
    wait_for(lambda: _phase(kubectl, namespace) == "Quarantined", timeout=30, what="Quarantined")
    kubectl("patch", "smd", "m", "-n", namespace, "--type=merge", "-p", LIFT)
    wait_for(lambda: _phase(kubectl, namespace) == "Ready", timeout=30, what="Ready again")

    after = _workload(kubectl, namespace)
    assert (after["template"], after["replica_sets"]) == (before["template"], before["replica_sets"])
    assert [uid for uid, _ in after["pods"]] == [uid for uid, _ in before["pods"]]
