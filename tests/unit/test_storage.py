"""Control storage-encryption: persistent volumes only on classes known to encrypt; scratch in memory."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from securemodels.config import DEFAULT_ENCRYPTING_PROVISIONERS, EncryptionParameter, OperatorConfig
from securemodels.desired import judging, naming, workload
from securemodels.desired.controls import storage
from securemodels.desired.model import Context, ControlResult, Facts, Manifest, Observed
from unit.builders import (
    POD_NAME,
    SERVER,
    STORAGE_CLASS,
    Mutation,
    altered,
    build,
    container,
    context,
    find,
    kinds,
    observe,
    owner,
    pod_spec,
    removed,
    storage_class,
    with_pod,
)

STORAGE: dict[str, Any] = {
    "storage": {"size": "20Gi", "storageClassName": STORAGE_CLASS, "mountPath": "/weights"}
}
ATTESTED = {storage.ENCRYPTED_ANNOTATION: "true"}

VERDICTS: list[tuple[str, Manifest, bool, str]] = [
    ("EBS encrypted", storage_class(parameters={"encrypted": "true"}), True, "sets encrypted=true"),
    ("EBS encrypted, any case", storage_class(parameters={"encrypted": "True"}), True, "encrypted=True"),
    (
        "EBS encrypted false",
        storage_class(parameters={"encrypted": "false"}),
        False,
        "does not set parameter encrypted",
    ),
    (
        "EBS without the parameter",
        storage_class(parameters={"type": "gp3"}),
        False,
        "does not set parameter encrypted",
    ),
    (
        "EBS without parameters",
        {**storage_class(), "parameters": None},
        False,
        "does not set parameter encrypted",
    ),
    (
        "in-tree EBS",
        storage_class(provisioner="kubernetes.io/aws-ebs", parameters={"encrypted": "true"}),
        True,
        "encrypted=true",
    ),
    (
        "GCE PD with a KMS key",
        storage_class(
            provisioner="pd.csi.storage.gke.io", parameters={"disk-encryption-kms-key": "projects/p/keys/k"}
        ),
        True,
        "disk-encryption-kms-key=projects/p/keys/k",
    ),
    (
        "GCE PD without a KMS key",
        storage_class(provisioner="pd.csi.storage.gke.io", parameters={}),
        False,
        "disk-encryption-kms-key",
    ),
    (
        "Azure disk with an encryption set",
        storage_class(
            provisioner="disk.csi.azure.com", parameters={"diskEncryptionSetID": "/subscriptions/s/des"}
        ),
        True,
        "diskEncryptionSetID=",
    ),
    (
        "Azure disk with an empty set",
        storage_class(provisioner="disk.csi.azure.com", parameters={"diskEncryptionSetID": ""}),
        False,
        "diskEncryptionSetID",
    ),
    (
        "unknown provisioner",
        storage_class(provisioner="rancher.io/local-path", parameters={}),
        False,
        "not known to encrypt",
    ),
    (
        "unknown provisioner attested by an admin",
        storage_class(provisioner="rancher.io/local-path", annotations=ATTESTED),
        True,
        "attested",
    ),
    (
        "attestation must say true",
        storage_class(provisioner="rancher.io/local-path", annotations={storage.ENCRYPTED_ANNOTATION: "yes"}),
        False,
        "not known to encrypt",
    ),
    (
        "attestation wins over parameters",
        storage_class(parameters={"encrypted": "false"}, annotations=ATTESTED),
        True,
        "attested",
    ),
]


@pytest.mark.parametrize(
    ("item", "encrypted", "why"), [c[1:] for c in VERDICTS], ids=[c[0] for c in VERDICTS]
)
def test_encryption_verdict(item: Manifest, encrypted: bool, why: str) -> None:
    verdict, reason = storage.encryption_verdict(item, OperatorConfig())

    assert verdict is encrypted
    assert why in reason
    assert STORAGE_CLASS in reason


def test_unknown_provisioner_verdict_tells_how_to_attest() -> None:
    _, reason = storage.encryption_verdict(storage_class(provisioner="x.io/disk"), OperatorConfig())

    assert f'{storage.ENCRYPTED_ANNOTATION}: "true"' in reason


def extended(values: tuple[str, ...]) -> OperatorConfig:
    table = {
        **OperatorConfig().encrypting_provisioners,
        "csi.example.com": EncryptionParameter(parameter="encryption", values=values),
    }
    return OperatorConfig(encrypting_provisioners=table)


@pytest.mark.parametrize(
    ("config", "value", "encrypted"),
    [
        (extended(("on",)), "on", True),
        (extended(("on",)), "off", False),
        (extended(()), "anything", True),
        (extended(()), "", False),
        (OperatorConfig(), "on", False),
    ],
    ids=["listed value", "other value", "any non-empty value", "empty value", "not in the default table"],
)
def test_the_configuration_extends_the_table(config: OperatorConfig, value: str, encrypted: bool) -> None:
    item = storage_class(provisioner="csi.example.com", parameters={"encryption": value})

    assert storage.encryption_verdict(item, config)[0] is encrypted


def test_a_configuration_can_drop_default_provisioners() -> None:
    config = OperatorConfig(
        encrypting_provisioners={"csi.example.com": EncryptionParameter(parameter="encryption")}
    )

    assert storage.encryption_verdict(storage_class(), config)[0] is False


def test_default_table_covers_the_three_clouds() -> None:
    assert set(OperatorConfig().encrypting_provisioners) == set(DEFAULT_ENCRYPTING_PROVISIONERS)
    assert {"ebs.csi.aws.com", "pd.csi.storage.gke.io", "disk.csi.azure.com"} <= set(
        DEFAULT_ENCRYPTING_PROVISIONERS
    )


def test_no_claim_and_no_volume_without_spec_storage() -> None:
    ctx = context()

    assert storage.persistent_volume_claim(ctx) is None
    assert storage.volume(ctx) is None
    assert "PersistentVolumeClaim" not in kinds(build(ctx).owned)
    assert all(
        "persistentVolumeClaim" not in item for item in pod_spec(workload.deployment(ctx, SERVER))["volumes"]
    )


def test_claim_volume_and_mount_with_spec_storage() -> None:
    ctx = context(**STORAGE)
    claim = find(build(ctx).owned, "PersistentVolumeClaim")
    deployment = find(build(ctx).owned, "Deployment")

    assert claim["metadata"]["name"] == "fraud-models"
    assert claim["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "storageClassName": STORAGE_CLASS,
        "resources": {"requests": {"storage": "20Gi"}},
    }
    assert {"name": "models", "persistentVolumeClaim": {"claimName": "fraud-models"}} in pod_spec(deployment)[
        "volumes"
    ]
    assert {"name": "models", "mountPath": "/weights"} in container(deployment, "model")["volumeMounts"]


def test_scratch_space_is_in_memory() -> None:
    volumes = pod_spec(find(build(context()).owned, "Deployment"))["volumes"]
    empty_dirs = [item for item in volumes if "emptyDir" in item]

    assert empty_dirs
    assert all(
        item["emptyDir"]["medium"] == "Memory" and item["emptyDir"].get("sizeLimit") for item in empty_dirs
    )


def test_a_retained_claim_is_owned_by_label_not_by_reference() -> None:
    claim = storage.persistent_volume_claim(context(**STORAGE))

    assert claim is not None
    assert "ownerReferences" not in claim["metadata"]
    assert claim["metadata"]["labels"][naming.OWNER_UID_LABEL] == owner().uid


def test_a_claim_deleted_with_the_smd_is_owned_by_reference() -> None:
    ctx = context(persistentVolumeClaimRetentionPolicy={"whenDeleted": "Delete"}, **STORAGE)
    claim = storage.persistent_volume_claim(ctx)

    assert claim is not None
    assert claim["metadata"]["ownerReferences"] == [owner().reference()]
    assert naming.OWNER_UID_LABEL not in claim["metadata"]["labels"]


@pytest.mark.parametrize(
    ("overrides", "removed_claim"),
    [
        ({}, False),
        ({"persistentVolumeClaimRetentionPolicy": {"whenStorageRemoved": "Delete"}}, True),
        ({"persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete"}}, False),
        ({**STORAGE, "persistentVolumeClaimRetentionPolicy": {"whenStorageRemoved": "Delete"}}, False),
    ],
    ids=[
        "retained by default",
        "removed on request",
        "kept when only deletion deletes",
        "storage still declared",
    ],
)
def test_a_claim_left_by_removed_storage_goes_only_on_request(
    overrides: dict[str, Any], removed_claim: bool
) -> None:
    assert storage.claim_is_removed(context(**overrides)) is removed_claim


def preflight(ctx: Context, observed: Observed | None = None) -> Any:
    return storage.preflight(ctx, observed or Observed())


def test_preflight_has_nothing_to_say_without_storage() -> None:
    assert preflight(context(facts=Facts())) is None


def test_preflight_passes_an_encrypting_class() -> None:
    assert preflight(context(**STORAGE)) is None


PRE_FLIGHT: list[tuple[str, Facts, str | None, str, str]] = [
    (
        "class missing",
        Facts(storage_class=None),
        None,
        "StorageClassNotFound",
        f"spec.storage.storageClassName {STORAGE_CLASS} does not exist",
    ),
    (
        "class not encrypting",
        Facts(storage_class=storage_class(parameters={"encrypted": "false"})),
        None,
        "StorageClassNotEncrypted",
        "spec.storage.storageClassName: StorageClass encrypted-gp3 (ebs.csi.aws.com) does not set "
        "parameter encrypted",
    ),
    (
        "class of an unknown provisioner",
        Facts(storage_class=storage_class(provisioner="rancher.io/local-path")),
        None,
        "StorageClassNotEncrypted",
        "which is not known to encrypt",
    ),
    (
        "volume on another class",
        Facts(storage_class=storage_class()),
        "standard",
        "StorageClassImmutable",
        "volume fraud-models exists on StorageClass standard; a volume cannot move to another class",
    ),
]


@pytest.mark.parametrize(
    ("facts", "live_class", "reason", "message"), [c[1:] for c in PRE_FLIGHT], ids=[c[0] for c in PRE_FLIGHT]
)
def test_preflight_blocks(facts: Facts, live_class: str | None, reason: str, message: str) -> None:
    ctx = context(facts=facts, **STORAGE)
    observed = observe(ctx)
    if live_class is not None:
        observed = altered(
            observed, "PersistentVolumeClaim", lambda pvc: pvc["spec"].update(storageClassName=live_class)
        )

    blocker = preflight(ctx, observed)

    assert blocker is not None
    assert blocker.reason == reason
    assert message in blocker.message


def test_preflight_accepts_the_volume_already_on_the_class() -> None:
    ctx = context(**STORAGE)

    assert preflight(ctx, observe(ctx)) is None


def check(ctx: Context, observed: Observed) -> ControlResult:
    return storage.check(ctx, observed)


def test_check_passes_memory_only() -> None:
    ctx = context()
    result = check(ctx, observe(ctx))

    assert (result.name, result.status, result.reason) == ("storage-encryption", "Pass", "MemoryOnly")


def test_check_passes_an_encrypted_volume() -> None:
    ctx = context(**STORAGE)
    result = check(ctx, observe(ctx))

    assert (result.status, result.reason) == ("Pass", "Encrypted")
    assert result.message == f"volume on encrypting StorageClass {STORAGE_CLASS}"


def add_volume(volume: dict[str, Any]) -> Mutation:
    return lambda item: pod_spec(item)["volumes"].append(volume)


def scratch_on_disk(item: Manifest) -> None:
    next(volume for volume in pod_spec(item)["volumes"] if volume["name"] == "scratch")["emptyDir"] = {}


TAMPERED: list[tuple[str, Mutation, str]] = [
    ("emptyDir on disk", scratch_on_disk, "volume scratch is an emptyDir on the node's disk"),
    (
        "emptyDir on disk by medium",
        add_volume({"name": "disk", "emptyDir": {"medium": ""}}),
        "volume disk is an emptyDir on the node's disk",
    ),
    (
        "foreign claim",
        add_volume({"name": "data", "persistentVolumeClaim": {"claimName": "plain"}}),
        "volume data mounts a claim the operator did not vet",
    ),
    (
        "host path",
        add_volume({"name": "host", "hostPath": {"path": "/var"}}),
        "volume host is not encrypted storage",
    ),
    (
        "ephemeral claim",
        add_volume({"name": "eph", "ephemeral": {"volumeClaimTemplate": {}}}),
        "volume eph is not encrypted storage",
    ),
    (
        "inline CSI volume",
        add_volume({"name": "csi", "csi": {"driver": "example.com"}}),
        "volume csi is not encrypted storage",
    ),
    (
        "NFS",
        add_volume({"name": "nfs", "nfs": {"server": "10.0.0.1", "path": "/"}}),
        "volume nfs is not encrypted storage",
    ),
]
CONFIGURATION: list[tuple[str, dict[str, Any]]] = [
    ("secret", {"name": "s", "secret": {"secretName": "creds"}}),
    ("configMap", {"name": "c", "configMap": {"name": "settings"}}),
    ("projected", {"name": "p", "projected": {"sources": []}}),
    ("downwardAPI", {"name": "d", "downwardAPI": {"items": []}}),
    ("emptyDir in memory", {"name": "m", "emptyDir": {"medium": "Memory"}}),
]


@pytest.mark.parametrize(("mutation", "problem"), [c[1:] for c in TAMPERED], ids=[c[0] for c in TAMPERED])
def test_check_fails_on_unvetted_volumes_in_the_template(mutation: Mutation, problem: str) -> None:
    ctx = context()
    result = check(ctx, altered(observe(ctx), "Deployment", mutation))

    assert (result.status, result.reason) == ("Fail", "UnencryptedStorage")
    assert f"the Deployment's template: {problem}" in result.message


@pytest.mark.parametrize(("mutation", "problem"), [c[1:] for c in TAMPERED], ids=[c[0] for c in TAMPERED])
def test_check_fails_on_unvetted_volumes_in_a_running_pod(mutation: Mutation, problem: str) -> None:
    ctx = context(**STORAGE)
    result = check(ctx, with_pod(observe(ctx), mutation, stamp=True))

    assert (result.status, result.reason) == ("Fail", "UnencryptedStorage")
    assert result.message == f"pod {POD_NAME}: {problem}"


@pytest.mark.parametrize("volume", [c[1] for c in CONFIGURATION], ids=[c[0] for c in CONFIGURATION])
def test_configuration_volumes_are_not_storage(volume: dict[str, Any]) -> None:
    ctx = context()

    assert check(ctx, with_pod(observe(ctx), add_volume(volume), stamp=True)).status == "Pass"


def test_the_vetted_claim_is_refused_without_spec_storage() -> None:
    ctx = context()
    claim = add_volume({"name": "models", "persistentVolumeClaim": {"claimName": "fraud-models"}})
    result = check(ctx, with_pod(observe(ctx), claim, stamp=True))

    assert result.message == f"pod {POD_NAME}: volume models mounts a claim the operator did not vet"


def test_check_fails_when_the_claim_is_missing() -> None:
    ctx = context(**STORAGE)
    result = check(ctx, removed(observe(ctx), "PersistentVolumeClaim"))

    assert result.status == "Fail"
    assert "PersistentVolumeClaim fraud-models does not exist" in result.message


@pytest.mark.parametrize(
    ("facts", "problem"),
    [
        (Facts(storage_class=storage_class()), "uses StorageClass standard, not the vetted one"),
        (Facts(storage_class=None), "uses StorageClass standard, not the vetted one"),
    ],
    ids=["another class than the vetted one", "no vetted class"],
)
def test_check_fails_when_the_claim_is_on_an_unvetted_class(facts: Facts, problem: str) -> None:
    ctx = context(facts=facts, **STORAGE)
    observed = altered(
        observe(ctx), "PersistentVolumeClaim", lambda pvc: pvc["spec"].update(storageClassName="standard")
    )
    result = check(ctx, observed)

    assert (result.status, result.reason) == ("Fail", "UnencryptedStorage")
    assert f"PersistentVolumeClaim fraud-models {problem}" in result.message


def test_check_fails_when_the_class_stops_encrypting() -> None:
    observed = observe(context(**STORAGE))
    later = context(facts=Facts(storage_class=storage_class(parameters={})), **STORAGE)
    result = check(later, observed)

    assert result.status == "Fail"
    assert "does not set parameter encrypted" in result.message


def test_check_fails_without_a_deployment() -> None:
    ctx = context()
    result = check(ctx, removed(observe(ctx), "Deployment"))

    assert (result.status, result.reason) == ("Fail", "DeploymentMissing")


def test_judging_fails_storage_for_a_pod_with_a_volume_added() -> None:
    ctx = context()
    observed = with_pod(observe(ctx), add_volume({"name": "host", "hostPath": {"path": "/"}}))
    (result,) = [item for item in judging.judge(ctx, observed) if item.name == storage.NAME]

    assert result.status == "Fail"
    assert (
        f"pod {POD_NAME}: spec.volumes[host] (added) differs from the operator's template" in result.message
    )
    assert f"pod {POD_NAME}: volume host is not encrypted storage" in result.message


def test_findings_fail_an_encrypted_volume_too() -> None:
    ctx = context(**STORAGE)
    observed = replace(
        observe(ctx), findings={storage.NAME: ("PersistentVolumeClaim fraud-models was changed",)}
    )

    assert check(ctx, observed).message == "PersistentVolumeClaim fraud-models was changed"
