"""One reconcile against an API server held in memory: what is written, and what blocks an SMD before
anything is. The caches are filled the way the watches would fill them, label selectors included."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, cast

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from securemodels import desired
from securemodels.api import v1alpha1
from securemodels.config import OperatorConfig
from securemodels.desired import naming
from securemodels.handlers.keys import OperatorKeys
from securemodels.handlers.reconcile import Outcome, Reconciler
from securemodels.k8s import read
from securemodels.k8s.access import AccessReviews
from securemodels.k8s.client import Kube, KubeError
from unit.builders import NAME, NAMESPACE, NOW, UID, spec_dict

Key = tuple[str, str, str]


class MemoryKube:
    """Creates, replaces and deletes objects in a dict, as the API server would answer; counts every
    write that is not a dry run; allows no access review."""

    def __init__(self) -> None:
        self.objects: dict[Key, dict[str, Any]] = {}
        self.writes: list[tuple[str, Key]] = []
        self.events: list[dict[str, Any]] = []
        self.statuses: list[dict[str, Any]] = []
        self.pruned_status: set[str] = set()
        self._versions = itertools.count(1)

    @staticmethod
    def key(manifest: Mapping[str, Any]) -> Key:
        metadata = manifest["metadata"]
        return str(manifest["kind"]), str(metadata.get("namespace") or ""), str(metadata["name"])

    def add(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """An object someone else created."""
        stored = copy.deepcopy(manifest)
        version = next(self._versions)
        stored["metadata"].update(uid=f"uid-{version}", resourceVersion=str(version))
        self.objects[self.key(stored)] = stored
        return stored

    def tamper(self, key: Key, mutate: Callable[[dict[str, Any]], object]) -> None:
        """Someone else's write: the object changed, with a new resourceVersion."""
        mutate(self.objects[key])
        self.objects[key]["metadata"]["resourceVersion"] = str(next(self._versions))

    async def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        found = self.objects.get((kind, namespace or "", name))
        return copy.deepcopy(found) if found else None

    async def create(self, manifest: Mapping[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        if manifest["kind"] == "Event":
            self.events.append(dict(manifest))
            return dict(manifest)
        key = self.key(manifest)
        if key in self.objects:
            raise KubeError(409, f"{key[0]} {key[2]} already exists")
        stored = copy.deepcopy(dict(manifest))
        version = next(self._versions)
        stored["metadata"].update(uid=f"uid-{version}", resourceVersion=str(version))
        if not dry_run:
            self.objects[key] = stored
            self.writes.append(("create", key))
        return copy.deepcopy(stored)

    async def replace(self, manifest: Mapping[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        key = self.key(manifest)
        live = self.objects.get(key)
        if live is None:
            raise KubeError(404, "not found")
        if manifest["metadata"].get("resourceVersion") != live["metadata"]["resourceVersion"]:
            raise KubeError(409, "the object has been modified")
        stored = copy.deepcopy(dict(manifest))
        stored["metadata"].update(uid=live["metadata"]["uid"], resourceVersion=str(next(self._versions)))
        if not dry_run:
            self.objects[key] = stored
            self.writes.append(("replace", key))
        return copy.deepcopy(stored)

    async def delete(self, kind: str, name: str, namespace: str | None = None, **preconditions: Any) -> bool:
        self.writes.append(("delete", (kind, namespace or "", name)))
        return self.objects.pop((kind, namespace or "", name), None) is not None

    async def patch_status(self, name: str, namespace: str, status: Mapping[str, Any]) -> dict[str, Any]:
        self.statuses.append(dict(status))
        return self.kept_status(status)

    def kept_status(self, status: Mapping[str, Any]) -> dict[str, Any]:
        """What a status patch leaves stored: nulls remove, fields the CRD does not know are pruned."""
        return {
            key: value for key, value in status.items() if value is not None and key not in self.pruned_status
        }

    async def review(self, body: Mapping[str, Any]) -> bool:
        return False


def fill(caches: read.Caches, kube: MemoryKube) -> None:
    """What the watches would bring: each watched kind, through its label selector."""
    for watched in read.WATCHED:
        for (kind, _, _), item in kube.objects.items():
            labels = item["metadata"].get("labels") or {}
            if kind == watched.kind and all(
                labels.get(key) == value for key, value in watched.labels.items()
            ):
                caches[kind].put(watched.strip(copy.deepcopy(item)))


def smd(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{v1alpha1.GROUP}/{v1alpha1.VERSION}",
        "kind": v1alpha1.KIND,
        "metadata": {"name": NAME, "namespace": NAMESPACE, "uid": UID, "generation": 1},
        "spec": spec_dict(**spec),
    }


def clock() -> datetime:
    return NOW


def reconciler(kube: MemoryKube, config: OperatorConfig | None = None) -> tuple[Reconciler, read.Caches]:
    """A reconciler over `kube`, its caches filled from what `kube` holds."""
    config, api = config or OperatorConfig(), cast(Kube, kube)
    caches = read.Caches(api, config, lambda kind, old, new: None)
    fill(caches, kube)
    keys = OperatorKeys(api, caches, config)
    return Reconciler(api, caches, config, clock, keys, AccessReviews(api)), caches


async def reconcile(kube: MemoryKube, body: dict[str, Any]) -> Outcome:
    return await reconciler(kube)[0].reconcile(body)


def foreign_config_map(**labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{NAME}-{naming.SIDECAR_PURPOSE}", "namespace": NAMESPACE, "labels": labels},
        "data": {"nginx.conf": "someone else's"},
    }


def written_in(kube: MemoryKube, namespace: str) -> list[tuple[str, Key]]:
    return [(verb, key) for verb, key in kube.writes if key[1] == namespace]


def ready_reason(outcome: Outcome) -> str:
    (ready,) = [item for item in outcome.status["conditions"] if item["type"] == "Ready"]
    return str(ready["reason"])


async def test_a_new_smd_gets_every_child_created() -> None:
    kube = MemoryKube()

    outcome = await reconcile(kube, smd())

    created = {key for verb, key in written_in(kube, NAMESPACE) if verb == "create"}
    assert {
        ("Deployment", NAMESPACE, NAME),
        ("Service", NAMESPACE, NAME),
        ("NetworkPolicy", NAMESPACE, f"{NAME}-network"),
        ("ConfigMap", NAMESPACE, f"{NAME}-sidecar"),
    } <= created
    assert outcome.phase == "Progressing"


async def test_a_wanted_name_held_by_an_object_with_the_operators_labels_blocks_the_smd() -> None:
    kube = MemoryKube()
    kube.add(foreign_config_map(**{naming.MANAGED_BY_LABEL: naming.MANAGED_BY}))

    outcome = await reconcile(kube, smd())

    assert (outcome.phase, ready_reason(outcome)) == ("Blocked", "NameTaken")
    assert written_in(kube, NAMESPACE) == []


async def test_a_wanted_name_held_by_an_unlabelled_object_blocks_the_smd() -> None:
    """The caches watch ConfigMaps, Secrets, ServiceAccounts, Deployments and claims by the operator's
    label: an object of a wanted name without it is someone else's all the same."""
    kube = MemoryKube()
    kube.add(foreign_config_map())

    outcome = await reconcile(kube, smd())

    assert (outcome.phase, ready_reason(outcome)) == ("Blocked", "NameTaken")
    assert written_in(kube, NAMESPACE) == []


async def test_a_second_pass_at_rest_writes_nothing() -> None:
    kube = MemoryKube()
    operator, caches = reconciler(kube)
    body = smd()
    first = await operator.reconcile(body)
    fill(caches, kube)
    writes, statuses = len(kube.writes), len(kube.statuses)

    second = await operator.reconcile({**body, "status": first.status})

    assert kube.writes[writes:] == []
    assert len(kube.statuses) == statuses
    assert second.status == first.status


DEPLOYMENT: Key = ("Deployment", NAMESPACE, NAME)
POLICY: Key = ("NetworkPolicy", NAMESPACE, f"{NAME}-network")


def add_container(deployment: dict[str, Any]) -> None:
    deployment["spec"]["template"]["spec"]["containers"].append({"name": "miner", "image": "miner:latest"})


def controls(outcome: Outcome) -> dict[str, str]:
    return {item["name"]: item["message"] for item in outcome.status["controls"] if item["status"] == "Fail"}


async def test_drift_is_restored_whole_and_reported_to_its_control() -> None:
    kube = MemoryKube()
    operator, caches = reconciler(kube)
    first = await operator.reconcile(smd())
    kube.tamper(DEPLOYMENT, add_container)
    kube.tamper(POLICY, lambda policy: policy["spec"].update(ingress=[{}]))
    fill(caches, kube)
    writes = len(kube.writes)

    second = await operator.reconcile({**smd(), "status": first.status})

    assert kube.writes[writes:] == [("replace", POLICY), ("replace", DEPLOYMENT)]
    assert kube.objects[DEPLOYMENT]["spec"]["template"]["spec"]["containers"][-1]["name"] == "mtls-proxy"
    assert kube.objects[POLICY]["spec"]["ingress"] == []
    assert controls(second) == {
        "network-isolation": "NetworkPolicy fraud-network was changed outside the operator at spec.ingress; "
        "restored",
        "pod-security": "Deployment fraud was changed outside the operator at "
        "spec.template.spec.containers[miner] (added); restored",
    }
    assert second.repaired


async def test_drift_is_found_by_an_operator_that_did_not_make_the_last_write() -> None:
    kube = MemoryKube()
    first = await reconciler(kube)[0].reconcile(smd())
    kube.tamper(DEPLOYMENT, add_container)
    writes = len(kube.writes)

    again = await reconcile(kube, {**smd(), "status": first.status})

    assert kube.writes[writes:] == [("replace", DEPLOYMENT)]
    assert "spec.template.spec.containers[miner] (added)" in controls(again)["pod-security"]


async def test_drift_is_reported_even_when_the_desired_stamp_was_rewritten_too() -> None:
    """Someone changes the Deployment and its desired-hash annotation while the operator is down: the
    operator that starts next must still report the change, not take it for a change of its own intent."""
    kube = MemoryKube()
    first = await reconciler(kube)[0].reconcile(smd())

    def restamped_change(deployment: dict[str, Any]) -> None:
        add_container(deployment)
        deployment["metadata"]["annotations"][desired.DESIRED_HASH_ANNOTATION] = "0" * 16

    kube.tamper(DEPLOYMENT, restamped_change)

    again = await reconcile(kube, {**smd(), "status": first.status})

    assert kube.objects[DEPLOYMENT]["spec"]["template"]["spec"]["containers"][-1]["name"] == "mtls-proxy"
    assert "spec.template.spec.containers[miner] (added)" in controls(again).get("pod-security", "")


async def test_a_stale_copy_of_an_unlabelled_child_is_read_again_after_a_conflict() -> None:
    """The label removed, the watch no longer brings the Deployment: the cache holds the copy read
    when it went missing. Changed once more after that read, a replace of that copy conflicts; the next
    pass must judge the object as it is, not try the same stale copy for ever."""
    kube = MemoryKube()
    operator, caches = reconciler(kube)
    first = await operator.reconcile(smd())
    fill(caches, kube)
    kube.tamper(DEPLOYMENT, lambda deployment: deployment["metadata"]["labels"].pop(naming.MANAGED_BY_LABEL))
    caches["Deployment"].offer(copy.deepcopy(kube.objects[DEPLOYMENT]))  # read when the watch lost it
    kube.tamper(DEPLOYMENT, add_container)

    with pytest.raises(KubeError) as conflict:
        await operator.reconcile({**smd(), "status": first.status})
    again = await operator.reconcile({**smd(), "status": first.status})

    assert conflict.value.code == 409
    assert "spec.template.spec.containers[miner] (added)" in controls(again).get("pod-security", "")
    restored = kube.objects[DEPLOYMENT]
    assert restored["metadata"]["labels"][naming.MANAGED_BY_LABEL] == naming.MANAGED_BY
    assert [container["name"] for container in restored["spec"]["template"]["spec"]["containers"]][-1] == (
        "mtls-proxy"
    )


async def test_a_status_forged_right_after_the_operators_write_is_put_right_at_the_next_pass() -> None:
    kube = MemoryKube()
    operator, caches = reconciler(kube)
    first = await operator.reconcile(smd())
    fill(caches, kube)
    forged = {**first.status, "compliant": True, "phase": "Ready"}
    statuses = len(kube.statuses)

    again = await operator.reconcile({**smd(), "status": forged})

    assert kube.statuses[statuses:] == [{**forged, **again.status}]


async def test_a_status_the_server_keeps_pruned_is_not_written_again() -> None:
    """A CRD older than the operator prunes a status field it does not know: the stored status then
    never equals the one written, and writing it again would only be pruned again."""
    kube = MemoryKube()
    kube.pruned_status = {"observedGeneration"}
    operator, caches = reconciler(kube)
    first = await operator.reconcile(smd())
    fill(caches, kube)
    kept = kube.kept_status(first.status)
    statuses = len(kube.statuses)

    for _ in range(3):
        await operator.reconcile({**smd(), "status": kept})

    assert "observedGeneration" in first.status
    assert kube.statuses[statuses:] == []


async def test_only_a_verdict_on_an_object_no_cache_watches_is_marked_unwatched() -> None:
    """The signing ConfigMap is read from the API server at each pass: a resync that skipped the SMD
    would never see a new key."""
    public_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    kube = MemoryKube()
    kube.add(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "signing-key", "namespace": NAMESPACE},
            "data": {"release.pub": public_pem},
        }
    )
    weights = {
        "image": "registry.example.com/ml/weights@sha256:" + "cd" * 32,
        "signature": {"publicKey": {"name": "signing-key", "key": "release.pub"}},
    }
    verifier = "registry.example.com/secure-model-operator@sha256:" + "5e" * 32
    operator, _ = reconciler(kube, OperatorConfig(weights_verifier_image=verifier))

    signed = await operator.reconcile(smd(model={"weights": weights}))
    unsigned = await operator.reconcile({**smd(), "metadata": {**smd()["metadata"], "name": "plain"}})

    assert (signed.phase, signed.unwatched) == ("Progressing", True)
    assert (unsigned.phase, unsigned.unwatched) == ("Progressing", False)
