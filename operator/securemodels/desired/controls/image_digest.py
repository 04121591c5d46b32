"""Control `image-digest`: every image in the pod is pinned by digest and comes from an allowed registry.

A tag can be moved to other content after review; a digest cannot. The allow-list keeps images to
registries the platform team trusts (the SMD's own list, intersected with the cluster-wide one).
"""

from __future__ import annotations

import re

from securemodels.api.v1alpha1 import DIGEST_IMAGE_PATTERN, registry_allows
from securemodels.desired.model import Blocker, Context, ControlResult, Manifest

NAME = "image-digest"
CONDITION = "ImagePinned"
MODEL_CONTAINER = "model"

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


def preflight(context: Context) -> Blocker | None:
    image = context.spec.model.image
    if not registry_allows(image, context.config.allowed_registries):
        return Blocker(
            "RegistryNotAllowed",
            f"spec.model.image {image} is not from a registry the cluster allows "
            f"({', '.join(context.config.allowed_registries)})",
        )
    return None


def check(context: Context, deployment: Manifest | None) -> ControlResult:
    if deployment is None:
        return ControlResult(NAME, "Fail", "DeploymentMissing", "the model's Deployment does not exist")
    pod = deployment["spec"]["template"]["spec"]
    problems = []
    for container in [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]:
        name, image = container.get("name"), container.get("image", "")
        if not is_pinned(image):
            problems.append(f"container {name} image {image} is not pinned by digest")
            continue
        if name == MODEL_CONTAINER:
            if image != context.spec.model.image:
                problems.append(f"container {name} runs {image}, not spec.model.image")
            if not registry_allows(image, context.spec.image_policy.allowed_registries):
                problems.append(
                    f"container {name} image {image} is not in spec.imagePolicy.allowedRegistries"
                )
        if not registry_allows(image, context.config.allowed_registries):
            problems.append(f"container {name} image {image} is not from a cluster-allowed registry")
    if problems:
        return ControlResult(NAME, "Fail", "ImagePolicyViolated", "; ".join(problems))
    return ControlResult(NAME, "Pass", "PinnedByDigest", "every image is pinned by digest and allowed")
