"""Control storage-encryption: persistent volumes only on classes known to encrypt; scratch in memory."""

from __future__ import annotations

from typing import Any

import pytest

from securemodels.config import DEFAULT_ENCRYPTING_PROVISIONERS, EncryptionParameter, OperatorConfig
from securemodels.desired import workload
from securemodels.desired.controls import storage
from securemodels.desired.model import Facts, Manifest
from unit.builders import (
    SERVER,
    STORAGE_CLASS,
    Mutation,
    build,
    container,
    context,
    find,
    kinds,
    observe,
    pod_spec,
    storage_class,
    tampered,
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


def test_preflight_has_nothing_to_say_without_storage() -> None:
    assert storage.preflight(context(facts=Facts()), None) is None


def test_preflight_passes_an_encrypting_class() -> None:
    assert storage.preflight(context(**STORAGE), None) is None


PRE_FLIGHT: list[tuple[str, Facts, Manifest | None, str, str]] = [
    (
        "class missing",
        Facts(storage_class=None),
        None,
        "StorageClassNotFound",
        f"{STORAGE_CLASS} does not exist",
    ),
    (
        "class not encrypting",
        Facts(storage_class=storage_class(parameters={"encrypted": "false"})),
        None,
        "StorageClassNotEncrypted",
        "does not set parameter encrypted",
    ),
    (
        "volume on another class",
        Facts(storage_class=storage_class()),
        {"spec": {"storageClassName": "standard"}},
        "StorageClassImmutable",
        "exists on StorageClass standard",
    ),
]


@pytest.mark.parametrize(
    ("facts", "live_pvc", "reason", "message"), [c[1:] for c in PRE_FLIGHT], ids=[c[0] for c in PRE_FLIGHT]
)
def test_preflight_blocks(facts: Facts, live_pvc: Manifest | None, reason: str, message: str) -> None:
    blocker = storage.preflight(context(facts=facts, **STORAGE), live_pvc)

    assert blocker is not None
    assert blocker.reason == reason
    assert message in blocker.message


def test_preflight_accepts_the_volume_already_on_the_class() -> None:
    assert storage.preflight(context(**STORAGE), {"spec": {"storageClassName": STORAGE_CLASS}}) is None


def test_check_passes_memory_only() -> None:
    ctx = context()
    observed = observe(ctx)
    result = storage.check(ctx, observed.deployment, observed.pvc)

    assert (result.name, result.status, result.reason) == ("storage-encryption", "Pass", "MemoryOnly")


def test_check_passes_an_encrypted_volume() -> None:
    ctx = context(**STORAGE)
    observed = observe(ctx)
    result = storage.check(ctx, observed.deployment, observed.pvc)

    assert (result.status, result.reason) == ("Pass", "Encrypted")
    assert STORAGE_CLASS in result.message


def add_volume(volume: dict[str, Any]) -> Mutation:
    return lambda deployment: pod_spec(deployment)["volumes"].append(volume)


def scratch_on_disk(deployment: Manifest) -> None:
    next(item for item in pod_spec(deployment)["volumes"] if item["name"] == "scratch")["emptyDir"] = {}


TAMPERED: list[tuple[str, Mutation, str]] = [
    ("emptyDir on disk", scratch_on_disk, "volume scratch is an emptyDir on the node's disk"),
    (
        "foreign claim",
        add_volume({"name": "data", "persistentVolumeClaim": {"claimName": "plain"}}),
        "volume data mounts a claim",
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
]


@pytest.mark.parametrize(("mutation", "problem"), [c[1:] for c in TAMPERED], ids=[c[0] for c in TAMPERED])
def test_check_fails_on_unvetted_volumes(mutation: Mutation, problem: str) -> None:
    ctx = context()
    observed = observe(ctx)
    result = storage.check(ctx, tampered(observed.deployment, mutation), observed.pvc)

    assert (result.status, result.reason) == ("Fail", "UnencryptedStorage")
    assert problem in result.message


def test_check_fails_when_the_claim_is_missing() -> None:
    ctx = context(**STORAGE)
    result = storage.check(ctx, observe(ctx).deployment, None)

    assert result.status == "Fail"
    assert "PersistentVolumeClaim fraud-models does not exist" in result.message


def test_check_fails_when_the_claim_is_on_another_class() -> None:
    ctx = context(**STORAGE)
    observed = observe(ctx)
    result = storage.check(
        ctx,
        observed.deployment,
        tampered(observed.pvc, lambda pvc: pvc["spec"].update(storageClassName="standard")),
    )

    assert result.status == "Fail"
    assert "uses StorageClass standard, not the vetted one" in result.message


def test_check_fails_when_the_class_stops_encrypting() -> None:
    ctx = context(**STORAGE)
    observed = observe(ctx)
    later = context(facts=Facts(storage_class=storage_class(parameters={})), **STORAGE)
    result = storage.check(later, observed.deployment, observed.pvc)

    assert result.status == "Fail"
    assert "does not set parameter encrypted" in result.message


def test_check_fails_without_a_deployment() -> None:
    assert storage.check(context(), None, None).reason == "DeploymentMissing"
