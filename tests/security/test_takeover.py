"""Takeover and deletion: making the operator adopt, change or delete what is not its own.

Someone who may create objects in a namespace (or in a client's namespace) tries to get them adopted by
the operator: by creating them first under the names an SMD will need, by forging the labels the operator
goes by, or by replacing one of its children with their own the moment it is deleted. The operator must
stop at NameTaken and write nothing, never add an ownerReference, never change or delete such an object
(not when the SMD is deleted, nor when a field is dropped), and never let a swap hide what the swapped-in
object does. SMDs whose names share a prefix must not collide, and a model's volume must outlive the
removal of spec.storage unless the SMD asks otherwise.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from security.attacks import (
    MANAGED,
    WITHIN_A_RESYNC,
    Model,
    compliance,
    delete_namespaces,
    fingerprint,
    launch,
    new_namespace,
    patch,
    ready_condition,
    smd_events,
    stored,
    wait_blocked,
    wait_compliant,
)
from support.kube import Kubectl, wait_for
from support.manifests import smd
from support.operator import RESYNC_SECONDS, RunningOperator

pytestmark = pytest.mark.integration

RBAC = "rbac.authorization.k8s.io"
ACCESS = {
    "viewers": [{"kind": "Group", "name": "auditors"}],
    "deployers": [{"kind": "User", "name": "alice"}],
}


def _storage_class(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": name},
        "provisioner": "ebs.csi.aws.com",
        "parameters": {"encrypted": "true", "type": "gp3"},
        "volumeBindingMode": "Immediate",
    }


def _volume(name: str, storage_class: str) -> dict[str, Any]:
    """A pre-provisioned volume, so that a claim binds without a CSI driver; Retain keeps its data."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {
            "storageClassName": storage_class,
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "csi": {"driver": "ebs.csi.aws.com", "volumeHandle": f"vol-{name}"},
        },
    }


@pytest.fixture(scope="module")
def encrypted_class(kubectl: Kubectl) -> Iterator[str]:
    name = f"takeover-{uuid.uuid4().hex[:5]}"
    volumes = [f"{name}-{index}" for index in range(7)]
    kubectl.apply([_storage_class(name), *(_volume(volume, name) for volume in volumes)])
    yield name
    kubectl.run("delete", "pv", *volumes, "--wait=false", "--ignore-not-found")
    kubectl.run("delete", "storageclass", name, "--ignore-not-found")


# ----------------------------------------------------------------------------------- names held first


@dataclass(frozen=True)
class Squat:
    """An object someone else makes first, under a name the SMD will need."""

    kind: str
    name: str  # of the object, for SMD `m`
    spec: dict[str, Any]  # what makes the SMD need it
    in_client_namespace: bool = False

    def manifest(self, namespace: str) -> dict[str, Any]:
        metadata = {"name": self.name, "namespace": namespace, "labels": {"app": "theirs"}}
        bodies: dict[str, dict[str, Any]] = {
            "ServiceAccount": {"apiVersion": "v1"},
            "Service": {"apiVersion": "v1", "spec": {"selector": {"app": "theirs"}, "ports": [{"port": 80}]}},
            "Role": {
                "apiVersion": f"{RBAC}/v1",
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
            },
            "Secret": {"apiVersion": "v1", "type": "Opaque", "stringData": {"theirs": "yes"}},
            "ConfigMap": {"apiVersion": "v1", "data": {"theirs": "yes"}},
            "PersistentVolumeClaim": {
                "apiVersion": "v1",
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
            },
            "Deployment": {
                "apiVersion": "apps/v1",
                "spec": {
                    "replicas": 0,
                    "selector": {"matchLabels": {"app": "theirs"}},
                    "template": {
                        "metadata": {"labels": {"app": "theirs"}},
                        "spec": {
                            "containers": [
                                {"name": "c", "image": "registry.example.com/theirs@sha256:" + "1" * 64}
                            ]
                        },
                    },
                },
            },
        }
        return {"kind": self.kind, "metadata": metadata, **bodies[self.kind]}


