"""Control image-digest: pinned images from allowed registries."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from securemodels.api.v1alpha1 import ImagePolicy, registry_allows
from securemodels.desired import judging
from securemodels.desired.controls import image_digest, mtls
from securemodels.desired.model import Blocker, Context, ControlResult, Observed
from unit.builders import (
    IMAGE,
    POD_NAME,
    REGISTRY,
    Mutation,
    allowing,
    altered,
    container,
    context,
    observe,
    pod_spec,
    removed,
    spec,
    with_pod,
)

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
    assert image_digest.preflight(context(), Observed()) is None


def test_preflight_passes_an_image_the_cluster_allows() -> None:
    assert image_digest.preflight(context(config=allowing("quay.io", REGISTRY)), Observed()) is None


def test_preflight_blocks_an_image_the_cluster_does_not_allow() -> None:
    blocker = image_digest.preflight(context(config=allowing("quay.io", "ghcr.io")), Observed())

    assert isinstance(blocker, Blocker)
    assert blocker.reason == image_digest.Reason.REGISTRY_NOT_ALLOWED
    assert blocker.message == (
        f"spec.model.image {IMAGE} is not from a registry the cluster allows (quay.io, ghcr.io)"
    )


def check(ctx: Context, observed: Observed) -> ControlResult:
    return image_digest.check(ctx, observed)


def test_check_passes_the_built_deployment_and_its_pod() -> None:
    ctx = context()
    result = check(ctx, observe(ctx))

    assert (result.name, result.status, result.reason) == ("image-digest", "Pass", "PinnedByDigest")


def test_check_passes_when_the_cluster_allows_the_models_registry() -> None:
    ctx = context(config=allowing(REGISTRY))
    result = check(ctx, observe(ctx))

    assert result.status == "Pass", result.message


def set_image(name: str, image: str) -> Mutation:
    return lambda item: container(item, name).update(image=image)


def add_container(kind: str, name: str, image: str) -> Mutation:
    return lambda item: pod_spec(item).setdefault(kind, []).append({"name": name, "image": image})


OTHER_DIGEST = f"sha256:{HEX}"
TAMPERED: list[tuple[str, Mutation, str]] = [
    (
        "model by tag",
        set_image("model", f"{REGISTRY}/ml/fraud:1.4.2"),
        f"container model image {REGISTRY}/ml/fraud:1.4.2 is not pinned by digest",
    ),
    (
        "sidecar by tag",
        set_image(mtls.SIDECAR, "nginx:latest"),
        f"container {mtls.SIDECAR} image nginx:latest is not pinned by digest",
    ),
    (
        "sidecar by another digest",
        set_image(mtls.SIDECAR, f"docker.io/nginx@{OTHER_DIGEST}"),
        f"the {mtls.SIDECAR} sidecar runs docker.io/nginx@{OTHER_DIGEST}, not the configured image",
    ),
    (
        "unpinned init container",
        add_container("initContainers", "fetch", "busybox:1"),
        "container fetch image busybox:1 is not pinned by digest",
    ),
    (
        "unpinned ephemeral container",
        add_container("ephemeralContainers", "debug", "busybox"),
        "container debug image busybox is not pinned by digest",
    ),
    (
        "model from a registry outside the SMD's list",
        set_image("model", f"quay.io/ml/fraud@{OTHER_DIGEST}"),
        f"container model image quay.io/ml/fraud@{OTHER_DIGEST} is not in spec.imagePolicy.allowedRegistries",
    ),
]
RESTRICTED: dict[str, Any] = {"imagePolicy": {"allowedRegistries": [REGISTRY]}}


@pytest.mark.parametrize(("mutation", "problem"), [c[1:] for c in TAMPERED], ids=[c[0] for c in TAMPERED])
def test_check_fails_a_tampered_template(mutation: Mutation, problem: str) -> None:
    ctx = context(**RESTRICTED)
    result = check(ctx, altered(observe(ctx), "Deployment", mutation))

    assert (result.status, result.reason) == ("Fail", "ImagePolicyViolated")
    assert f"the Deployment's template: {problem}" in result.message


@pytest.mark.parametrize(("mutation", "problem"), [c[1:] for c in TAMPERED], ids=[c[0] for c in TAMPERED])
def test_check_fails_a_pod_that_runs_such_an_image(mutation: Mutation, problem: str) -> None:
    ctx = context(**RESTRICTED)
    result = check(ctx, with_pod(observe(ctx), mutation, stamp=True))

    assert (result.status, result.reason) == ("Fail", "ImagePolicyViolated")
    assert result.message == f"pod {POD_NAME}: {problem}"


def test_the_template_must_run_the_spec_image() -> None:
    ctx = context()
    other = f"{REGISTRY}/ml/fraud@{OTHER_DIGEST}"
    result = check(ctx, altered(observe(ctx), "Deployment", set_image("model", other)))

    assert result.message == f"the Deployment's template: container model runs {other}, not spec.model.image"


def test_a_pod_of_an_earlier_revision_may_run_another_allowed_image() -> None:
    ctx = context(**RESTRICTED)
    earlier = with_pod(observe(ctx), set_image("model", f"{REGISTRY}/ml/fraud@{OTHER_DIGEST}"), stamp=True)

    assert check(ctx, earlier).status == "Pass"


def test_check_fails_a_model_registry_outside_the_spec_allow_list() -> None:
    # A spec that bypassed the CRD's rule: the operator judges it all the same.
    ctx = context(
        spec(imagePolicy={"allowedRegistries": [REGISTRY]}).model_copy(
            update={"image_policy": ImagePolicy(allowed_registries=["quay.io"])}
        )
    )
    result = check(ctx, observe(ctx))

    assert result.status == "Fail"
    assert f"container model image {IMAGE} is not in spec.imagePolicy.allowedRegistries" in result.message


def test_check_fails_a_model_registry_outside_the_cluster_allow_list() -> None:
    ctx = context(config=allowing("quay.io"))
    result = check(ctx, observe(ctx))

    assert result.status == "Fail"
    assert (
        f"the Deployment's template: container model image {IMAGE} is not from a cluster-allowed registry"
        in result.message
    )
    assert (
        f"pod {POD_NAME}: container model image {IMAGE} is not from a cluster-allowed registry"
        in result.message
    )


def test_check_fails_without_a_deployment() -> None:
    ctx = context()
    result = check(ctx, removed(observe(ctx), "Deployment"))

    assert (result.status, result.reason) == ("Fail", "DeploymentMissing")


def test_judging_fails_image_digest_for_a_pod_whose_image_was_changed() -> None:
    ctx = context()
    observed = with_pod(observe(ctx), set_image("model", f"{REGISTRY}/ml/fraud@{OTHER_DIGEST}"))
    (result,) = [item for item in judging.judge(ctx, observed) if item.name == image_digest.NAME]

    assert result.status == "Fail"
    assert (
        result.message == f"pod {POD_NAME}: spec.containers[model].image differs from the operator's template"
    )


def test_findings_come_first() -> None:
    ctx = context()
    observed = replace(
        altered(observe(ctx), "Deployment", add_container("initContainers", "x", "busybox")),
        findings={image_digest.NAME: ("Deployment fraud was changed",)},
    )

    assert check(ctx, observed).message.split("; ")[0] == "Deployment fraud was changed"
