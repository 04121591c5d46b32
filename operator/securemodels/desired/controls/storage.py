"""Control `storage-encryption`: model files rest only on encrypted volumes.

Model weights are often the most valuable asset in the namespace. A persistent volume is created only on
a StorageClass that is known to encrypt (a provisioner parameter, or an admin's attestation annotation);
scratch space lives in memory, so nothing the model writes reaches an unencrypted disk.
"""

from __future__ import annotations

from typing import Any

from securemodels.config import OperatorConfig
from securemodels.desired import naming
from securemodels.desired.model import Blocker, Context, ControlResult, Manifest

NAME = "storage-encryption"
CONDITION = "StorageEncrypted"
PURPOSE = "models"
ENCRYPTED_ANNOTATION = "securemodels.io/encrypted"
VOLUME = "models"


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


def persistent_volume_claim(context: Context) -> Manifest | None:
    storage = context.spec.storage
    if storage is None:
        return None
    owner = context.owner
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": naming.metadata(owner, owner.child(PURPOSE), "storage"),
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": storage.storage_class_name,
            "resources": {"requests": {"storage": storage.size}},
        },
    }


def volume(context: Context) -> dict[str, Any] | None:
    if context.spec.storage is None:
        return None
    return {"name": VOLUME, "persistentVolumeClaim": {"claimName": context.owner.child(PURPOSE)}}


def preflight(context: Context, live_pvc: Manifest | None) -> Blocker | None:
    storage = context.spec.storage
    if storage is None:
        return None
    storage_class = context.facts.storage_class
    if storage_class is None:
        return Blocker(
            "StorageClassNotFound",
            f"spec.storage.storageClassName {storage.storage_class_name} does not exist",
        )
    encrypted, why = encryption_verdict(storage_class, context.config)
    if not encrypted:
        return Blocker("StorageClassNotEncrypted", f"spec.storage.storageClassName: {why}")
    live_class = (live_pvc or {}).get("spec", {}).get("storageClassName")
    if live_class is not None and live_class != storage.storage_class_name:
        return Blocker(
            "StorageClassImmutable",
            f"volume {context.owner.child(PURPOSE)} exists on StorageClass {live_class}; "
            "a volume cannot move "
            "to another class. Move the data and delete the PersistentVolumeClaim to change it",
        )
    return None


def _volume_problem(volume_spec: dict[str, Any], claim: str | None) -> str | None:
    name = volume_spec.get("name")
    if "persistentVolumeClaim" in volume_spec:
        if volume_spec["persistentVolumeClaim"].get("claimName") != claim:
            return f"volume {name} mounts a claim the operator did not vet"
        return None
    if "emptyDir" in volume_spec:
        if (volume_spec["emptyDir"] or {}).get("medium") != "Memory":
            return f"volume {name} is an emptyDir on the node's disk"
        return None
    if any(kind in volume_spec for kind in ("secret", "configMap", "projected", "downwardAPI")):
        return None
    return f"volume {name} is not encrypted storage"


def check(context: Context, deployment: Manifest | None, pvc: Manifest | None) -> ControlResult:
    if deployment is None:
        return ControlResult(NAME, "Fail", "DeploymentMissing", "the model's Deployment does not exist")
    storage = context.spec.storage
    claim = context.owner.child(PURPOSE) if storage else None
    volumes = deployment["spec"]["template"]["spec"].get("volumes") or []
    problems = [problem for item in volumes if (problem := _volume_problem(item, claim))]
    if storage is not None:
        if pvc is None:
            problems.append(f"PersistentVolumeClaim {claim} does not exist")
        else:
            live_class = pvc["spec"].get("storageClassName")
            storage_class = context.facts.storage_class
            if storage_class is None or storage_class["metadata"]["name"] != live_class:
                problems.append(
                    f"PersistentVolumeClaim {claim} uses StorageClass {live_class}, not the vetted one"
                )
            elif not (verdict := encryption_verdict(storage_class, context.config))[0]:
                problems.append(verdict[1])
    if problems:
        return ControlResult(NAME, "Fail", "UnencryptedStorage", "; ".join(problems))
    if storage is None:
        return ControlResult(NAME, "Pass", "MemoryOnly", "no persistent volume; scratch space is in memory")
    return ControlResult(
        NAME, "Pass", "Encrypted", f"volume on encrypting StorageClass {storage.storage_class_name}"
    )