CLIENT = "gateway"
SQUATS = {
    "service-account": Squat("ServiceAccount", "m", {}),
    "service": Squat("Service", "m", {}),
    "deployment": Squat("Deployment", "m", {}),
    "tls-secret": Squat("Secret", "m-tls", {}),
    "viewer-role": Squat("Role", "m-viewer", {"access": ACCESS}),
    "volume-claim": Squat(
        "PersistentVolumeClaim", "m-models", {"storage": {"size": "1Gi", "storageClassName": "-"}}
    ),
    "client-secret": Squat(
        "Secret", "m.{ns}.client-gateway", {"mtls": {"clients": [{"name": CLIENT}]}}, True
    ),
    "ca-bundle": Squat("ConfigMap", "m.{ns}.ca-bundle", {"mtls": {"clients": [{"name": CLIENT}]}}, True),
}


@dataclass
class Held:
    """What was seen of one squat."""

    model: Model
    where: str  # namespace of the foreign object
    name: str
    before: dict[str, Any]
    blocked: dict[str, Any] | None = None
    error: str = ""
    after_block: dict[str, Any] | None = None
    events_at_block: list[str] = field(default_factory=list)  # reasons of the Events about the SMD
    events_later: list[str] = field(default_factory=list)
    children_later: list[str] = field(default_factory=list)
    after_delete: dict[str, Any] | None = None
    twin: str = ""  # how the same SMD fared where nobody held the name first: "" when compliant


def _spec_for(squat: Squat, client_namespace: str, storage_class: str) -> dict[str, Any]:
    text = json.dumps(squat.spec).replace('"-"', json.dumps(storage_class))
    spec: dict[str, Any] = json.loads(text)
    for client in spec.get("mtls", {}).get("clients", []):
        client["namespace"] = client_namespace
    return spec


@pytest.fixture(scope="module")
def squatted(kubectl: Kubectl, operator: RunningOperator, encrypted_class: str) -> Iterator[dict[str, Held]]:
    """Every squat at once: the foreign objects first, then the SMDs that need their names; beside each,
    a twin of the SMD where nobody holds the name, which must be served."""
    namespaces: list[str] = []
    held: dict[str, Held] = {}
    try:
        placed = {
            key: (f"tk-held-{uuid.uuid4().hex[:6]}", f"tk-client-{uuid.uuid4().hex[:6]}") for key in SQUATS
        }
        twins = {
            key: (f"tk-twin-{uuid.uuid4().hex[:6]}", f"tk-twin-client-{uuid.uuid4().hex[:6]}")
            for key in SQUATS
        }
        namespaces = [name for pairs in (placed, twins) for pair in pairs.values() for name in pair]
        kubectl.apply(
            [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}} for name in namespaces]
        )
        theirs, models = [], []
        for key, squat in SQUATS.items():
            namespace, client_namespace = placed[key]
            where = client_namespace if squat.in_client_namespace else namespace
            manifest = squat.manifest(where)
            manifest["metadata"]["name"] = squat.name.format(ns=namespace)
            if squat.kind == "PersistentVolumeClaim":
                manifest["spec"]["storageClassName"] = encrypted_class
            theirs.append(manifest)
            models.append(smd("m", namespace, **_spec_for(squat, client_namespace, encrypted_class)))
            twin, twin_clients = twins[key]
            models.append(smd("m", twin, **_spec_for(squat, twin_clients, encrypted_class)))
        kubectl.apply(theirs)
        for key, squat in SQUATS.items():
            namespace, client_namespace = placed[key]
            where = client_namespace if squat.in_client_namespace else namespace
            name = squat.name.format(ns=namespace)
            held[key] = Held(
                Model("m", namespace), where, name, stored(kubectl, squat.kind, name, where) or {}
            )
        kubectl.apply(models)
        for key, squat in SQUATS.items():
            entry = held[key]
            try:
                entry.blocked = wait_blocked(kubectl, entry.model)
            except AssertionError as error:
                entry.error = str(error)
            entry.after_block = stored(kubectl, squat.kind, entry.name, entry.where)
            entry.events_at_block = [item["reason"] for item in smd_events(kubectl, entry.model)]
        try:
            wait_compliant(kubectl, [Model("m", twin) for twin, _ in twins.values()], timeout=40)
        except AssertionError as error:
            for key, (twin, _) in twins.items():
                if twin in str(error):
                    held[key].twin = str(error)
        time.sleep(RESYNC_SECONDS)
        for entry in held.values():
            entry.events_later = [item["reason"] for item in smd_events(kubectl, entry.model)]
            entry.children_later = [
                f"{item['kind']}/{item['metadata']['name']}"
                for item in kubectl.items(
                    "all,secrets,configmaps,serviceaccounts,roles,rolebindings,networkpolicies,pvc",
                    entry.model.namespace,
                    MANAGED,
                )
            ]
            kubectl("delete", "smd", "m", "-n", entry.model.namespace, "--wait=false")
        time.sleep(RESYNC_SECONDS * 1.5)
        for key, squat in SQUATS.items():
            entry = held[key]
            entry.after_delete = stored(kubectl, squat.kind, entry.name, entry.where)
        yield held
    finally:
        delete_namespaces(kubectl, namespaces)


