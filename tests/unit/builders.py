"""Small factories for the unit tests: a valid spec, a context around it, and the live objects an API
server would return for what the operator built, ready to be tampered with."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from securemodels import desired
from securemodels.api.v1alpha1 import SecureModelDeploymentSpec
from securemodels.config import OperatorConfig
from securemodels.desired.controls import mtls
from securemodels.desired.model import Context, Facts, Manifest, Observed
from securemodels.desired.naming import Owner
from securemodels.pki import CertificateInfo, KeyPair
from support.manifests import merge

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
REGISTRY = "registry.example.com"
DIGEST = "sha256:" + "4f3c2b1a09f8e7d6" * 4
IMAGE = f"{REGISTRY}/ml/fraud:1.4.2@{DIGEST}"
NAME = "fraud"
NAMESPACE = "ml-prod"
UID = "8d1f5c3e-0000-4000-8000-000000000001"
STORAGE_CLASS = "encrypted-gp3"
BUNDLE = b"-----BEGIN CERTIFICATE-----\nbundle\n-----END CERTIFICATE-----\n"
FINGERPRINT = "ab" * 32
SERVER = mtls.ServerTLS(
    pair=KeyPair(cert_pem=b"server-cert", key_pem=b"server-key"), bundle_pem=BUNDLE, fingerprint=FINGERPRINT
)

Mutation = Callable[[Manifest], object]


def spec_dict(**overrides: Any) -> dict[str, Any]:
    """The smallest valid spec as a user writes it (camelCase keys), with overrides merged in."""
    return merge({"model": {"image": IMAGE}}, overrides)


def spec(**overrides: Any) -> SecureModelDeploymentSpec:
    return SecureModelDeploymentSpec.model_validate(spec_dict(**overrides))


def owner(name: str = NAME, namespace: str = NAMESPACE, generation: int = 3) -> Owner:
    return Owner(name=name, namespace=namespace, uid=UID, generation=generation)


def context(
    smd: SecureModelDeploymentSpec | None = None,
    *,
    config: OperatorConfig | None = None,
    facts: Facts | None = None,
    now: datetime = NOW,
    who: Owner | None = None,
    **overrides: Any,
) -> Context:
    """A context for `smd` (or the baseline spec with `overrides`), with facts that let it be realised."""
    smd = smd if smd is not None else spec(**overrides)
    if facts is None:
        facts = Facts(storage_class=storage_class() if smd.storage else None)
    return Context(owner=who or owner(), spec=smd, config=config or OperatorConfig(), now=now, facts=facts)


def allowing(*registries: str) -> OperatorConfig:
    """A configuration with a cluster-wide registry allow-list, the sidecar image mirrored into the first."""
    return OperatorConfig(
        allowed_registries=registries, sidecar_image=f"{registries[0]}/nginxinc/nginx-unprivileged@{DIGEST}"
    )


def storage_class(
    name: str = STORAGE_CLASS,
    provisioner: str = "ebs.csi.aws.com",
    parameters: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> Manifest:
    metadata: dict[str, Any] = {"name": name}
    if annotations is not None:
        metadata["annotations"] = dict(annotations)
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": metadata,
        "provisioner": provisioner,
        "parameters": dict({"type": "gp3", "encrypted": "true"} if parameters is None else parameters),
    }


def certificate(now: datetime = NOW, valid_for: timedelta = timedelta(hours=16)) -> CertificateInfo:
    """What the operator would parse from the live TLS Secret."""
    return CertificateInfo(
        not_before=now - timedelta(hours=8),
        not_after=now + valid_for,
        serial_number="1f",
        sha256_fingerprint=FINGERPRINT,
        common_name=NAME,
        dns_names=(NAME,),
    )


def build(ctx: Context, clients: Mapping[str, KeyPair] | None = None) -> desired.Desired:
    return desired.build(ctx, SERVER, clients or {})


def find(manifests: Iterable[Manifest], kind: str, name: str | None = None) -> Manifest:
    matches = [
        item for item in manifests if item["kind"] == kind and name in (None, item["metadata"]["name"])
    ]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def kinds(manifests: Iterable[Manifest]) -> list[str]:
    return [item["kind"] for item in manifests]


def pod_spec(deployment: Manifest) -> dict[str, Any]:
    result: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return result


def container(deployment: Manifest, name: str) -> dict[str, Any]:
    return next(item for item in pod_spec(deployment)["containers"] if item["name"] == name)


def observe(ctx: Context, **changes: Any) -> Observed:
    """What the API server returns once the operator's objects are applied: deep copies, so a test can
    tamper with them; `changes` replace whole fields of the result."""
    owned = copy.deepcopy(list(build(ctx).owned))

    def one(kind: str) -> Manifest | None:
        return next((item for item in owned if item["kind"] == kind), None)

    observed = Observed(
        deployment=one("Deployment"),
        service=one("Service"),
        service_account=one("ServiceAccount"),
        sidecar_config=one("ConfigMap"),
        server_certificate=certificate(ctx.now),
        pvc=one("PersistentVolumeClaim"),
        network_policies=tuple(item for item in owned if item["kind"] == "NetworkPolicy"),
        roles=tuple(item for item in owned if item["kind"] == "Role"),
        role_bindings=tuple(item for item in owned if item["kind"] == "RoleBinding"),
    )
    return replace(observed, **changes)


def tampered(manifest: Manifest | None, mutation: Mutation) -> Manifest:
    """A deep copy of `manifest` changed by `mutation`."""
    assert manifest is not None
    result = copy.deepcopy(manifest)
    mutation(result)
    return result


def binding(
    kind: str, name: str, subjects: list[dict[str, str]], labels: Mapping[str, str] | None = None
) -> Manifest:
    """A RoleBinding or ClusterRoleBinding someone else created."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": dict(labels or {})},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": subjects,
    }
