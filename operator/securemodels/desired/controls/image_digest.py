"""Control `image-digest`: every image that runs is pinned by digest and comes from an allowed registry.

A tag can be moved to other content after review; a digest cannot. The allow-list keeps images to
registries the platform team trusts (the SMD's own list, intersected with the cluster-wide one). Judged
on the Deployment's template and on every container of every running pod of the model, init and
ephemeral containers included.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from enum import StrEnum
from typing import Any

from securemodels.api.v1alpha1 import DIGEST_IMAGE_PATTERN, registry_allows
from securemodels.desired.controls.base import verdict
from securemodels.desired.model import Blocker, Context, ControlResult, Manifest, Observed

NAME = "image-digest"
CONDITION = "ImagePinned"
MODEL_CONTAINER = "model"
SIDECAR_CONTAINER = "mtls-proxy"


class Reason(StrEnum):
    PINNED = "PinnedByDigest"
    VIOLATED = "ImagePolicyViolated"
    DEPLOYMENT_MISSING = "DeploymentMissing"
    REGISTRY_NOT_ALLOWED = "RegistryNotAllowed"


_DIGEST = re.compile(DIGEST_IMAGE_PATTERN)


def is_pinned(image: str) -> bool:
    return _DIGEST.fullmatch(image) is not None


def short_image(image: str) -> str:
    """`registry/repo@sha256:0123456789ab` for the printer column."""
    name, _, digest = image.partition("@sha256:")
    without_tag, colon, tag = name.rpartition(":")
    if colon and "/" not in tag:
        name = without_tag
    return f"{name}@sha256:{digest[:12]}"


def preflight(context: Context, observed: Observed) -> Blocker | None:
    weights = context.spec.model.weights
    for field, image in (
        ("spec.model.image", context.spec.model.image),
        ("spec.model.weights.image", weights.image if weights is not None else None),
    ):
        if image is not None and not registry_allows(image, context.config.allowed_registries):
            return Blocker(
                Reason.REGISTRY_NOT_ALLOWED,
                f"{field} {image} is not from a registry the cluster allows "
                f"({', '.join(context.config.allowed_registries)})",
            )
    return None


def containers(pod_spec: Manifest) -> Iterator[dict[str, Any]]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from pod_spec.get(key) or []


def image_problems(context: Context, pod_spec: Manifest, where: str, *, current: bool) -> list[str]:
    """What is wrong with the images of one pod spec. `current`: the spec must run spec.model.image
    (the template), rather than any image the SMD's policy allows (a pod of an earlier revision)."""
    problems = []
    for container in containers(pod_spec):
        name, image = container.get("name"), str(container.get("image", ""))
        if not is_pinned(image):
            problems.append(f"{where}: container {name} image {image} is not pinned by digest")
            continue
        if not registry_allows(image, context.config.allowed_registries):
            problems.append(f"{where}: container {name} image {image} is not from a cluster-allowed registry")
        if name == SIDECAR_CONTAINER and image != context.config.sidecar_image:
            problems.append(
                f"{where}: the {SIDECAR_CONTAINER} sidecar runs {image}, not the configured image"
            )
        elif name == MODEL_CONTAINER:
            if current and image != context.spec.model.image:
                problems.append(f"{where}: container {name} runs {image}, not spec.model.image")
            if not registry_allows(image, context.spec.image_policy.allowed_registries):
                problems.append(
                    f"{where}: container {name} image {image} is not in spec.imagePolicy.allowedRegistries"
                )
    problems += _volume_image_problems(context, pod_spec, where, current=current)
    return problems


def _volume_image_problems(context: Context, pod_spec: Manifest, where: str, *, current: bool) -> list[str]:
    """Image volumes (the model's weights) are held to the model image's rules."""
    problems = []
    weights = context.spec.model.weights
    for volume in pod_spec.get("volumes") or []:
        if "image" not in volume:
            continue
        name, image = volume.get("name"), str((volume["image"] or {}).get("reference", ""))
        if not is_pinned(image):
            problems.append(f"{where}: volume {name} image {image} is not pinned by digest")
            continue
        if not registry_allows(image, context.config.allowed_registries):
            problems.append(f"{where}: volume {name} image {image} is not from a cluster-allowed registry")
        if not registry_allows(image, context.spec.image_policy.allowed_registries):
            problems.append(
                f"{where}: volume {name} image {image} is not in spec.imagePolicy.allowedRegistries"
            )
        if current and (weights is None or image != weights.image):
            problems.append(f"{where}: volume {name} mounts {image}, not spec.model.weights.image")
    return problems


def check(context: Context, observed: Observed) -> ControlResult:
    deployment = observed.get(context.names.deployment)
    if deployment is None:
        return ControlResult(NAME, "Fail", Reason.DEPLOYMENT_MISSING, "the model's Deployment does not exist")
    problems = list(observed.findings.get(NAME, ()))
    problems += image_problems(
        context, deployment["spec"]["template"]["spec"], "the Deployment's template", current=True
    )
    for pod in observed.pods:
        problems += image_problems(
            context, pod.get("spec") or {}, f"pod {pod['metadata']['name']}", current=False
        )
    return verdict(
        NAME, problems, Reason.VIOLATED, Reason.PINNED, "every image is pinned by digest and allowed"
    )