def _comparable(item: dict[str, Any] | None) -> Any:
    """The object as stored, byte for byte, where no controller keeps anything of it current; else all
    of it but what those controllers keep (a Deployment's revision, a claim's binding)."""
    if item is None or item["kind"] not in ("Deployment", "PersistentVolumeClaim"):
        return item
    return json.loads(fingerprint(item) or "null")


@pytest.mark.parametrize("key", list(SQUATS))
def test_a_name_someone_else_holds_blocks_the_smd_and_their_object_is_never_touched(
    squatted: dict[str, Held], key: str
) -> None:
    held, squat = squatted[key], SQUATS[key]

    assert not held.twin, f"the same SMD is not served even where nobody holds the name: {held.twin}"
    assert held.blocked is not None, f"the SMD was never Blocked: {held.error}"
    assert held.blocked["reason"] == "NameTaken", held.blocked
    assert f"{squat.kind} {held.where}/{held.name}" in held.blocked["message"]
    assert _comparable(held.after_block) == _comparable(held.before), "the foreign object was changed"
    assert not (held.after_block or {}).get("metadata", {}).get("ownerReferences")
    assert held.children_later == [], f"written while Blocked: {held.children_later}"
    assert held.events_at_block == held.events_later == ["NameTaken"], (
        f"Events: {held.events_at_block} when Blocked, {held.events_later} later"
    )
    assert held.after_delete is not None, "deleting the SMD deleted the foreign object"
    assert _comparable(held.after_delete) == _comparable(held.before), "deleting the SMD changed it"


# -------------------------------------------------------------------------------- prefixes and names


def test_smds_whose_names_extend_each_others_do_not_collide(
    kubectl: Kubectl, operator: RunningOperator
) -> None:
    namespace = new_namespace(kubectl, "tk-prefix")
    names = ["team", "team-viewer", "team-tls", "team-models"]
    try:
        kubectl.apply([smd(name, namespace, access=ACCESS) for name in names])
        wait_compliant(kubectl, [Model(name, namespace) for name in names])
        for name in names:
            owned = {
                f"{item['kind']}/{item['metadata']['name']}"
                for item in kubectl.children(name, namespace)
                if item["metadata"].get("ownerReferences", [{}])[0].get("name") == name
            }
            assert {f"Role/{name}-viewer", f"Role/{name}-deployer", f"Secret/{name}-tls"} <= owned, owned
            assert f"Deployment/{name}" in owned
    finally:
        delete_namespaces(kubectl, [namespace])


