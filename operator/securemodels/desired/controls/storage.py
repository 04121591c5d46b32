"""Control `storage-encryption`: model files rest only on encrypted volumes.

Model weights are often the most valuable asset in the namespace. A persistent volume is created only on
a StorageClass that is known to encrypt (a provisioner parameter, or an admin's attestation annotation);
scratch space lives in memory, so nothing the model writes reaches an unencrypted disk. Judged on the
Deployment's template and on the volumes of every running pod.

The volume outlives the SMD and the removal of spec.storage unless
spec.persistentVolumeClaimRetentionPolicy says Delete: a retained claim carries no ownerReference (garbage
collection would take it with the SMD) and is owned by label instead.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from securemodels.config import OperatorConfig
from securemodels.desired import canonical, naming
from securemodels.desired.controls.base import verdict
from securemodels.desired.model import Blocker, Context, ControlResult, Manifest, Observed

NAME = "storage-encryption"
CONDITION = "StorageEncrypted"
ENCRYPTED_ANNOTATION = "securemodels.io/encrypted"
VOLUME = "models"
# Volume sources that hold configuration the operator mounts, not model data at rest.
_CONFIGURATION_SOURCES = ("secret", "configMap", "projected", "downwardAPI")


class Reason(StrEnum):
    MEMORY_ONLY = "MemoryOnly"
    ENCRYPTED = "Encrypted"
    UNENCRYPTED = "UnencryptedStorage"
    DEPLOYMENT_MISSING = "DeploymentMissing"
    CLASS_NOT_FOUND = "StorageClassNotFound"
    CLASS_NOT_ENCRYPTED = "StorageClassNotEncrypted"
    CLASS_IMMUTABLE = "StorageClassImmutable"


def encryption_verdict(storage_class: Manifest, config: OperatorConfig) -> tuple[bool, str]:
    """Whether the class encrypts at rest, and why we think so (or not)."""
    name = storage_class["metadata"]["name"]
    if (storage_class["metadata"].get("annotations") or {}).get(ENCRYPTED_ANNOTATION) == "true":
        return True, f"StorageClass {name} is attested as encrypted by annotation {ENCRYPTED_ANNOTATION}"
    provisioner = storage_class.get("provisioner", "")
    rule = config.encrypting_provisioners.get(provisioner)
    if rule is None:
        return False, (
            f"StorageClass {name} uses provisioner {provisioner}, which is not known to encrypt; a cluster "
            f'admin can attest it with the annotation {ENCRYPTED_ANNOTATION}: "true"'
        )
    value = str((storage_class.get("parameters") or {}).get(rule.parameter, ""))
    accepted = {item.lower() for item in rule.values}
    if (value.lower() in accepted) if accepted else bool(value):
        return True, f"StorageClass {name} sets {rule.parameter}={value}"
    return (
        False,
        f"StorageClass {name} ({provisioner}) does not set parameter {rule.parameter} to enable encryption",
    )


def retained(context: Context) -> bool:
    """Whether the claim must outlive the SMD: then it carries no ownerReference."""
    return context.spec.persistent_volume_claim_retention_policy.when_deleted == "Retain"


def persistent_volume_claim(context: Context) -> Manifest | None:
    storage = context.spec.storage
    if storage is None:
        return None
    owner, ref = context.owner, context.names.volume_claim
    metadata = naming.metadata(owner, ref, "storage", owned=not retained(context))
    stamp = canonical.claim_mac(context.stamp_key, owner.namespace, owner.name, ref.name)
    metadata["annotations"] = {canonical.CLAIM_MAC_ANNOTATION: stamp}
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata,
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": storage.storage_class_name,
            "resources": {"requests": {"storage": storage.size}},
        },
    }


def claim_is_removed(context: Context) -> bool:
    """A claim left over from a removed spec.storage goes only when the SMD asks for it."""
    return (
        context.spec.storage is None
        and context.spec.persistent_volume_claim_retention_policy.when_storage_removed == "Delete"
    )


def volume(context: Context) -> dict[str, Any] | None:
    if context.spec.storage is None:
        return None
    return {"name": VOLUME, "persistentVolumeClaim": {"claimName": context.names.volume_claim.name}}


def preflight(context: Context, observed: Observed) -> Blocker | None:
    storage = context.spec.storage
    if storage is None:
        return None
    storage_class = context.facts.storage_class
    if storage_class is None:
        return Blocker(
            Reason.CLASS_NOT_FOUND,
            f"spec.storage.storageClassName {storage.storage_class_name} does not exist",
        )
    encrypted, why = encryption_verdict(storage_class, context.config)
    if not encrypted:
        return Blocker(Reason.CLASS_NOT_ENCRYPTED, f"spec.storage.storageClassName: {why}")
    live_class = ((observed.get(context.names.volume_claim) or {}).get("spec") or {}).get("storageClassName")
    if live_class is not None and live_class != storage.storage_class_name:
        return Blocker(
            Reason.CLASS_IMMUTABLE,
            f"volume {context.names.volume_claim.name} exists on StorageClass {live_class}; a volume "
            "cannot move to another class. Move the data and delete the PersistentVolumeClaim to change it",
        )
    return None


def volume_problems(
    pod_spec: Manifest, claim: str | None, where: str, weights_image: str | None = None
) -> list[str]:
    """`weights_image`: the declared weights image, whose read-only image volume is accepted: it rests in
    the node's image store, as every image of the pod does."""
    problems = []
    for item in pod_spec.get("volumes") or []:
        name = item.get("name")
        if weights_image is not None and (item.get("image") or {}).get("reference") == weights_image:
            continue
        if "persistentVolumeClaim" in item:
            if item["persistentVolumeClaim"].get("claimName") != claim:
                problems.append(f"{where}: volume {name} mounts a claim the operator did not vet")
        elif "emptyDir" in item:
            if (item["emptyDir"] or {}).get("medium") != "Memory":
                problems.append(f"{where}: volume {name} is an emptyDir on the node's disk")
        elif not any(kind in item for kind in _CONFIGURATION_SOURCES):
            problems.append(f"{where}: volume {name} is not encrypted storage")
    return problems


