"""Compliance reports on the local control plane, and `securemodels audit` against it.

The operator runs with an identity of its own, so the API server's audit log tells its writes from
everyone else's. Without the PolicyReport CRD it writes none and says so once; with the CRD (Kyverno's,
from its Go module) a namespace with a compliant and a weakened model gets one PolicyReport with a
result per model and control, which follows a changed control, is put back when edited, is never
written while nothing changes, and is not written where someone else holds its name.
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from chart.helm import token_kubeconfig
from localcluster import LocalCluster
from securemodels import metrics
from securemodels.config import LeaderElection, OperatorConfig, PolicyReports
from securemodels.desired.controls.registry import CONTROLS
from securemodels.handlers.runtime import FULL_RESYNC_EVERY
from support.audit import accepted_writes
from support.kube import Kubectl, wait_for
from support.manifests import smd
from support.operator import RESYNC_SECONDS, RunningOperator
from support.tools import report_crds

pytestmark = pytest.mark.integration
REPORT = "secure-model-operator"
WEAKENED = {"mtls": {"minTLSVersion": "1.2"}}
# Asked with a create, but changing nothing.


@dataclass
class Fleet:
    home: str  # the operator's namespace
    models: str  # a compliant and a weakened model
    foreign: str  # someone else holds the report's name here
    identity: str  # the operator's user name in the audit log
    kubeconfig: Path
    operator: RunningOperator
    started: float  # time.monotonic() at the operator's start
    probes: float  # lists of PolicyReports sent in this process before it started


def namespace_manifest(name: str) -> dict[str, Any]:
    labels = {"pod-security.kubernetes.io/enforce": "restricted"}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def report_probes() -> float:
    """Lists of PolicyReports sent by every operator this process ran (the registry is the process's)."""
    labels = {"verb": "list", "kind": "PolicyReport"}
    return metrics.REGISTRY.get_sample_value("securemodels_api_requests_total", labels) or 0.0


def crd_path() -> Path:
    return report_crds() / "wgpolicyk8s.io_policyreports.yaml"


def install_crd(kubectl: Kubectl) -> None:
    kubectl("apply", "--server-side", "-f", str(crd_path()))
    established = '{.status.conditions[?(@.type=="Established")].status}'
    wait_for(
        lambda: kubectl.run("get", "-f", str(crd_path()), "-o", f"jsonpath={established}").stdout == "True",
        what="the PolicyReport CRD to be established",
    )


@pytest.fixture(scope="module")
def fleet(
    cluster: LocalCluster, kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    suffix = uuid.uuid4().hex[:5]
    home, models, foreign = f"rep-home-{suffix}", f"rep-models-{suffix}", f"rep-foreign-{suffix}"
    kubectl.apply([namespace_manifest(name) for name in (home, models, foreign)])
    kubectl("create", "serviceaccount", "operator", "-n", home)
    kubectl(
        "create",
        "clusterrolebinding",
        home,
        "--clusterrole=cluster-admin",
        f"--serviceaccount={home}:operator",
    )
    token = kubectl("create", "token", "operator", "-n", home, "--duration=1h").strip()
    kubeconfig = token_kubeconfig(cluster, token, home, tmp_path_factory.mktemp("reports") / "operator")
    config = OperatorConfig(
        namespace=home,
        resync_seconds=RESYNC_SECONDS,
        watch_namespaces=(home, models, foreign),
        leader_election=LeaderElection(enabled=False),
    )
    kubectl("delete", "-f", str(crd_path()), "--ignore-not-found")  # not installed, to begin with
    started, probes = time.monotonic(), report_probes()
    operator = RunningOperator(kubeconfig, config).start()
    identity = f"system:serviceaccount:{home}:operator"
    yield Fleet(home, models, foreign, identity, kubeconfig, operator, started, probes)
    operator.stop()
    kubectl("delete", "-f", str(crd_path()), "--ignore-not-found", "--wait=false")
    kubectl("delete", "clusterrolebinding", home)
    for name in (home, models, foreign):
        kubectl("delete", "namespace", name, "--wait=false")


def wait_ready(kubectl: Kubectl, namespace: str, *names: str) -> None:
    for name in names:
        wait_for(lambda: kubectl.ready(name, namespace), timeout=60, what=f"{name} Ready")  # noqa: B023


def report(kubectl: Kubectl, namespace: str) -> dict[str, Any] | None:
    found = kubectl.get("policyreports.wgpolicyk8s.io", REPORT, namespace)
    return dict(found) if found else None


def verdicts(found: dict[str, Any] | None) -> dict[tuple[str, str], str]:
    return {
        (item["resources"][0]["name"], item["policy"]): item["result"]
        for item in (found or {}).get("results", [])
    }


def writes(cluster: LocalCluster, identity: str, after: str = "") -> list[dict[str, Any]]:
    """Every write the API server accepted from the identity, received after the RFC 3339 time `after`."""
    return [
        event
        for event in accepted_writes(cluster.audit_log, {identity})
        if event["requestReceivedTimestamp"] > after
    ]


def now_rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".000000Z"


def test_without_the_crd_no_report_is_written_and_it_is_said_once(
    cluster: LocalCluster, kubectl: Kubectl, fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="securemodels.handlers.reports")
    kubectl.apply(smd("early", fleet.models))
    wait_for(lambda: kubectl.ready("early", fleet.models), timeout=60, what="early Ready")
    time.sleep(RESYNC_SECONDS * 5)

    status, readiness = fleet.operator.http("/readyz")
    assert (status, readiness) == (200, "ok (leading)")
    probes = report_probes() - fleet.probes
    # Looked for at start, then after one resync period, two, four...: never in a loop.
    elapsed = time.monotonic() - fleet.started
    assert 2 <= probes <= 2 + math.log2(1 + elapsed / RESYNC_SECONDS)
    records = caplog.get_records("setup") + caplog.get_records("call")
    said = [record for record in records if "no compliance report is written" in record.getMessage()]
    assert len(said) == 1
    events = kubectl.items("events", fleet.home)
    unavailable = [event for event in events if event["reason"] == "ComplianceReportsUnavailable"]
    assert len(unavailable) == 1
    assert unavailable[0]["involvedObject"]["name"] == "securemodels-ca"
    assert "Install its CRD" in unavailable[0]["message"]
    assert not [event for event in writes(cluster, fleet.identity) if "policyreports" in event["requestURI"]]

    # Installed later, it is found at the next look and the namespace gets its report.
    install_crd(kubectl)
    found = wait_for(lambda: report(kubectl, fleet.models), timeout=90, what="the report after the CRD came")
    assert {name for name, _ in verdicts(found)} == {"early"}
    kubectl("delete", "smd", "early", "-n", fleet.models)


def test_a_namespace_report_follows_its_models_and_is_put_back_when_edited(
    kubectl: Kubectl, fleet: Fleet
) -> None:
    kubectl.apply([smd("strict", fleet.models), smd("lenient", fleet.models, **WEAKENED)])
    wait_ready(kubectl, fleet.models, "strict", "lenient")
    controls = [control.NAME for control in CONTROLS]
    expected = {("strict", control): "pass" for control in controls} | {
        ("lenient", control): "warn" if control == "mtls" else "pass" for control in controls
    }

    def complete() -> dict[str, Any] | None:
        got = report(kubectl, fleet.models)
        return got if verdicts(got) == expected else None

    found = wait_for(complete, timeout=30, what="a report of both models")
    assert found["summary"] == {"pass": 2 * len(controls) - 1, "fail": 0, "warn": 1, "error": 0, "skip": 0}
    lenient = next(item for item in found["results"] if item["resources"][0]["name"] == "lenient")
    assert lenient["resources"][0]["uid"] == kubectl.get("smd", "lenient", fleet.models)["metadata"]["uid"]

    # A control changes: the report follows.
    kubectl.apply(smd("lenient", fleet.models))
    wait_for(
        lambda: verdicts(report(kubectl, fleet.models)).get(("lenient", "mtls")) == "pass",
        timeout=60,
        what="the report to follow the mtls control",
    )

    # Someone edits the report to hide a finding: it is put back.
    kubectl.apply(smd("lenient", fleet.models, **WEAKENED))
    wait_for(
        lambda: verdicts(report(kubectl, fleet.models)).get(("lenient", "mtls")) == "warn",
        timeout=60,
        what="the weakening back in the report",
    )
    edited = report(kubectl, fleet.models)
    assert edited is not None
    index = next(
        i
        for i, item in enumerate(edited["results"])
        if (item["resources"][0]["name"], item["policy"]) == ("lenient", "mtls")
    )
    patch = [{"op": "replace", "path": f"/results/{index}/result", "value": "pass"}]
    kubectl("patch", "policyreport", REPORT, "-n", fleet.models, "--type=json", f"-p={json.dumps(patch)}")
    wait_for(
        lambda: verdicts(report(kubectl, fleet.models)).get(("lenient", "mtls")) == "warn",
        timeout=30,
        what="the edited report put back",
    )


def test_an_unchanged_fleet_gets_no_write_during_three_resyncs(
    cluster: LocalCluster, kubectl: Kubectl, fleet: Fleet
) -> None:
    wait_ready(kubectl, fleet.models, "strict", "lenient")
    time.sleep(RESYNC_SECONDS * 2)  # the passes after Ready settle
    before = report(kubectl, fleet.models)
    assert before is not None and len(before["results"]) == 2 * len(CONTROLS)
    reconciles = fleet.operator.metric("securemodels_reconcile_duration_seconds_count") or 0.0
    since = now_rfc3339()

    time.sleep(RESYNC_SECONDS * 3 + 1)
    # Settled SMDs are skipped by resyncs until the full one, which judges both afresh: wait for it.
    wait_for(
        lambda: (
            (fleet.operator.metric("securemodels_reconcile_duration_seconds_count") or 0.0) >= reconciles + 2
        ),
        timeout=RESYNC_SECONDS * (FULL_RESYNC_EVERY + 2),
        what="the full resync",
    )
    written = writes(cluster, fleet.identity, since)
    assert written == [], [(event["verb"], event["requestURI"]) for event in written]
    after = report(kubectl, fleet.models)
    assert after is not None
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    # The positive control: this identity's writes are in the log at all.
    assert [event for event in writes(cluster, fleet.identity) if "policyreports" in event["requestURI"]]


def test_a_report_of_that_name_made_by_someone_else_is_left_alone(
    cluster: LocalCluster, kubectl: Kubectl, fleet: Fleet
) -> None:
    theirs = {
        "apiVersion": "wgpolicyk8s.io/v1alpha2",
        "kind": "PolicyReport",
        "metadata": {"name": REPORT, "namespace": fleet.foreign},
        "results": [{"policy": "theirs", "result": "pass", "source": "someone"}],
    }
    kubectl.apply(theirs)
    version = report(kubectl, fleet.foreign)["metadata"]["resourceVersion"]  # type: ignore[index]
    kubectl.apply(smd("guest", fleet.foreign))
    wait_for(lambda: kubectl.ready("guest", fleet.foreign), timeout=60, what="guest Ready")
    time.sleep(RESYNC_SECONDS * 3)

    found = report(kubectl, fleet.foreign)
    assert found is not None
    assert found["metadata"]["resourceVersion"] == version
    assert found["results"] == theirs["results"]
    assert not [
        event
        for event in writes(cluster, fleet.identity)
        if event["objectRef"].get("namespace") == fleet.foreign and "policyreports" in event["requestURI"]
    ]


def audit(fleet: Fleet, cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "securemodels", "audit", "--kubeconfig", str(cluster.kubeconfig)]
    return subprocess.run([*command, *args], capture_output=True, text=True, check=False)


def test_audit_prints_the_fleet_from_a_kubeconfig(
    cluster: LocalCluster, kubectl: Kubectl, fleet: Fleet
) -> None:
    wait_ready(kubectl, fleet.models, "strict", "lenient")

    table = audit(fleet, cluster, "-n", fleet.models)
    as_json = audit(fleet, cluster, "-n", fleet.models, "-o", "json")
    markdown = audit(fleet, cluster, "-n", fleet.models, "--output", "markdown")

    for result in (table, as_json, markdown):
        assert result.returncode == 1, result.stderr  # lenient is not compliant
    rows = [line.split() for line in table.stdout.splitlines()]
    assert [fleet.models, "lenient", "Ready", "False", "mtls=Weakened"] in rows
    assert [fleet.models, "strict", "Ready", "True", "-"] in rows
    document = json.loads(as_json.stdout)
    assert document["summary"]["models"] == 2
    lenient = next(model for model in document["models"] if model["name"] == "lenient")
    mtls = next(control for control in lenient["controls"] if control["name"] == "mtls")
    assert mtls["status"] == "Weakened"
    assert "164.312(e)(1)" in mtls["requirements"]["hipaa"]
    assert f"| {fleet.models} | lenient | mtls | Weakened |" in markdown.stdout

    compliant = audit(fleet, cluster, "-n", fleet.home)
    assert compliant.returncode == 0, compliant.stderr
    refused = subprocess.run(
        [sys.executable, "-m", "securemodels", "audit", "--kubeconfig", "/nonexistent/kubeconfig"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 2
    assert "cannot list SecureModelDeployments" in refused.stderr


def test_with_openreports_the_report_is_an_openreports_report(
    cluster: LocalCluster, kubectl: Kubectl, fleet: Fleet, tmp_path: Path
) -> None:
    """The setting's other API: the same results in an openreports.io/v1alpha1 Report."""
    crd = report_crds() / "openreports.io_reports.yaml"
    kubectl("apply", "--server-side", "-f", str(crd))
    established = '{.status.conditions[?(@.type=="Established")].status}'
    wait_for(
        lambda: kubectl.run("get", "-f", str(crd), "-o", f"jsonpath={established}").stdout == "True",
        what="the Report CRD to be established",
    )
    home, models = f"{fleet.home}-open", f"{fleet.models}-open"
    kubectl.apply([namespace_manifest(home), namespace_manifest(models)])
    config = OperatorConfig(
        namespace=home,
        resync_seconds=RESYNC_SECONDS,
        watch_namespaces=(home, models),
        leader_election=LeaderElection(enabled=False),
        policy_reports=PolicyReports(api="openreports.io/v1alpha1"),
    )
    operator = RunningOperator(fleet.kubeconfig, config).start()
    try:
        kubectl.apply(smd("open", models, **WEAKENED))
        wait_ready(kubectl, models, "open")
        found = wait_for(
            lambda: kubectl.get("reports.openreports.io", REPORT, models), timeout=30, what="the Report"
        )
        assert kubectl.get("policyreports.wgpolicyk8s.io", REPORT, models) is None
    finally:
        operator.stop()
        for name in (home, models):
            kubectl("delete", "namespace", name, "--wait=false")
        kubectl("delete", "-f", str(crd), "--wait=false")
    assert (found["apiVersion"], found["kind"], found["source"]) == (
        "openreports.io/v1alpha1",
        "Report",
        "secure-model-operator",
    )
    assert verdicts(found) == {
        ("open", control.NAME): "warn" if control.NAME == "mtls" else "pass" for control in CONTROLS
    }
