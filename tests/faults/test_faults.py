"""The operator under faults of its control plane: the leader killed mid-reconcile, kube-apiserver and
etcd killed and restarted, watches that end with 410 Gone, the API server throttling it with 429s.

After each: every SMD converges, each has exactly its children (none lost, none extra), what the
operator does not own is untouched, the processes never exit on their own, and readiness follows an
outage while it lasts.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from faults.conftest import LEASE, RESYNC_SECONDS, Faults, Operator
from support.kube import Kubectl, wait_for
from support.manifests import smd

pytestmark = pytest.mark.integration
# What an SMD without access, storage or clients owns in its namespace, by kind.
CHILDREN = Counter(
    {"Deployment": 1, "Service": 1, "ServiceAccount": 1, "ConfigMap": 1, "Secret": 1, "NetworkPolicy": 1}
)
CHILD_KINDS = ("deployment", "service", "serviceaccount", "configmap", "secret", "networkpolicy")


def apply_fleet(kubectl: Kubectl, namespace: str, count: int, start: int = 0) -> None:
    kubectl.apply([smd(f"m{index}", namespace) for index in range(start, start + count)])


def wait_ready(kubectl: Kubectl, namespace: str, count: int, timeout: float) -> None:
    """Until `count` SMDs are Ready; the failure names those that are not, with their reason."""
    lagging: list[str] = []

    def ready() -> bool:
        items = kubectl.items("smd", namespace)
        lagging[:] = [
            f"{item['metadata']['name']}: {status.get('phase')} "
            + "; ".join(c["message"] for c in status.get("conditions", []) if c["status"] != "True")
            for item in items
            if (status := item.get("status") or {}).get("phase") != "Ready"
        ]
        return len(items) == count and not lagging

    try:
        wait_for(ready, timeout=timeout, interval=1.0)
    except AssertionError as error:
        first = lagging[0].split(":")[0] if lagging else ""
        workload = kubectl.run(
            "get",
            "deployment,replicaset,pod",
            "-n",
            namespace,
            "-l",
            f"app.kubernetes.io/instance={first}",
            "-o",
            "wide",
        ).stdout
        raise AssertionError(
            f"{count} SMDs not Ready within {timeout}s: {lagging[:10]}\n{workload}"
        ) from error


def census(kubectl: Kubectl, namespace: str) -> dict[str, Counter[str]]:
    """Per SMD, how many children of each kind carry its labels."""
    found: dict[str, Counter[str]] = {}
    selector = "app.kubernetes.io/managed-by=secure-model-operator"
    for kind in CHILD_KINDS:
        for item in kubectl.items(kind, namespace, selector):
            owner = item["metadata"]["labels"]["app.kubernetes.io/instance"]
            found.setdefault(owner, Counter())[item["kind"]] += 1
    return found


def assert_exact_children(kubectl: Kubectl, namespace: str, count: int) -> None:
    found = census(kubectl, namespace)
    assert sorted(found) == sorted(f"m{index}" for index in range(count))
    wrong = {name: dict(kinds) for name, kinds in found.items() if kinds != CHILDREN}
    assert not wrong, f"children lost or duplicated: {wrong}"


def plant_foreign(kubectl: Kubectl, namespace: str) -> dict[str, str]:
    """Objects the operator does not own, in the models' namespace; their resourceVersions."""
    kubectl.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "someone-elses", "namespace": namespace},
            },
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": "someone-elses", "namespace": namespace},
                "spec": {"podSelector": {"matchLabels": {"app": "other"}}, "policyTypes": ["Ingress"]},
            },
        ]
    )
    return foreign_versions(kubectl, namespace)


def foreign_versions(kubectl: Kubectl, namespace: str) -> dict[str, str]:
    return {
        kind: kubectl.get(kind, "someone-elses", namespace)["metadata"]["resourceVersion"]
        for kind in ("configmap", "networkpolicy")
    }


def metric(operator: Operator, name: str, **labels: str) -> float:
    _, text = operator.http("/metrics")
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items())
    )


