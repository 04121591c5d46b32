"""Control image-digest: pinned images from allowed registries."""

from __future__ import annotations

import pytest

from securemodels.api.v1alpha1 import registry_allows
from securemodels.desired.controls import image_digest, mtls
from securemodels.desired.model import Blocker, Manifest
from unit.builders import IMAGE, REGISTRY, Mutation, allowing, context, observe, pod_spec, tampered

HEX = "0123456789abcdef" * 4

PINNED = [
    ("digest only", f"registry.example.com/ml/fraud@sha256:{HEX}", True),
    ("tag and digest", f"registry.example.com/ml/fraud:1.4.2@sha256:{HEX}", True),
    ("registry with port", f"registry.example.com:5000/fraud@sha256:{HEX}", True),
    ("no registry", f"fraud@sha256:{HEX}", True),
    ("tag only", "registry.example.com/ml/fraud:1.4.2", False),
    ("no tag, no digest", "registry.example.com/ml/fraud", False),
    ("short digest", f"registry.example.com/ml/fraud@sha256:{HEX[:63]}", False),
    ("long digest", f"registry.example.com/ml/fraud@sha256:{HEX}0", False),
    ("upper-case digest", f"registry.example.com/ml/fraud@sha256:{HEX.upper()}", False),
    ("sha512", f"registry.example.com/ml/fraud@sha512:{HEX}{HEX}", False),
    ("upper-case repository", f"registry.example.com/ML/fraud@sha256:{HEX}", False),
    ("leading space", f" registry.example.com/ml/fraud@sha256:{HEX}", False),
    ("trailing newline", f"registry.example.com/ml/fraud@sha256:{HEX}\n", False),
]


@pytest.mark.parametrize(("image", "expected"), [c[1:] for c in PINNED], ids=[c[0] for c in PINNED])
def test_is_pinned(image: str, expected: bool) -> None:
    assert image_digest.is_pinned(image) is expected


ALLOWED = [
    ("empty list allows all", "anything.io/x@sha256:1", (), True),
    ("registry host", "registry.example.com/ml/x", ("registry.example.com",), True),
    ("one of several", "quay.io/x", ("registry.example.com", "quay.io"), True),
    ("registry path", "registry.example.com/ml/x", ("registry.example.com/ml",), True),
    ("sibling path", "registry.example.com/mlx/x", ("registry.example.com/ml",), False),
    ("look-alike host", "registry.example.com.evil.io/x", ("registry.example.com",), False),
    ("host without a path", "registry.example.com", ("registry.example.com",), False),
    ("trailing slash in the list", "registry.example.com/x", ("registry.example.com/",), True),
    ("port must match", "registry.example.com:5000/x", ("registry.example.com",), False),
    ("implicit Docker Hub", "nginx@sha256:1", ("docker.io",), False),
]


@pytest.mark.parametrize(
    ("image", "registries", "expected"), [c[1:] for c in ALLOWED], ids=[c[0] for c in ALLOWED]
)
def test_registry_allows(image: str, registries: tuple[str, ...], expected: bool) -> None:
    assert registry_allows(image, registries) is expected


@pytest.mark.parametrize(
    ("image", "short"),
    [
        (f"r.io/ml/fraud:1.4.2@sha256:{HEX}", "r.io/ml/fraud@sha256:0123456789ab"),
        (f"r.io/ml/fraud@sha256:{HEX}", "r.io/ml/fraud@sha256:0123456789ab"),
        (f"r.io:5000/fraud@sha256:{HEX}", "r.io:5000/fraud@sha256:0123456789ab"),
        (f"r.io:5000/fraud:v2@sha256:{HEX}", "r.io:5000/fraud@sha256:0123456789ab"),
    ],
)
def test_short_image_drops_the_tag_and_keeps_twelve_digest_digits(image: str, short: str) -> None:
    assert image_digest.short_image(image) == short


def test_preflight_passes_without_a_cluster_allow_list() -> None:
    assert image_digest.preflight(context()) is None


def test_preflight_passes_an_image_the_cluster_allows() -> None:
    assert image_digest.preflight(context(config=allowing("quay.io", REGISTRY))) is None


def test_preflight_blocks_an_image_the_cluster_does_not_allow() -> None:
    blocker = image_digest.preflight(context(config=allowing("quay.io", "ghcr.io")))

    assert isinstance(blocker, Blocker)
    assert blocker.reason == "RegistryNotAllowed"
    assert IMAGE in blocker.message
    assert "quay.io, ghcr.io" in blocker.message


def test_check_passes_the_built_deployment() -> None:
    ctx = context()
    result = image_digest.check(ctx, observe(ctx).deployment)

    assert (result.name, result.status, result.reason) == ("image-digest", "Pass", "PinnedByDigest")


def test_check_passes_when_the_cluster_allows_the_models_registry() -> None:
    ctx = context(config=allowing(REGISTRY))
    result = image_digest.check(ctx, observe(ctx).deployment)

    assert result.status == "Pass", result.message


def set_image(name: str, image: str) -> Mutation:
    def mutate(deployment: Manifest) -> None:
        next(item for item in pod_spec(deployment)["containers"] if item["name"] == name)["image"] = image

    return mutate


def add_init_container(image: str) -> Mutation:
    return lambda deployment: (
        pod_spec(deployment).setdefault("initContainers", []).append({"name": "fetch", "image": image})
    )


TAMPERED = [
    ("model by tag", set_image("model", f"{REGISTRY}/ml/fraud:1.4.2"), "container model image"),
    (
        "model by another digest",
        set_image("model", f"{REGISTRY}/ml/fraud@sha256:{HEX}"),
        "not spec.model.image",
    ),
    (
        "sidecar by tag",
        set_image(mtls.SIDECAR, "nginx:latest"),
        f"container {mtls.SIDECAR} image nginx:latest",
    ),
    ("unpinned init container", add_init_container("busybox:1"), "container fetch image busybox:1"),
]


@pytest.mark.parametrize(("mutation", "problem"), [c[1:] for c in TAMPERED], ids=[c[0] for c in TAMPERED])
def test_check_fails_a_tampered_deployment(mutation: Mutation, problem: str) -> None:
    ctx = context()
    result = image_digest.check(ctx, tampered(observe(ctx).deployment, mutation))

    assert result.status == "Fail"
    assert problem in result.message


def test_check_fails_a_model_registry_outside_the_spec_allow_list() -> None:
    ctx = context(imagePolicy={"allowedRegistries": ["quay.io"]})
    result = image_digest.check(ctx, observe(ctx).deployment)

    assert result.status == "Fail"
    assert "not in spec.imagePolicy.allowedRegistries" in result.message


def test_check_fails_a_model_registry_outside_the_cluster_allow_list() -> None:
    ctx = context(config=allowing("quay.io"))
    result = image_digest.check(ctx, observe(ctx).deployment)

    assert result.status == "Fail"
    assert f"container model image {IMAGE} is not from a cluster-allowed registry" in result.message


def test_check_fails_without_a_deployment() -> None:
    result = image_digest.check(context(), None)

    assert (result.status, result.reason) == ("Fail", "DeploymentMissing")
