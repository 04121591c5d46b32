"""Loops and churn: input and refusals meant to make the operator spin, spam or crash.

An SMD that cannot be realised (a name someone else holds, a registry the cluster does not allow, a
Secret that does not exist, an object the API server refuses, a spec that got past the CRD's validation)
must end in one status and one Event, and then cost nothing: no writes, no new Events, no new keys, no
tracebacks, over several resyncs. Environment names the operator sets itself, and duplicates, are refused
at admission. A status edited by hand must not stand.

The operator here manages a pool of namespaces of its own, so that what it writes is this module's alone,
and allows images only from registry.example.com (and the sidecar's registry).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from localcluster import LocalCluster, free_port
from operatorprocess import start_operator
from securemodels.config import LeaderElection, OperatorConfig
from security.attacks import (
    CONTROLS,
    MANAGED,
    THREE_RESYNCS,
    WITHIN_A_RESYNC,
    Model,
    control,
    delete_namespaces,
    events,
    new_namespace,
    ready_condition,
    smd_events,
    try_apply,
    wait_blocked,
    wait_compliant,
)
from support.kube import Kubectl, wait_for
from support.manifests import IMAGE, smd
from support.operator import RESYNC_SECONDS, FakeClock, RunningOperator
from support.paths import CRD, OPERATOR_NAMESPACE

pytestmark = pytest.mark.integration

ALLOWED_REGISTRIES = ("registry.example.com", "docker.io/nginxinc")
# The namespaces the operator manages, one per purpose: few, since it keeps a watch per kind in each.
PURPOSES = ("blocked", "clients", "invalid", "quota", "claims", "pods", "status")


@pytest.fixture(scope="module")
def pool(kubectl: Kubectl) -> Iterator[dict[str, str]]:
    names = {purpose: new_namespace(kubectl, f"lp-{purpose}") for purpose in PURPOSES}
    yield names
    delete_namespaces(kubectl, names.values())


@pytest.fixture(scope="module")
def operator(cluster: LocalCluster, pool: dict[str, str]) -> Iterator[RunningOperator]:
    config = OperatorConfig(
        namespace=OPERATOR_NAMESPACE,
        resync_seconds=RESYNC_SECONDS,
        watch_namespaces=tuple(pool.values()),
        allowed_registries=ALLOWED_REGISTRIES,
        leader_election=LeaderElection(lease_name=f"security-loops-{uuid.uuid4().hex[:5]}"),
    )
    running = RunningOperator(cluster.kubeconfig, config, FakeClock()).start()
    wait_for(lambda: running.http("/readyz")[0] == 200, timeout=60, what="the operator ready")
    yield running
    running.stop()


@pytest.fixture
def managed(pool: dict[str, str], operator: RunningOperator) -> dict[str, str]:
    """The namespaces the operator manages, by purpose."""
    return pool


def writes(operator: RunningOperator) -> float:
    """Every write the operator has sent (creates, replaces, deletes, status patches, Events)."""
    return operator.metric("securemodels_api_writes_total") or 0.0


def version(kubectl: Kubectl, model: Model) -> str:
    return str(kubectl.get("smd", model.name, model.namespace)["metadata"]["resourceVersion"])


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        f"{record.name}: {record.getMessage()}"
        for record in caplog.records
        if record.exc_info and record.name.startswith("securemodels")
    ]


# -------------------------------------------------------------------------------------------- admission


@pytest.mark.parametrize("reserved", ["SECUREMODELS_PORT", "SECUREMODELS_BIND_ADDRESS", "SECUREMODELS_X"])
def test_an_env_name_reserved_for_the_operator_is_refused_at_admission(
    kubectl: Kubectl, namespace: str, reserved: str
) -> None:
    """The operator sets SECUREMODELS_PORT and _BIND_ADDRESS itself: a second value would override
    where the model listens (on every address instead of the loopback only)."""
    refused = try_apply(kubectl, smd("m", namespace, model={"env": [{"name": reserved, "value": "::"}]}))

    assert refused.returncode != 0
    assert "spec.model.env" in refused.stderr and "reserved" in refused.stderr, refused.stderr
    assert kubectl.get("smd", "m", namespace) is None
    accepted = try_apply(kubectl, smd("m", namespace, model={"env": [{"name": "MODEL_PORT", "value": "1"}]}))
    assert accepted.returncode == 0, accepted.stderr


def test_duplicate_env_names_are_refused_at_admission(kubectl: Kubectl, namespace: str) -> None:
    """Kubernetes lets the last of two same-named variables win: a reviewer reading the first is fooled."""
    twice = [{"name": "MODE", "value": "safe"}, {"name": "MODE", "value": "debug"}]
    refused = try_apply(kubectl, smd("m", namespace, model={"env": twice}))
    created = kubectl.run(
        "create", "-f", "-", stdin=yaml.safe_dump(smd("twice", namespace, model={"env": twice}))
    )

    for result in (refused, created):
        assert result.returncode != 0
        assert "spec.model.env" in result.stderr and "Duplicate" in result.stderr, result.stderr
    accepted = try_apply(
        kubectl, smd("m", namespace, model={"env": [twice[0], {"name": "LEVEL", "value": "1"}]})
    )
    assert accepted.returncode == 0, accepted.stderr


# ---------------------------------------------------------------------------------------------- blocked


def test_blocked_smds_write_their_status_and_one_event_then_nothing(
    kubectl: Kubectl, operator: RunningOperator, managed: dict[str, str]
) -> None:
    clients, here = managed["clients"], managed["blocked"]
    taken, foreign, missing = (Model(name, here) for name in ("taken", "foreign", "missing"))
    mtls = {"clients": [{"name": "gateway", "namespace": clients}]}
    kubectl.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "taken-viewer", "namespace": here},
            "rules": [],
        }
    )
    kubectl.apply(
        [
            smd("taken", here, mtls=mtls, access={"viewers": [{"kind": "Group", "name": "auditors"}]}),
            smd("foreign", here, mtls=mtls, model={"image": "quay.io/elsewhere/model@sha256:" + "0f" * 32}),
            smd("missing", here, mtls=mtls, model={"secretFiles": [{"name": "db", "secretName": "absent"}]}),
        ]
    )
    reasons = {model: wait_blocked(kubectl, model)["reason"] for model in (taken, foreign, missing)}
    assert reasons == {taken: "NameTaken", foreign: "RegistryNotAllowed", missing: "ReferenceNotFound"}
    time.sleep(RESYNC_SECONDS)  # whatever the first pass had left to do
    before = {model: version(kubectl, model) for model in reasons}
    written = writes(operator)

    time.sleep(THREE_RESYNCS)

    assert writes(operator) == written, "the operator wrote while every SMD it manages was Blocked"
    for model, reason in reasons.items():
        assert version(kubectl, model) == before[model], f"{reason}: the SMD was written again"
        announced = [item["reason"] for item in smd_events(kubectl, model)]
        assert announced == [reason], f"{reason}: Events {announced}"
    assert kubectl.items("deployment,service,serviceaccount,networkpolicy", here, MANAGED) == []
    delivered = kubectl.items("secret,configmap", clients, MANAGED)
    assert delivered == [], "client certificates were issued for Blocked SMDs"

    # The operator is not merely idle: once a blocker goes, that SMD is served at the next pass.
    kubectl("create", "secret", "generic", "absent", "--from-literal=password=x", "-n", here)
    wait_compliant(kubectl, [missing])
    assert kubectl.get("secret", f"missing.{here}.client-gateway", clients) is not None


# ------------------------------------------------------------------------------------- invalid specs


def _permissive(crd: dict[str, Any]) -> dict[str, Any]:
    """The CRD with every schema replaced by one that accepts anything: what a careless upgrade, or an
    SMD stored before a rule existed, leaves in etcd."""
    loose = copy.deepcopy(crd)
    for item in loose["spec"]["versions"]:
        item["schema"] = {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}
    return loose


def _admits_invalid(kubectl: Kubectl, namespace: str) -> bool:
    probe = smd(f"probe-{uuid.uuid4().hex[:5]}", namespace)
    probe["spec"] = {"mtls": "off"}  # refused by the schema, and by the admission policy's expressions
    return kubectl.run("create", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(probe)).returncode == 0


ADMISSION_BINDINGS = "validatingadmissionpolicybindings"
ADMISSION_POLICY = "app.kubernetes.io/component=admission-policy"


@contextlib.contextmanager
def validation_off(kubectl: Kubectl, namespace: str) -> Iterator[None]:
    """Neither the CRD's schema nor the chart's admission policy (if another test installed it: its
    expressions cannot evaluate a spec of the wrong shape, and refuse it) checks SMDs meanwhile."""
    crd = yaml.safe_load(CRD.read_text())
    bindings = [
        {
            "apiVersion": item["apiVersion"],
            "kind": item["kind"],
            "metadata": {key: item["metadata"][key] for key in ("name", "labels") if key in item["metadata"]},
            "spec": item["spec"],
        }
        for item in kubectl.items(ADMISSION_BINDINGS, selector=ADMISSION_POLICY)
    ]
    if bindings:
        kubectl("delete", ADMISSION_BINDINGS, "-l", ADMISSION_POLICY)
    kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=yaml.safe_dump(_permissive(crd)))
    try:
        wait_for(lambda: _admits_invalid(kubectl, namespace), timeout=30, what="the permissive CRD")
        yield
    finally:
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
        if bindings:
            kubectl.apply(bindings)
        wait_for(lambda: not _admits_invalid(kubectl, namespace), timeout=30, what="the CRD restored")


INVALID = {
    "unpinned-image-and-reserved-env": (
        {
            "model": {
                "image": "registry.example.com/ml/fraud:latest",
                "env": [{"name": "SECUREMODELS_PORT", "value": "1"}],
            }
        },
        "spec.model.image",
    ),
    "mtls-is-a-string": ({"model": {"image": IMAGE}, "mtls": "off"}, "spec.mtls"),
    "no-model-at-all": ({"network": {"allowIngressFromAnywhere": True}}, "spec.model"),
}


def test_an_smd_stored_without_validation_is_blocked_once_without_a_loop_or_a_traceback(
    kubectl: Kubectl, operator: RunningOperator, managed: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    here = managed["invalid"]
    models = {
        key: Model(name, here) for key, name in zip(INVALID, ("unpinned", "stringy", "bare"), strict=True)
    }
    with validation_off(kubectl, here):
        for key, (spec, _) in INVALID.items():
            manifest = smd(models[key].name, here)
            manifest["spec"] = spec
            kubectl("create", "-f", "-", stdin=yaml.safe_dump(manifest))
        blocked = {key: wait_blocked(kubectl, model) for key, model in models.items()}
        time.sleep(RESYNC_SECONDS)
        before = {key: version(kubectl, model) for key, model in models.items()}
        written = writes(operator)

        time.sleep(THREE_RESYNCS)
        # Namespaces come and go all the time; each one is news to the operator's routing of changes.
        delete_namespaces(kubectl, [new_namespace(kubectl, "lp-churn")])
        time.sleep(RESYNC_SECONDS)

        for key, (_, field_name) in INVALID.items():
            assert blocked[key]["reason"] == "InvalidSpec", (key, blocked[key])
            assert field_name in blocked[key]["message"], (key, blocked[key]["message"])
            assert version(kubectl, models[key]) == before[key], f"{key}: written again"
            assert [item["reason"] for item in smd_events(kubectl, models[key])] == ["InvalidSpec"], key
        assert kubectl.items("deployment,service,serviceaccount,networkpolicy", here, MANAGED) == []
        assert writes(operator) == written
        assert tracebacks(caplog) == []


@contextlib.contextmanager
def operator_process(cluster: LocalCluster, workdir: Path, namespaces: list[str]) -> Iterator[int]:
    """`securemodels run` as its own process, managing `namespaces`; yields its HTTP port."""
    settings = {
        "namespace": OPERATOR_NAMESPACE,
        "resyncSeconds": RESYNC_SECONDS,
        "watchNamespaces": namespaces,
    }
    port = free_port()
    process = start_operator(workdir, settings, port, cluster.kubeconfig)
    try:
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


def _process_metric(port: int, name: str, **labels: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return sum(
        float(sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items())
    )


def test_an_invalid_smd_the_operator_first_sees_under_the_restored_crd_is_announced_once(
    kubectl: Kubectl, cluster: LocalCluster, tmp_path: Path
) -> None:
    """The API server refuses even a status for an object its schema rejects: the operator cannot say
    InvalidSpec in the status, but must still say it once in an Event, and stop trying."""
    namespace = new_namespace(kubectl, "lp-restored")
    model = Model("m", namespace)
    try:
        with validation_off(kubectl, namespace):
            manifest = smd("m", namespace)
            manifest["spec"]["model"]["image"] = "registry.example.com/ml/fraud:latest"
            kubectl("create", "-f", "-", stdin=yaml.safe_dump(manifest))
        with operator_process(cluster, tmp_path, [namespace]) as port:

            def announced() -> list[Any]:
                return [item for item in smd_events(kubectl, model) if item["reason"] == "InvalidSpec"]

            try:
                wait_for(announced, timeout=30, what="an InvalidSpec Event")
            except AssertionError:
                tried = _process_metric(port, "securemodels_api_writes_total", kind="SecureModelDeployment")
                raise AssertionError(
                    f"no InvalidSpec Event; the operator tried {tried:.0f} status writes, "
                    f"status now {kubectl.status('m', namespace)}"
                ) from None
            time.sleep(THREE_RESYNCS)
            tried = _process_metric(port, "securemodels_api_writes_total", kind="SecureModelDeployment")

        assert len(smd_events(kubectl, model)) == len(announced()) == 1
        assert "spec.model.image" in announced()[0]["message"]
        assert tried <= 1, f"{tried:.0f} status writes for one invalid SMD"
    finally:
        delete_namespaces(kubectl, [namespace])


def _readiness(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError as error:
        return 0, str(error)


def test_an_operator_managing_many_namespaces_still_serves_them(
    kubectl: Kubectl, cluster: LocalCluster, tmp_path: Path
) -> None:
    """A namespace list is how a cluster admin narrows the operator; a longer list must not silence it
    (it watches every kind it judges in each namespace)."""
    namespaces = [new_namespace(kubectl, "lp-many") for _ in range(10)]
    try:
        with operator_process(cluster, tmp_path, namespaces) as port:
            kubectl.apply(smd("m", namespaces[-1]))
            seen: list[tuple[int, str]] = []

            def ready() -> bool:
                seen[:] = [_readiness(port)]
                return seen[0][0] == 200

            try:
                wait_for(ready, timeout=10, interval=0.5, what="the operator ready")
                wait_compliant(kubectl, [Model("m", namespaces[-1])], timeout=15)
            except AssertionError:
                raise AssertionError(
                    f"an operator managing {len(namespaces)} namespaces never served an SMD in them: "
                    f"readiness {_readiness(port)}, status {kubectl.status('m', namespaces[-1])}"
                ) from None
    finally:
        delete_namespaces(kubectl, namespaces)


# ---------------------------------------------------------------------------------- the server refuses


def _encrypted_class(kubectl: Kubectl) -> str:
    name = f"loops-{uuid.uuid4().hex[:5]}"
    kubectl.apply(
        [
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {"name": name},
                "provisioner": "ebs.csi.aws.com",
                "parameters": {"encrypted": "true"},
                "volumeBindingMode": "Immediate",
            },
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": name},
                "spec": {
                    "storageClassName": name,
                    "capacity": {"storage": "1Gi"},
                    "accessModes": ["ReadWriteOnce"],
                    "csi": {"driver": "ebs.csi.aws.com", "volumeHandle": f"vol-{name}"},
                },
            },
        ]
    )
    return name


@dataclass(frozen=True)
class Refusal:
    refused: dict[str, Any]  # the spec the API server refuses an object of
    accepted: dict[str, Any]  # a spec it accepts, once `lift` has run
    server_says: str  # part of the API server's message
    lift: Callable[[], None]


def _delete(kubectl: Kubectl, kind: str, name: str, namespace: str) -> None:
    kubectl("delete", kind, name, "-n", namespace)


def _quota_on_deployments(kubectl: Kubectl, namespace: str) -> Refusal:
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "no-deployments", "namespace": namespace},
            "spec": {"hard": {"count/deployments.apps": "0"}},
        }
    )
    return Refusal(
        refused={},
        accepted={"model": {"env": [{"name": "RETRY", "value": "1"}]}},
        server_says="exceeded quota",
        lift=lambda: _delete(kubectl, "resourcequota", "no-deployments", namespace),
    )


def _limit_on_claims(kubectl: Kubectl, namespace: str) -> Refusal:
    storage_class = _encrypted_class(kubectl)
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "LimitRange",
            "metadata": {"name": "small-claims", "namespace": namespace},
            "spec": {"limits": [{"type": "PersistentVolumeClaim", "max": {"storage": "1Gi"}}]},
        }
    )
    return Refusal(
        refused={"storage": {"storageClassName": storage_class, "size": "5Gi"}},
        accepted={"storage": {"storageClassName": storage_class, "size": "1Gi"}},
        server_says="maximum storage usage per PersistentVolumeClaim is 1Gi",
        lift=lambda: None,
    )


@pytest.mark.parametrize(
    ("purpose", "refusal"),
    [("quota", _quota_on_deployments), ("claims", _limit_on_claims)],
    ids=["quota", "limit-range"],
)
def test_an_object_the_api_server_refuses_blocks_once_with_the_servers_message(
    kubectl: Kubectl,
    operator: RunningOperator,
    managed: dict[str, str],
    purpose: str,
    refusal: Callable[[Kubectl, str], Refusal],
) -> None:
    model = Model("m", managed[purpose])
    chosen = refusal(kubectl, model.namespace)
    kubectl.apply(smd("m", model.namespace, **chosen.refused))

    blocked = wait_blocked(kubectl, model)
    time.sleep(RESYNC_SECONDS)
    before = version(kubectl, model)
    time.sleep(THREE_RESYNCS)  # the operator tries again, backing off

    assert blocked["reason"] == "RefusedByAPIServer", blocked
    assert chosen.server_says in blocked["message"], blocked["message"]
    assert version(kubectl, model) == before
    announced = [item["reason"] for item in smd_events(kubectl, model)]
    assert announced == ["RefusedByAPIServer"], f"Events {announced}"
    assert (
        kubectl.items("deployment,service,serviceaccount,networkpolicy,pvc", model.namespace, MANAGED) == []
    )

    chosen.lift()
    kubectl.apply(smd("m", model.namespace, **chosen.accepted))
    wait_compliant(kubectl, [model])


def test_pods_a_limit_range_refuses_are_reported_with_the_servers_message(
    kubectl: Kubectl, operator: RunningOperator, managed: dict[str, str]
) -> None:
    """The Deployment is accepted; the pods its ReplicaSet makes are not. The model never runs, and the
    SMD must say why rather than go on rolling out."""
    namespace = managed["pods"]
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "LimitRange",
            "metadata": {"name": "small-pods", "namespace": namespace},
            "spec": {"limits": [{"type": "Container", "max": {"memory": "1Gi"}}]},
        }
    )
    small = {"model": {"resources": {"limits": {"cpu": "1", "memory": "768Mi"}}}}
    kubectl.apply([smd("large", namespace), smd("small", namespace, **small)])

    wait_compliant(kubectl, [Model("small", namespace)])  # the positive control: within the limit
    large = Model("large", namespace)

    def explained() -> dict[str, Any] | None:
        ready = ready_condition(kubectl, large)
        return ready if "maximum memory usage" in ready.get("message", "") else None

    try:
        wait_for(explained, timeout=WITHIN_A_RESYNC, what="the refusal reported")
    except AssertionError:
        phase = kubectl.status("large", namespace).get("phase")
        said = ready_condition(kubectl, large).get("message")
        raise AssertionError(f"the model's pods are refused, yet the SMD says {phase}: {said}") from None


# ----------------------------------------------------------------------------------- forged statuses


def _forged(status: dict[str, Any]) -> dict[str, Any]:
    """The status an attacker with status rights writes: everything passing."""
    forged = copy.deepcopy(status)
    forged["phase"], forged["compliant"] = "Ready", True
    for item in forged.get("controls") or []:
        item.update(status="Pass", reason="Forged", message="all good")
    for item in forged.get("conditions") or []:
        item.update(status="True", reason="Forged", message="all good")
    if not forged.get("controls"):
        forged["controls"] = [
            {"name": name, "status": "Pass", "reason": "Forged", "message": "all good"} for name in CONTROLS
        ]
        forged["conditions"] = [
            *(forged.get("conditions") or []),
            {
                "type": "Compliant",
                "status": "True",
                "reason": "Forged",
                "message": "all good",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            },
        ]
    return forged


def _forge(kubectl: Kubectl, model: Model) -> dict[str, Any]:
    """The status as the server stored the forgery (a later read may already find it put right)."""
    status = kubectl.get("smd", model.name, model.namespace)["status"]
    body = json.dumps({"status": _forged(status)})
    stored = kubectl(
        "patch", "smd", model.name, "-n", model.namespace, "--subresource=status", "--type=merge", "-p", body,
        "-o", "json",
    )  # fmt: skip
    return dict(json.loads(stored)["status"])


def test_a_status_forged_by_hand_is_put_right_within_a_resync(
    kubectl: Kubectl, operator: RunningOperator, managed: dict[str, str]
) -> None:
    model = Model("degraded", managed["status"])
    kubectl.apply(smd(model.name, model.namespace))
    wait_compliant(kubectl, [model])
    kubectl.apply(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "allow-all", "namespace": model.namespace},
            "spec": {
                "podSelector": {"matchLabels": {"app.kubernetes.io/instance": model.name}},
                "policyTypes": ["Ingress"],
                "ingress": [{}],
            },
        }
    )
    wait_for(
        lambda: (control(kubectl, model, "network-isolation") or {}).get("status") == "Fail", what="Fail"
    )

    assert _forge(kubectl, model)["compliant"] is True

    wait_for(
        lambda: (
            (control(kubectl, model, "network-isolation") or {}).get("status") == "Fail"
            and kubectl.status(model.name, model.namespace).get("compliant") is False
        ),
        timeout=WITHIN_A_RESYNC,
        what="the forged status put right",
    )
    settled = version(kubectl, model)
    time.sleep(2 * RESYNC_SECONDS)
    assert version(kubectl, model) == settled, "the operator keeps rewriting the status"
    assert kubectl.status(model.name, model.namespace)["phase"] == "Degraded"


def test_a_status_forged_on_a_blocked_smd_does_not_stand(
    kubectl: Kubectl, operator: RunningOperator, managed: dict[str, str]
) -> None:
    """A Blocked SMD keeps the verdicts it had; those must be the operator's, not whoever wrote last."""
    model = Model("frozen", managed["status"])
    kubectl.apply(
        smd(model.name, model.namespace, model={"secretFiles": [{"name": "db", "secretName": "absent"}]})
    )
    wait_blocked(kubectl, model)

    assert _forge(kubectl, model)["compliant"] is True

    def put_right() -> bool:
        status = kubectl.status(model.name, model.namespace)
        claims = [item for item in status.get("controls") or [] if item.get("reason") == "Forged"]
        return status.get("compliant") is not True and status.get("phase") == "Blocked" and not claims

    try:
        wait_for(put_right, timeout=WITHIN_A_RESYNC, what="the forged status put right")
    except AssertionError:
        status = kubectl.status(model.name, model.namespace)
        claimed = [(item["name"], item["status"], item["reason"]) for item in status.get("controls") or []]
        raise AssertionError(
            f"no model runs, yet the SMD still says phase={status.get('phase')} "
            f"compliant={status.get('compliant')} controls={claimed}"
        ) from None
    assert events(kubectl, model.namespace, model.name)  # the Blocked SMD announced itself