def requests_since(faults: Faults, offset: int, identity: str) -> dict[str, Counter[str]]:
    """Per resource, the verbs of the requests `identity` made after `offset` in the audit log, watches
    left out (they were opened before)."""
    with faults.cluster.audit_log.open("rb") as log:
        log.seek(offset)
        lines = log.read().decode().splitlines()
    asked: dict[str, Counter[str]] = {}
    for line in lines:
        event = json.loads(line)
        if event.get("user", {}).get("username") != identity or event.get("stage") != "ResponseComplete":
            continue
        if event["verb"] == "watch":
            continue
        asked.setdefault(event.get("objectRef", {}).get("resource", event["requestURI"]), Counter())[
            event["verb"]
        ] += 1
    return asked


def leader_of(operators: list[Operator]) -> Operator | None:
    leading = [operator for operator in operators if operator.http("/readyz") == (200, "ok (leading)")]
    return leading[0] if len(leading) == 1 else None


@pytest.mark.parametrize("component", ["kube-apiserver", "etcd"])
def test_a_control_plane_component_killed_and_restarted_is_ridden_out(
    faults: Faults, fault_namespace: str, component: str
) -> None:
    kubectl, namespace = faults.kubectl, fault_namespace
    foreign = plant_foreign(kubectl, namespace)
    operator = faults.operator("solo")
    apply_fleet(kubectl, namespace, 10)
    wait_ready(kubectl, namespace, 10, timeout=120)

    faults.cluster.kill(component)
    try:
        _, body = wait_for(
            lambda: found if (found := operator.http("/readyz"))[0] == 503 else None,
            timeout=3 * LEASE["renewDeadlineSeconds"],
            what="readiness to follow the outage",
        )
        assert "API server" in body or "watching failed" in body, body
        time.sleep(LEASE["leaseDurationSeconds"])  # an outage longer than the Lease
        assert operator.alive
    finally:
        faults.cluster.restart(component)

    wait_for(lambda: operator.http("/readyz") == (200, "ok (leading)"), timeout=90, what="ready again")
    # It still does its job: drift is repaired and a new SMD is realised.
    kubectl("delete", "networkpolicy", "m0-network", "-n", namespace)
    apply_fleet(kubectl, namespace, 1, start=10)
    wait_for(
        lambda: kubectl.get("networkpolicy", "m0-network", namespace), timeout=30, what="the policy restored"
    )
    wait_ready(kubectl, namespace, 11, timeout=120)
    assert_exact_children(kubectl, namespace, 11)
    assert foreign_versions(kubectl, namespace) == foreign
    assert operator.alive


def test_watches_that_end_with_410_gone_relist_and_miss_nothing(faults: Faults, fault_namespace: str) -> None:
    kubectl, namespace = faults.kubectl, fault_namespace
    operator = faults.operator("frozen")
    apply_fleet(kubectl, namespace, 3)
    wait_ready(kubectl, namespace, 3, timeout=90)
    lists_before = metric(operator, "securemodels_api_requests_total", verb="list", kind="NetworkPolicy")
    churn = f"{namespace}-churn"
    kubectl("create", "namespace", churn)

    # Frozen, the operator reads nothing. Meanwhile the API server restarts, so that its watches must
    # resume, and its child goes, and enough else changes that the version they would resume from is
    # compacted away: the restarted API server answers 410 Gone.
    os.kill(operator.process.pid, signal.SIGSTOP)
    try:
        faults.cluster.kill("kube-apiserver")
        faults.cluster.restart("kube-apiserver")
        kubectl("delete", "networkpolicy", "m1-network", "-n", namespace)
        policies = [
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": f"churn-{index}", "namespace": churn},
                "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
            }
            for index in range(150)
        ]
        kubectl.apply(policies)
        kubectl("delete", "networkpolicy", "--all", "-n", churn)
        time.sleep(8)  # a few compaction intervals
    finally:
        os.kill(operator.process.pid, signal.SIGCONT)

    wait_for(
        lambda: kubectl.get("networkpolicy", "m1-network", namespace), timeout=60, what="the policy restored"
    )
    assert (
        metric(operator, "securemodels_api_requests_total", verb="list", kind="NetworkPolicy") > lists_before
    )
    assert "410 Gone" in operator.log.read_text()
    wait_ready(kubectl, namespace, 3, timeout=60)
    assert_exact_children(kubectl, namespace, 3)
    assert operator.alive
    kubectl("delete", "namespace", churn, "--timeout=180s")


