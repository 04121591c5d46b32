"""The model's Deployment: one place where every control's contribution to the pod meets."""

from __future__ import annotations

from typing import Any

from securemodels.api.v1alpha1 import (
    RESERVED_ENV_PREFIX,
    SCRATCH_DIR,
    SCRATCH_SIZE,
    SECRET_FILES_DIR,
    SHARED_MEMORY_DIR,
    EnvVar,
)
from securemodels.desired import canonical, naming, probes
from securemodels.desired.controls import image_digest, mtls, pod_security, residency, storage, weights
from securemodels.desired.model import Context, Manifest

SCRATCH_VOLUME = "scratch"
SHARED_MEMORY_VOLUME = "shm"
BIND_ADDRESS_ENV = f"{RESERVED_ENV_PREFIX}BIND_ADDRESS"
PORT_ENV = f"{RESERVED_ENV_PREFIX}PORT"


def _env(variable: EnvVar) -> dict[str, Any]:
    if variable.value_from is None:
        return {"name": variable.name, "value": variable.value}
    reference = variable.value_from.config_map_key_ref
    return {
        "name": variable.name,
        "valueFrom": {"configMapKeyRef": {"name": reference.name, "key": reference.key}},
    }


def _secret_volume(name: str) -> str:
    return f"secret-{name}"


def model_container(context: Context) -> dict[str, Any]:
    model = context.spec.model
    mounts: list[dict[str, Any]] = [{"name": SCRATCH_VOLUME, "mountPath": SCRATCH_DIR}]
    if model.shared_memory_size is not None:
        mounts.append({"name": SHARED_MEMORY_VOLUME, "mountPath": SHARED_MEMORY_DIR})
    if context.spec.storage is not None:
        mounts.append({"name": storage.VOLUME, "mountPath": context.spec.storage.mount_path})
        if weights.volume_read_only(context):
            mounts[-1]["readOnly"] = True
    if model.weights is not None:
        mounts.append(weights.weights_mount(model.weights))
    mounts += [
        {"name": _secret_volume(item.name), "mountPath": f"{SECRET_FILES_DIR}/{item.name}", "readOnly": True}
        for item in model.secret_files
    ]
    container: dict[str, Any] = {
        "name": image_digest.MODEL_CONTAINER,
        "image": model.image,
        "imagePullPolicy": context.config.image_pull_policy,
        "env": [
            {"name": BIND_ADDRESS_ENV, "value": "127.0.0.1"},
            {"name": PORT_ENV, "value": str(model.port)},
            *(_env(variable) for variable in model.env),
        ],
        "resources": model.resources.container_resources(),
        "securityContext": pod_security.container_security_context(),
        **probes.model_probes(context),
        # The sidecar drains for as long: the model must answer what it forwards meanwhile.
        "lifecycle": {"preStop": {"sleep": {"seconds": mtls.DRAIN_SECONDS}}},
        "volumeMounts": mounts,
    }
    if model.command is not None:
        container["command"] = list(model.command)
    if model.args:
        container["args"] = list(model.args)
    if model.metrics_port is not None:
        container["ports"] = [{"name": "metrics", "containerPort": model.metrics_port, "protocol": "TCP"}]
    return container


def _scheduling(context: Context) -> dict[str, Any]:
    """The pod's node selector, tolerations and classes: they narrow where it runs, never widen the
    residency affinity, which applies as well."""
    scheduling = context.spec.scheduling
    found: dict[str, Any] = {}
    if scheduling.node_selector:
        found["nodeSelector"] = dict(scheduling.node_selector)
    if scheduling.tolerations:
        found["tolerations"] = [
            item.model_dump(by_alias=True, exclude_none=True, mode="json") for item in scheduling.tolerations
        ]
    if scheduling.priority_class_name:
        found["priorityClassName"] = scheduling.priority_class_name
    if scheduling.runtime_class_name:
        found["runtimeClassName"] = scheduling.runtime_class_name
    return found


def _memory_volumes(context: Context) -> list[dict[str, Any]]:
    """Scratch space and the optional /dev/shm, in memory and bounded: nothing reaches the node's disk,
    and what the model writes counts against its memory limit."""
    volumes = [{"name": SCRATCH_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": SCRATCH_SIZE}}]
    if (size := context.spec.model.shared_memory_size) is not None:
        volumes.append({"name": SHARED_MEMORY_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": size}})
    return volumes


def _strategy(context: Context) -> dict[str, Any]:
    """Replace pods one at a time with no gap; but a ReadWriteOnce volume can be attached to one node
    only, so with storage the old pod must go before the new one starts."""
    if context.spec.storage is not None:
        return {"type": "Recreate"}
    return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


def deployment(context: Context, server: mtls.ServerTLS) -> Manifest:
    owner = context.owner
    volumes = [*_memory_volumes(context), *mtls.sidecar_volumes(context)]
    if (model_volume := storage.volume(context)) is not None:
        volumes.append(model_volume)
    volumes += [
        {"name": _secret_volume(item.name), "secret": {"secretName": item.secret_name, "defaultMode": 0o440}}
        for item in context.spec.model.secret_files
    ]
    volumes += weights.volumes(context)
    pod: dict[str, Any] = {
        "serviceAccountName": context.names.service_account.name,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security.pod_security_context(),
        "containers": [model_container(context), mtls.sidecar_container(context)],
        "volumes": volumes,
    }
    if init_containers := weights.init_containers(context):
        pod["initContainers"] = init_containers
    if (node_affinity := residency.affinity(context)) is not None:
        pod["affinity"] = node_affinity
    pod |= _scheduling(context)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": naming.metadata(owner, context.names.deployment, "model"),
        "spec": {
            "replicas": context.spec.model.replicas,
            "revisionHistoryLimit": 3,
            "progressDeadlineSeconds": probes.progress_deadline_seconds(context),
            "selector": {"matchLabels": naming.selector_labels(owner)},
            "strategy": _strategy(context),
            "template": {
                "metadata": {
                    "labels": naming.labels(owner, "model"),
                    "annotations": mtls.pod_annotations(context, server),
                },
                "spec": pod,
            },
        },
    }


def with_template_mac(
    deployment: Manifest, key: bytes, owner_uid: str, canonical_deployment: Manifest
) -> tuple[Manifest, Manifest]:
    """The Deployment and its canonical form, both with the template stamped by an HMAC of the
    canonical pod spec: pods made from it can be told apart from pods made from anyone else's template.
    The stamp is an annotation, outside the spec it covers."""
    mac = canonical.template_mac(key, owner_uid, canonical_deployment["spec"]["template"]["spec"])

    def stamped(manifest: Manifest) -> Manifest:
        template = manifest["spec"]["template"]
        metadata = template.get("metadata") or {}
        annotations = {**(metadata.get("annotations") or {}), canonical.TEMPLATE_MAC_ANNOTATION: mac}
        return {
            **manifest,
            "spec": {
                **manifest["spec"],
                "template": {**template, "metadata": {**metadata, "annotations": annotations}},
            },
        }

    return stamped(deployment), stamped(canonical_deployment)
