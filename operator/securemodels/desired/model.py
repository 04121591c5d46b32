"""Plain data passed between the pure layers: what was read, what is wanted, what was judged."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, Literal

from securemodels.api.v1alpha1 import SecureModelDeploymentSpec
from securemodels.config import OperatorConfig
from securemodels.desired.naming import ChildRef, Children, Owner, children
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
    """Why the spec cannot be realised as written. Nothing is written while there is one."""

    reason: str
    message: str


@dataclass(frozen=True)
class Facts:
    """What the cluster says about things the SMD refers to but does not own."""

    storage_class: Manifest | None = None
    missing_references: tuple[str, ...] = ()  # "Secret/name", "ConfigMap/name"
    region_has_nodes: bool | None = None  # None: no residency requested
    node_regions: Mapping[str, str] = field(default_factory=dict)  # node name -> region label
    missing_client_namespaces: tuple[str, ...] = ()
    unmanaged_client_namespaces: tuple[str, ...] = ()  # outside the operator's watchNamespaces
    # The ConfigMap spec.model.weights.signature names, as read this pass; None: missing or not needed.
    signing_config_map: Manifest | None = None

    def delivers_to(self, namespace: str) -> bool:
        """Whether client certificates can go to this namespace."""
        return (
            namespace not in self.missing_client_namespaces
            and namespace not in self.unmanaged_client_namespaces
        )


@dataclass(frozen=True)
class Context:
    """Everything a builder or a check may look at."""

    owner: Owner
    spec: SecureModelDeploymentSpec
    config: OperatorConfig
    now: datetime
    facts: Facts = field(default_factory=Facts)
    # Key of the operator's stamps on what it writes (desired/canonical.py); empty when rendering offline.
    stamp_key: bytes = field(default=b"", repr=False)

    @cached_property
    def names(self) -> Children:
        # Asked a score of times per pass; owner and spec never change on a context.
        return children(self.owner, self.spec)


@dataclass(frozen=True)
class Permissions:
    """What the authorizer answered for the model's account, probe by probe (desired/permissions.py).
    `allowed` holds the probes the account may do; `everyone` those a service account with no bindings
    of its own may do too, so the grant is the cluster's, not the model's."""

    allowed: tuple[str, ...] = ()
    everyone: tuple[str, ...] = ()


@dataclass(frozen=True)
class Observed:
    """The live state an SMD is judged on, as plain dicts (no Secret data beyond the operator's own).

    `objects` are the SMD's own children as they are after this pass's writes; `drift` names the ones
    someone else had changed or deleted, with the paths that differed, before this pass restored them.
    """

    objects: Mapping[ChildRef, Manifest] = field(default_factory=dict)
    drift: Mapping[ChildRef, tuple[str, ...]] = field(default_factory=dict)
    # Per control name: problems found by the generic judges (drift, pods), for its check to report.
    findings: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    taken: tuple[ChildRef, ...] = ()  # names the SMD wants that another owner holds
    canonical_template: Manifest | None = None  # the current pod template spec, as the server stores it
    pods: tuple[Manifest, ...] = ()  # with the model's labels, or using its Secret, volume or account
    replica_sets: tuple[Manifest, ...] = ()  # made by the model's Deployment
    foreign_policies: tuple[Manifest, ...] = ()  # NetworkPolicies of the namespace that are not the SMD's
    foreign_services: tuple[Manifest, ...] = ()  # Services of the namespace that are not the SMD's
    bindings_naming_model: tuple[str, ...] = ()  # "RoleBinding ns/name" that name the model's account
    permissions: Permissions | None = None  # None: not asked yet
    server_certificate: CertificateInfo | None = None  # parsed from the live TLS Secret

    def get(self, ref: ChildRef) -> Manifest | None:
        return self.objects.get(ref)
