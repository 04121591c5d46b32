"""The operator's settings: one frozen object, loaded once and passed to whoever needs it.

Builders receive it as an argument and never read the environment themselves, so tests can give each
case its own settings.
"""

from __future__ import annotations

from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from securemodels.api.v1alpha1 import DIGEST_IMAGE_PATTERN, registry_allows

# nginx-unprivileged (runs as UID 101, listens on unprivileged ports), pinned by digest.
DEFAULT_SIDECAR_IMAGE = (
    "docker.io/nginxinc/nginx-unprivileged:1.27-alpine"
    "@sha256:65e3e85dbaed8ba248841d9d58a899b6197106c23cb0ff1a132b7bfe0547e4c0"
)


class EncryptionParameter(BaseModel):
    """A StorageClass parameter that proves encryption at rest for one provisioner."""

    model_config = ConfigDict(frozen=True, alias_generator=to_camel, populate_by_name=True, extra="forbid")
    parameter: str
    values: tuple[str, ...] = Field(
        default=(), description="Accepted values, compared without case; empty: any non-empty value."
    )


class DNSPeer(BaseModel):
    """Where cluster DNS runs, for the egress rule every model gets."""

    model_config = ConfigDict(frozen=True, alias_generator=to_camel, populate_by_name=True, extra="forbid")
    namespace: str = "kube-system"
    pod_labels: dict[str, str] = Field(default_factory=lambda: {"k8s-app": "kube-dns"})


_EBS = EncryptionParameter(parameter="encrypted", values=("true",))
_GCE_PD = EncryptionParameter(parameter="disk-encryption-kms-key")
_AZURE_DISK = EncryptionParameter(parameter="diskEncryptionSetID")
# Provisioner -> the parameter that proves encryption at rest (CSI and in-tree names of each cloud).
DEFAULT_ENCRYPTING_PROVISIONERS: dict[str, EncryptionParameter] = {
    "ebs.csi.aws.com": _EBS,
    "kubernetes.io/aws-ebs": _EBS,
    "pd.csi.storage.gke.io": _GCE_PD,
    "kubernetes.io/gce-pd": _GCE_PD,
    "disk.csi.azure.com": _AZURE_DISK,
    "kubernetes.io/azure-disk": _AZURE_DISK,
}


class LeaderElection(BaseModel):
    """One replica reconciles at a time; the others keep their caches warm and take over when its Lease
    expires (client-go's timing: the holder stops writing after renewDeadlineSeconds without a renewal,
    before leaseDurationSeconds let anyone else take the Lease)."""

    model_config = ConfigDict(frozen=True, alias_generator=to_camel, populate_by_name=True, extra="forbid")
    enabled: bool = True
    lease_name: str = Field(
        "secure-model-operator", pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=253
    )
    lease_duration_seconds: int = Field(15, ge=2, le=300)
    renew_deadline_seconds: int = Field(10, ge=1, le=300)
    retry_period_seconds: float = Field(2.0, gt=0, le=60)

    @model_validator(mode="after")
    def _deadline_before_expiry(self) -> LeaderElection:
        if not self.retry_period_seconds < self.renew_deadline_seconds < self.lease_duration_seconds:
            raise ValueError(
                "leaderElection needs retryPeriodSeconds < renewDeadlineSeconds < leaseDurationSeconds, "
                "so that a leader stops writing before its Lease can pass to another replica"
            )
        return self


# The report APIs the operator can write: the API version and its namespaced report kind.
REPORT_KINDS = {"wgpolicyk8s.io/v1alpha2": "PolicyReport", "openreports.io/v1alpha1": "Report"}


class PolicyReports(BaseModel):
    """One compliance report per namespace with SMDs: a PolicyReport (the format Kyverno and Policy
    Reporter read) or an OpenReports Report. Without its CRD in the cluster, none is written."""

    model_config = ConfigDict(frozen=True, alias_generator=to_camel, populate_by_name=True, extra="forbid")
    enabled: bool = True
    api: Literal["wgpolicyk8s.io/v1alpha2", "openreports.io/v1alpha1"] = "wgpolicyk8s.io/v1alpha2"

    @property
    def kind(self) -> str:
        return REPORT_KINDS[self.api]


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
    weights_verifier_image: str | None = Field(
        None,
        pattern=DIGEST_IMAGE_PATTERN,
        description=(
            "Image of the init container that verifies model weights, by digest: the operator's own image "
            "(the chart's default) or a mirror of it, from allowedRegistries. Unset or outside them: SMDs "
            "that declare a signature are Blocked."
        ),
    )
    require_signed_weights: bool = Field(
        False,
        description="Every SMD must declare spec.model.weights with a signature; others are Blocked.",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        "Always",
        description=(
            "Pull policy of the model and sidecar containers. Always (default) makes the kubelet check "
            "the pod's pull credentials for every pod; images are pinned by digest either way."
        ),
    )
    ca_key_algorithm: Literal["ECDSA-P256", "RSA-3072"] = Field("ECDSA-P256", description="CA key type.")
    ca_duration_hours: int = Field(24 * 365, ge=48, description="Lifetime of the operator's CA.")
    encrypting_provisioners: dict[str, EncryptionParameter] = Field(
        default_factory=lambda: dict(DEFAULT_ENCRYPTING_PROVISIONERS)
    )
    dns: DNSPeer = Field(default_factory=DNSPeer)
    leader_election: LeaderElection = Field(default_factory=LeaderElection)
    policy_reports: PolicyReports = Field(default_factory=PolicyReports)
    cluster_domain: str = "cluster.local"

    @model_validator(mode="after")
    def _sidecar_from_an_allowed_registry(self) -> OperatorConfig:
        if not registry_allows(self.sidecar_image, self.allowed_registries):
            raise ValueError(
                f"sidecarImage {self.sidecar_image} is not from a registry in allowedRegistries; "
                "mirror it to one of them"
            )
        return self

    @classmethod
    def load(cls, text: str | None, **overrides: object) -> OperatorConfig:
        """From the configuration file's text (None: defaults), with overrides by field name."""
        data: dict[str, object] = yaml.safe_load(text or "") or {}
        data.update(
            {
                (cls.model_fields[key].alias or key): value
                for key, value in overrides.items()
                if value is not None
            }
        )
        return cls.model_validate(data)