def check(context: Context, observed: Observed) -> ControlResult:
    names = context.names
    deployment = observed.get(names.deployment)
    if deployment is None:
        return ControlResult(NAME, "Fail", Reason.DEPLOYMENT_MISSING, "the model's Deployment does not exist")
    storage = context.spec.storage
    claim = names.volume_claim.name if storage else None
    problems = list(observed.findings.get(NAME, ()))
    weights = context.spec.model.weights
    image = weights.image if weights is not None else None
    problems += volume_problems(
        deployment["spec"]["template"]["spec"], claim, "the Deployment's template", image
    )
    for pod in observed.pods:
        problems += volume_problems(pod.get("spec") or {}, claim, f"pod {pod['metadata']['name']}", image)
    if storage is not None:
        pvc = observed.get(names.volume_claim)
        if pvc is None:
            problems.append(f"PersistentVolumeClaim {claim} does not exist")
        else:
            live_class = pvc["spec"].get("storageClassName")
            storage_class = context.facts.storage_class
            if storage_class is None or storage_class["metadata"]["name"] != live_class:
                problems.append(
                    f"PersistentVolumeClaim {claim} uses StorageClass {live_class}, not the vetted one"
                )
            elif not (found := encryption_verdict(storage_class, context.config))[0]:
                problems.append(found[1])
    if problems or storage is None:
        return verdict(
            NAME,
            problems,
            Reason.UNENCRYPTED,
            Reason.MEMORY_ONLY,
            "no persistent volume; scratch space is in memory",
        )
    return verdict(
        NAME,
        [],
        Reason.UNENCRYPTED,
        Reason.ENCRYPTED,
        f"volume on encrypting StorageClass {storage.storage_class_name}",
    )
