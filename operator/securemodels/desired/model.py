"""Plain data passed between the pure layers: what was read, what is wanted, what was judged."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from securemodels.api.v1alpha1 import SecureModelDeploymentSpec
from securemodels.config import OperatorConfig
from securemodels.desired.naming import Owner
from securemodels.pki import CertificateInfo

Manifest = dict[str, Any]


def rfc3339(moment: datetime) -> str:
    """Kubernetes' timestamp format (seconds, UTC)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


ControlStatus = Literal["Pass", "Fail", "Weakened"]


@dataclass(frozen=True)
class ControlResult:
    """One control's verdict. `weakenings` name what the spec opted out of, for status and metrics."""

    name: str
    status: ControlStatus
    reason: str
    message: str
    weakenings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Blocker:
    """Why the spec cannot be realised as written. The workload is left as it was."""

    reason: str
    message: str


@dataclass(frozen=True)
class Facts:
    """What the cluster says about things the SMD refers to but does not own."""

    storage_class: Manifest | None = None
    missing_references: tuple[str, ...] = ()  # "Secret/name", "ConfigMap/name"
    region_has_nodes: bool | None = None  # None: no residency requested or not looked up
    missing_client_namespaces: tuple[str, ...] = ()
    unmanaged_client_namespaces: tuple[str, ...] = ()  # outside the operator's watchNamespaces

    def delivers_to(self, namespace: str) -> bool:
        """Whether client certificates can go to this namespace."""
        return (
            namespace not in self.missing_client_namespaces
            and namespace not in self.unmanaged_client_namespaces
        )


@dataclass(frozen=True)
class Observed:
    """Live objects read back from the API server, as plain dicts (no Secret data)."""

    deployment: Manifest | None = None
    service: Manifest | None = None
    service_account: Manifest | None = None
    sidecar_config: Manifest | None = None
    server_certificate: CertificateInfo | None = None  # parsed from the live TLS Secret's tls.crt
    pvc: Manifest | None = None
    network_policies: tuple[Manifest, ...] = ()  # every policy in the namespace
    roles: tuple[Manifest, ...] = ()  # the operator's roles for this SMD
    role_bindings: tuple[Manifest, ...] = ()  # every binding in the namespace
    cluster_role_bindings: tuple[Manifest, ...] = ()
    pods: tuple[Manifest, ...] = ()  # every pod with the model's selector labels
    names_taken: tuple[str, ...] = ()  # "Kind/name" of objects with our names that another owner holds


@dataclass(frozen=True)
class Context:
    """Everything a builder or a check may look at."""

    owner: Owner
    spec: SecureModelDeploymentSpec
    config: OperatorConfig
    now: datetime
    facts: Facts = field(default_factory=Facts)
