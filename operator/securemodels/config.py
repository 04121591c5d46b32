"""The operator's settings: one frozen object, loaded once and passed to whoever needs it.

Builders receive it as an argument and never read the environment themselves, so tests can give each
case its own settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from securemodels.api.v1alpha1 import DIGEST_IMAGE_PATTERN

# Provisioner -> (parameter, values that mean "encrypted"; empty tuple: any non-empty value).
DEFAULT_ENCRYPTING_PROVISIONERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "ebs.csi.aws.com": ("encrypted", ("true",)),
    "kubernetes.io/aws-ebs": ("encrypted", ("true",)),
    "pd.csi.storage.gke.io": ("disk-encryption-kms-key", ()),
    "kubernetes.io/gce-pd": ("disk-encryption-kms-key", ()),
    "disk.csi.azure.com": ("diskEncryptionSetID", ()),
    "kubernetes.io/azure-disk": ("diskEncryptionSetID", ()),
}

# nginx-unprivileged (runs as UID 101, listens on unprivileged ports), pinned by digest.
DEFAULT_SIDECAR_IMAGE = (
    "docker.io/nginxinc/nginx-unprivileged:1.27-alpine"
    "@sha256:65e3e85dbaed8ba248841d9d58a899b6197106c23cb0ff1a132b7bfe0547e4c0"
)


class EncryptionParameter(BaseModel):
    """A StorageClass parameter that proves encryption at rest for one provisioner."""

    model_config = ConfigDict(frozen=True, alias_generator=to_camel, populate_by_name=True, extra="forbid")
    parameter: str
    values: tuple[str, ...] = Field(default=(), description="Accepted values; empty: any non-empty value.")


class DNSPeer(BaseModel):
    """Where cluster DNS runs, for the egress rule every model gets."""

    model_config = ConfigDict(frozen=True, alias_generator=to_camel, populate_by_name=True, extra="forbid")
    namespace: str = "kube-system"
    pod_labels: dict[str, str] = Field(default_factory=lambda: {"k8s-app": "kube-dns"})


def _default_provisioners() -> dict[str, EncryptionParameter]:
    return {
        provisioner: EncryptionParameter(parameter=parameter, values=values)
        for provisioner, (parameter, values) in DEFAULT_ENCRYPTING_PROVISIONERS.items()
    }


class OperatorConfig(BaseModel):
    """Cluster-wide settings, from the config file (`--config`) mounted by the Helm chart."""

    model_config = ConfigDict(frozen=True, alias_generator=to_camel, populate_by_name=True, extra="forbid")

    namespace: str = Field("secure-model-operator", description="The operator's namespace (holds the CA).")
    watch_namespaces: tuple[str, ...] = Field((), description="Namespaces to manage; empty: all.")
    resync_seconds: float = Field(30.0, gt=0, description="Every SMD is re-checked this often.")
    workers: int = Field(4, ge=1, le=64, description="SMDs reconciled concurrently.")
    allowed_registries: tuple[str, ...] = Field(
        (), description="Cluster-wide registry allow-list for model images; empty: no cluster-wide limit."
    )
    monitoring_namespace: str = Field(
        "monitoring", description="Namespace whose pods may scrape the models' metrics ports."
    )
    sidecar_image: str = Field(
        DEFAULT_SIDECAR_IMAGE,
        pattern=DIGEST_IMAGE_PATTERN,
        description="nginx image of the mTLS sidecar, by digest.",
    )
    ca_key_algorithm: Literal["ECDSA-P256", "RSA-3072"] = Field("ECDSA-P256", description="CA key type.")
    ca_duration_hours: int = Field(24 * 365, ge=48, description="Lifetime of the operator's CA.")
    encrypting_provisioners: dict[str, EncryptionParameter] = Field(default_factory=_default_provisioners)
    dns: DNSPeer = Field(default_factory=DNSPeer)
    cluster_domain: str = "cluster.local"

    @model_validator(mode="after")
    def _sidecar_from_an_allowed_registry(self) -> OperatorConfig:
        registries = [registry.rstrip("/") + "/" for registry in self.allowed_registries]
        if registries and not any(self.sidecar_image.startswith(registry) for registry in registries):
            raise ValueError(
                f"sidecarImage {self.sidecar_image} is not from a registry in allowedRegistries; "
                "mirror it to one of them"
            )
        return self

    @classmethod
    def load(cls, path: Path | None, **overrides: object) -> OperatorConfig:
        data: dict[str, object] = {}
        if path is not None:
            data = yaml.safe_load(path.read_text()) or {}
        data.update(
            {
                (cls.model_fields[key].alias or key): value
                for key, value in overrides.items()
                if value is not None
            }
        )
        return cls.model_validate(data)