def flow_control(identity: str) -> list[dict[str, Any]]:
    """A priority level that admits one request of the identity at a time and rejects the rest (429)."""
    level = "securemodels-throttled"
    return [
        {
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
            "kind": "PriorityLevelConfiguration",
            "metadata": {"name": level},
            "spec": {
                "type": "Limited",
                "limited": {"nominalConcurrencyShares": 1, "limitResponse": {"type": "Reject"}},
            },
        },
        {
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
            "kind": "FlowSchema",
            "metadata": {"name": level},
            "spec": {
                "matchingPrecedence": 100,
                "priorityLevelConfiguration": {"name": level},
                "rules": [
                    {
                        "subjects": [{"kind": "User", "user": {"name": identity}}],
                        "resourceRules": [
                            {
                                "verbs": ["*"],
                                "apiGroups": ["*"],
                                "resources": ["*"],
                                "namespaces": ["*"],
                                "clusterScope": True,
                            }
                        ],
                        "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                    }
                ],
            },
        },
    ]


def rejected(kubectl: Kubectl) -> float:
    text = kubectl("get", "--raw", "/metrics")
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "apiserver_flowcontrol_rejected_requests_total"
        and sample.labels.get("priority_level") == "securemodels-throttled"
    )


def test_throttled_with_429s_for_a_while_it_keeps_going_and_converges(
    faults: Faults, fault_namespace: str
) -> None:
    kubectl, namespace = faults.kubectl, fault_namespace
    foreign = plant_foreign(kubectl, namespace)
    operator = faults.operator("throttled")
    kubectl.apply(flow_control(operator.identity))
    try:
        apply_fleet(kubectl, namespace, 20)
        wait_for(lambda: rejected(kubectl) > 0, timeout=60, what="the API server to refuse with 429")
        time.sleep(5)
        assert operator.alive
    finally:
        for item in flow_control(operator.identity)[::-1]:
            kubectl("delete", item["kind"].lower(), item["metadata"]["name"])

    wait_ready(kubectl, namespace, 20, timeout=180)
    assert_exact_children(kubectl, namespace, 20)
    assert foreign_versions(kubectl, namespace) == foreign
    assert operator.alive
    events = kubectl("get", "events", "-n", namespace, "-o", "json")
    assert json.loads(events)["items"]  # the operator still reported what happened


def test_the_leader_killed_mid_reconcile_of_200_smds_is_replaced_nothing_is_lost_then_nothing_is_asked(
    faults: Faults, fault_namespace: str
) -> None:
    kubectl, namespace = faults.kubectl, fault_namespace
    foreign = plant_foreign(kubectl, namespace)
    operators = [faults.operator("a"), faults.operator("b")]
    first = wait_for(lambda: leader_of(operators), timeout=30, what="a leader")
    apply_fleet(kubectl, namespace, 200)
    wait_for(lambda: len(kubectl.items("deployment", namespace)) >= 60, timeout=120, interval=0.1)

    os.kill(first.process.pid, signal.SIGKILL)
    survivor = next(operator for operator in operators if operator is not first)

    wait_for(
        lambda: survivor.http("/readyz") == (200, "ok (leading)"), timeout=3 * LEASE["leaseDurationSeconds"]
    )
    wait_ready(kubectl, namespace, 200, timeout=420)
    assert_exact_children(kubectl, namespace, 200)
    assert foreign_versions(kubectl, namespace) == foreign
    assert survivor.alive
    wait_for(lambda: len(kubectl.items("policyreports", namespace)) == 1, what="the namespace's report")

    # At rest, two resyncs of the 200 unchanged SMDs ask the API server for nothing but the watches
    # already open and the Lease: no GET, no LIST, no write, no access review (its own audit log says).
    time.sleep(2 * RESYNC_SECONDS)  # the last status writes and Events of the convergence
    start = faults.cluster.audit_log.stat().st_size
    time.sleep(2 * RESYNC_SECONDS + 1)
    asked = requests_since(faults, start, survivor.identity)
    assert asked["leases"], "the window saw no Lease renewal: the audit log is not counting this identity"
    assert {resource: verbs for resource, verbs in asked.items() if resource != "leases"} == {}