def test_a_name_the_smd_does_not_use_does_not_block_it_until_it_does(
    kubectl: Kubectl, namespace: str, operator: RunningOperator
) -> None:
    kubectl.apply(
        {
            "apiVersion": f"{RBAC}/v1",
            "kind": "Role",
            "metadata": {"name": "m-viewer", "namespace": namespace},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
        }
    )
    before = stored(kubectl, "role", "m-viewer", namespace)
    kubectl.apply(smd("m", namespace))

    wait_for(
        lambda: kubectl.status("m", namespace).get("phase") in ("Ready", "Blocked"),
        timeout=60,
        what="m settled",
    )
    assert kubectl.status("m", namespace).get("phase") == "Ready", ready_condition(
        kubectl, Model("m", namespace)
    )

    kubectl.apply(smd("m", namespace, access=ACCESS))  # now it needs Role m-viewer
    blocked = wait_blocked(kubectl, Model("m", namespace))
    assert blocked["reason"] == "NameTaken" and f"Role {namespace}/m-viewer" in blocked["message"]
    assert stored(kubectl, "role", "m-viewer", namespace) == before


# ------------------------------------------------------------------------------------- forged labels


def _settled(kubectl: Kubectl, model: Model) -> dict[str, Any]:
    """The Ready condition once the operator has judged the SMD's current generation and is done."""

    def probe() -> dict[str, Any] | None:
        found = kubectl.get("smd", model.name, model.namespace)
        status = found.get("status") or {}
        ready = kubectl.condition(found, "Ready")
        current = status.get("observedGeneration") == found["metadata"]["generation"]
        return ready if current and status.get("phase") != "Progressing" else None

    return wait_for(probe, timeout=30, what=f"{model} judged")


def _owner_labels(kubectl: Kubectl, model: Model) -> dict[str, str]:
    uid = kubectl.get("smd", model.name, model.namespace)["metadata"]["uid"]
    return {
        "app.kubernetes.io/managed-by": "secure-model-operator",
        "app.kubernetes.io/component": "mtls-client",
        "app.kubernetes.io/instance": model.name,
        "securemodels.io/owner-namespace": model.namespace,
        "securemodels.io/owner-name": model.name,
        "securemodels.io/owner-uid": uid,
    }


def test_forged_owner_labels_do_not_let_the_operator_delete_someone_elses_secret(
    kubectl: Kubectl, operator: RunningOperator
) -> None:
    """The operator deletes the client certificates it delivered once their client is dropped; labels
    anyone can write must not be enough to have it delete any other Secret."""
    elsewhere = new_namespace(kubectl, "tk-victim")
    (model,) = launch(
        kubectl, "tk-forged", [{"mtls": {"clients": [{"name": CLIENT, "namespace": elsewhere}]}}]
    )
    try:
        wait_compliant(kubectl, [model])
        delivered = f"m.{model.namespace}.client-{CLIENT}"
        assert kubectl.get("secret", delivered, elsewhere) is not None
        kubectl(
            "create", "secret", "generic", "payroll-db", "--from-literal=password=hunter2", "-n", elsewhere
        )
        kubectl(
            "label",
            "secret",
            "payroll-db",
            "-n",
            elsewhere,
            *(f"{k}={v}" for k, v in _owner_labels(kubectl, model).items()),
        )
        victim = stored(kubectl, "secret", "payroll-db", elsewhere)

        # The positive control: dropping the client removes what the operator did deliver.
        kubectl.apply(smd("m", model.namespace))
        wait_for(
            lambda: kubectl.get("secret", delivered, elsewhere) is None,
            timeout=WITHIN_A_RESYNC,
            what="delivery removed",
        )
        time.sleep(2 * RESYNC_SECONDS)

        assert stored(kubectl, "secret", "payroll-db", elsewhere) == victim, (
            "the operator deleted or changed it"
        )
    finally:
        delete_namespaces(kubectl, [model.namespace, elsewhere])


def test_forged_owner_labels_do_not_make_a_prepared_volume_the_models(
    kubectl: Kubectl, operator: RunningOperator, encrypted_class: str
) -> None:
    """Someone who may create claims prepares one with their own files under the name the model's
    volume will have, labelled as the operator labels a volume it keeps; then storage is added."""
    (model,) = launch(kubectl, "tk-volume", [{}])
    try:
        wait_compliant(kubectl, [model])
        labels = {**_owner_labels(kubectl, model), "app.kubernetes.io/component": "storage"}
        kubectl.apply(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "m-models", "namespace": model.namespace, "labels": labels},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": encrypted_class,
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            }
        )
        prepared = stored(kubectl, "pvc", "m-models", model.namespace)

        kubectl.apply(smd("m", model.namespace, storage={"size": "1Gi", "storageClassName": encrypted_class}))

        judged = _settled(kubectl, model)
        claim = stored(kubectl, "pvc", "m-models", model.namespace)
        volumes = kubectl.get("deployment", "m", model.namespace)["spec"]["template"]["spec"]["volumes"]
        mounted = [volume["name"] for volume in volumes if "persistentVolumeClaim" in volume]
        written = (claim or {}).get("metadata", {}).get("annotations", {})
        assert judged["reason"] == "NameTaken", (
            f"the prepared claim was taken for the model's own: Ready reason {judged['reason']}, "
            f"mounted as {mounted}, annotations now {sorted(written)}"
        )
        assert not mounted
        assert _comparable(claim) == _comparable(prepared)
    finally:
        delete_namespaces(kubectl, [model.namespace])


# ------------------------------------------------------------------------------------------- swaps


def _disown_policy(kubectl: Kubectl, model: Model) -> tuple[str, str]:
    allow_all = {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [{}], "egress": [{}]}
    body = [
        {"op": "remove", "path": "/metadata/ownerReferences"},
        {"op": "replace", "path": "/spec", "value": allow_all},
    ]
    patch(kubectl, "networkpolicy", "m-network", model.namespace, body, "json")
    return "networkpolicy", "m-network"


def _disown_service(kubectl: Kubectl, model: Model) -> tuple[str, str]:
    body = [
        {"op": "remove", "path": "/metadata/ownerReferences"},
        {"op": "replace", "path": "/spec/type", "value": "NodePort"},
        {
            "op": "replace",
            "path": "/spec/ports",
            "value": [{"name": "plain", "port": 80, "targetPort": 8080}],
        },
    ]
    patch(kubectl, "service", "m", model.namespace, body, "json")
    return "service", "m"


@pytest.mark.parametrize("disown", [_disown_policy, _disown_service], ids=["network-policy", "service"])
def test_a_child_disowned_and_rewritten_is_blocked_and_reported_not_trusted(
    kubectl: Kubectl, operator: RunningOperator, disown: Callable[[Kubectl, Model], tuple[str, str]]
) -> None:
    """One request takes the object from the operator (no ownerReference: someone else's, so it must
    not be touched) and opens the model with it. Left alone, yes; trusted, no."""
    (model,) = launch(kubectl, "tk-disown", [{}])
    try:
        wait_compliant(kubectl, [model])

        kind, name = disown(kubectl, model)
        theirs = stored(kubectl, kind, name, model.namespace)

        blocked = wait_blocked(kubectl, model)
        assert blocked["reason"] == "NameTaken", blocked

        def reported() -> bool:
            found = kubectl.get("smd", "m", model.namespace)
            verdict = kubectl.control(found, "network-isolation") or {}
            return (
                verdict.get("status") == "Fail"
                and found["status"].get("compliant") is not True
                and compliance(operator, model, "network-isolation") == 0.0
            )

        try:
            wait_for(reported, timeout=WITHIN_A_RESYNC, what="network-isolation Fail")
        except AssertionError:
            found = kubectl.get("smd", "m", model.namespace)
            verdict = kubectl.control(found, "network-isolation")
            raise AssertionError(
                f"the rewritten {kind} opens the model, yet network-isolation is {verdict}, "
                f"compliant={found['status'].get('compliant')}, "
                f"metric={compliance(operator, model, 'network-isolation')}"
            ) from None
        assert stored(kubectl, kind, name, model.namespace) == theirs
    finally:
        delete_namespaces(kubectl, [model.namespace])


def test_an_smd_kept_blocked_does_not_go_on_claiming_compliance(
    kubectl: Kubectl, operator: RunningOperator
) -> None:
    """An SMD made Blocked (here by a Secret it now names that does not exist) writes nothing more; the
    model it had deployed runs on. Stripping that model of its mTLS sidecar must still show."""
    (model,) = launch(kubectl, "tk-frozen", [{}])
    try:
        wait_compliant(kubectl, [model])
        kubectl.apply(
            smd("m", model.namespace, model={"secretFiles": [{"name": "db", "secretName": "absent"}]})
        )
        assert wait_blocked(kubectl, model)["reason"] == "ReferenceNotFound"

        body = {"spec": {"template": {"spec": {"containers": [{"name": "mtls-proxy", "$patch": "delete"}]}}}}
        patch(kubectl, "deployment", "m", model.namespace, body, "strategic")

        def reported() -> bool:
            found = kubectl.get("smd", "m", model.namespace)
            verdict = kubectl.control(found, "mtls") or {}
            return verdict.get("status") == "Fail" and found["status"].get("compliant") is not True

        try:
            wait_for(reported, timeout=WITHIN_A_RESYNC, what="mtls Fail while Blocked")
        except AssertionError:
            found = kubectl.get("smd", "m", model.namespace)
            raise AssertionError(
                "the model runs without its mTLS sidecar, yet the SMD says "
                f"compliant={found['status'].get('compliant')}, mtls={kubectl.control(found, 'mtls')}, "
                f"metric={compliance(operator, model, 'mtls')}"
            ) from None
        assert compliance(operator, model, "mtls") == 0.0
    finally:
        delete_namespaces(kubectl, [model.namespace])


# ---------------------------------------------------------------------------------------- volumes


def _going(claim: dict[str, Any] | None) -> bool:
    """Deleted, or being deleted (a claim waits for the pods using it to go before it does)."""
    return claim is None or claim["metadata"].get("deletionTimestamp") is not None


def _bound_volume(kubectl: Kubectl, model: Model) -> str:
    def probe() -> str | None:
        claim = kubectl.get("pvc", "m-models", model.namespace) or {}
        return str(claim["spec"]["volumeName"]) if claim.get("status", {}).get("phase") == "Bound" else None

    return wait_for(probe, timeout=30, what=f"the claim of {model} bound")


def test_removing_storage_keeps_the_volume_and_its_data_unless_the_smd_says_delete(
    kubectl: Kubectl, operator: RunningOperator, encrypted_class: str
) -> None:
    storage = {"size": "1Gi", "storageClassName": encrypted_class}
    keep, drop = launch(
        kubectl,
        "tk-storage",
        [
            {"storage": storage},
            {"storage": storage, "persistentVolumeClaimRetentionPolicy": {"whenStorageRemoved": "Delete"}},
        ],
    )
    try:
        wait_compliant(kubectl, [keep, drop])
        bound = {model: _bound_volume(kubectl, model) for model in (keep, drop)}
        kept = kubectl.get("pvc", "m-models", keep.namespace)["metadata"]["uid"]

        kubectl.apply(smd("m", keep.namespace))
        kubectl.apply(
            smd("m", drop.namespace, persistentVolumeClaimRetentionPolicy={"whenStorageRemoved": "Delete"})
        )

        wait_for(
            lambda: _going(kubectl.get("pvc", "m-models", drop.namespace)),
            timeout=WITHIN_A_RESYNC,
            what="dropped",
        )
        wait_compliant(kubectl, [keep])
        claim = kubectl.get("pvc", "m-models", keep.namespace)
        assert claim is not None and claim["metadata"]["uid"] == kept, "the retained claim was removed"
        assert claim["spec"]["volumeName"] == bound[keep] and claim["status"]["phase"] == "Bound"
        assert kubectl.get("pv", bound[keep])["status"]["phase"] == "Bound"

        kubectl("delete", "smd", "m", "-n", keep.namespace)
        time.sleep(RESYNC_SECONDS * 1.5)
        claim = kubectl.get("pvc", "m-models", keep.namespace)
        assert claim is not None and claim["metadata"]["uid"] == kept, "deleting the SMD removed its volume"
    finally:
        delete_namespaces(kubectl, [keep.namespace, drop.namespace])
