"""The SecureModelDeployment API, version v1alpha1.

These pydantic models are the single source of truth: the CRD's OpenAPI schema, its CEL rules and the
operator's parsing of a live object all come from here. Field names are the camelCase aliases users write;
every field carries a description so that `kubectl explain` is useful.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

GROUP = "securemodels.io"
VERSION = "v1alpha1"
KIND = "SecureModelDeployment"
PLURAL = "securemodeldeployments"
SINGULAR = "securemodeldeployment"
SHORT_NAMES = ("smd",)
# Children are named <name>-<purpose>; 45 leaves room for every purpose within 63 characters.
MAX_NAME_LENGTH = 45

SECRET_FILES_DIR = "/var/run/secrets/securemodels"  # noqa: S105 - a directory, not a password
# Ports the operator's sidecar owns inside the pod; the model must not take them.
TLS_PORT = 8443
HEALTH_PORT = 8081

DIGEST_IMAGE_PATTERN = (
    r"^([a-z0-9]([a-z0-9-]*[a-z0-9])?([.][a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:[0-9]+)?/)?"
    r"[a-z0-9]+([._/-][a-z0-9]+)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?@sha256:[a-f0-9]{64}$"
)
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
REGISTRY_PATTERN = r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]+)?(/[a-z0-9._-]+)*$"
DURATION_PATTERN = r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?$"
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$"


def registry_allows(image: str, registries: tuple[str, ...] | list[str]) -> bool:
    """An empty list allows every registry; otherwise the image must sit under one of the prefixes,
    as the CRD's CEL rule checks for spec.imagePolicy.allowedRegistries."""
    return not registries or any(image.startswith(registry.rstrip("/") + "/") for registry in registries)


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    """One x-kubernetes-validations entry; the message names the field so users know what to fix."""
    entry = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


def validations(*rules: dict[str, str]) -> dict[str, Any]:
    return {"x-kubernetes-validations": list(rules)}


class ApiModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


# ---------------------------------------------------------------------------------------------- model


class KeyReference(ApiModel):
    """A key in a Secret or ConfigMap in the SMD's namespace."""

    name: str = Field(description="Name of the object.", pattern=DNS_LABEL_PATTERN, max_length=253)
    key: str = Field(description="Key inside the object.", min_length=1, max_length=253)


class EnvSource(ApiModel):
    """Where an environment variable's value comes from. Secrets are mounted as files instead
    (spec.model.secretFiles): values in the environment leak through /proc, child processes and crash
    dumps."""

    config_map_key_ref: KeyReference = Field(description="A key of a ConfigMap in the namespace.")


class SecretFile(ApiModel):
    """A Secret of the SMD's namespace, mounted read-only into the model container."""

    name: str = Field(
        description="Directory name under the mount root; one file per key of the Secret.",
        pattern=DNS_LABEL_PATTERN,
        max_length=40,
    )
    secret_name: str = Field(description="Name of the Secret.", pattern=DNS_LABEL_PATTERN, max_length=253)


class EnvVar(ApiModel):
    """An environment variable for the model container."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel("has(self.value) != has(self.valueFrom)", "exactly one of value or valueFrom must be set")
        )
    )
    name: str = Field(description="Variable name.", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=128)
    value: str | None = Field(None, description="Literal value.", max_length=32768)
    value_from: EnvSource | None = Field(None, description="Value read from a ConfigMap.")


class ResourceAmounts(ApiModel):
    """CPU and memory amounts (Kubernetes quantities, e.g. 500m, 2, 512Mi, 4Gi)."""

    cpu: str = Field(description="CPU quantity.", pattern=QUANTITY_PATTERN, max_length=32)
    memory: str = Field(description="Memory quantity.", pattern=QUANTITY_PATTERN, max_length=32)


class Resources(ApiModel):
    """Requests and limits of the model container. Both are always set on the pod."""

    requests: ResourceAmounts = Field(
        ResourceAmounts(cpu="250m", memory="512Mi"), description="Guaranteed CPU and memory."
    )
    limits: ResourceAmounts = Field(
        ResourceAmounts(cpu="2", memory="2Gi"), description="Maximum CPU and memory."
    )


class ModelSpec(ApiModel):
    """The model server container."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                f"self.port != {TLS_PORT} && self.port != {HEALTH_PORT}",
                f"spec.model.port must not be {TLS_PORT} or {HEALTH_PORT}: the mTLS sidecar uses them",
                ".port",
            ),
            cel(
                f"!has(self.metricsPort) || !(self.metricsPort in [self.port, {TLS_PORT}, {HEALTH_PORT}])",
                f"spec.model.metricsPort must differ from spec.model.port, {TLS_PORT} and {HEALTH_PORT}",
                ".metricsPort",
            ),
        )
    )
    image: str = Field(
        description=(
            "Container image, pinned by digest: <registry>/<repository>[:tag]@sha256:<64 hex digits>. "
            "Tags alone are refused because they can be moved to other content."
        ),
        max_length=512,
        json_schema_extra=validations(
            cel(
                f"self.matches('{DIGEST_IMAGE_PATTERN}')",
                "spec.model.image must be pinned by digest: <registry>/<repository>[:tag]@sha256:<64 hex>",
            )
        ),
    )

    @field_validator("image")
    @classmethod
    def _pinned_by_digest(cls, image: str) -> str:
        """The CRD's CEL rule, repeated for offline use (securemodels render)."""
        if re.fullmatch(DIGEST_IMAGE_PATTERN, image) is None:
            raise ValueError("must be pinned by digest: <registry>/<repository>[:tag]@sha256:<64 hex>")
        return image

    port: int = Field(
        8080,
        ge=1,
        le=65535,
        description=(
            "Plain-HTTP port the model serves on inside the pod. Only the mTLS sidecar reaches it; "
            "the model should listen on 127.0.0.1 (SECUREMODELS_BIND_ADDRESS is set for it)."
        ),
    )
    metrics_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description=(
            "Optional port of the model's Prometheus metrics, reachable only from the monitoring "
            "namespace named in the operator's configuration."
        ),
    )
    health_path: str = Field(
        "/healthz",
        pattern=r"^/[A-Za-z0-9/._-]*$",
        max_length=256,
        description="HTTP path the sidecar calls for readiness and liveness of the model.",
    )
    replicas: int = Field(1, ge=0, le=1000, description="Number of model server pods.")
    command: list[Annotated[str, Field(max_length=4096)]] | None = Field(
        None, max_length=64, description="Overrides the image's entrypoint."
    )
    args: list[Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=list, max_length=256, description="Arguments to the entrypoint."
    )
    env: list[EnvVar] = Field(
        default_factory=list, max_length=128, description="Environment variables of the model container."
    )
    secret_files: list[SecretFile] = Field(
        default_factory=list,
        max_length=16,
        description=f"Secrets mounted read-only as files under {SECRET_FILES_DIR}/<name>/.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    resources: Resources = Field(Resources(), description="CPU and memory requests and limits.")


# ---------------------------------------------------------------------------------------- image policy


class ImagePolicy(ApiModel):
    """Which registries the model image may come from."""

    allowed_registries: list[Annotated[str, Field(max_length=253, pattern=REGISTRY_PATTERN)]] = Field(
        default_factory=list,
        max_length=32,
        description=(
            "Registries (host[:port][/path]) the model image may come from. Empty: any registry the "
            "operator's cluster-wide list allows. The effective list is the intersection of both."
        ),
    )


# -------------------------------------------------------------------------------------------- network


class LabelSelectorRequirement(ApiModel):
    """A label selector requirement, as in Kubernetes."""

    key: str = Field(description="Label key.", max_length=317)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="Relation to values.",
        json_schema_extra={"maxLength": 12},  # bounds CEL cost estimates
    )
    values: list[Annotated[str, Field(max_length=63)]] = Field(
        default_factory=list, max_length=64, description="Values for In and NotIn."
    )


class LabelSelector(ApiModel):
    """A Kubernetes label selector. An empty selector selects everything."""

    match_labels: dict[str, str] = Field(
        default_factory=dict, max_length=32, description="Labels that must all match."
    )
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, max_length=32, description="Requirements that must all hold."
    )


def _broad(selector: str) -> str:
    """CEL: the selector has no positive requirement (a label value, or In). Exists, NotIn and
    DoesNotExist can match every namespace: all carry kubernetes.io/metadata.name."""
    return (
        f"((!has({selector}.matchLabels) || size({selector}.matchLabels) == 0) && "
        f"(!has({selector}.matchExpressions) || !{selector}.matchExpressions.exists(e, e.operator == 'In')))"
    )


# A peer selecting every pod in every namespace, or every address: "anywhere".
PEER_IS_ANYWHERE = (
    "(has(p.cidr) && cidr(p.cidr).prefixLength() == 0) || (has(p.namespaceSelector) && "
    + _broad("p.namespaceSelector")
    + " && (!has(p.podSelector) || "
    + _broad("p.podSelector")
    + "))"
)


class Peer(ApiModel):
    """Pods or addresses on the other side of a connection.

    `namespaceSelector` and `podSelector` together select pods in matching namespaces; `podSelector`
    alone selects pods in the SMD's namespace; `cidr` selects addresses outside the cluster.
    """

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "has(self.cidr) || has(self.namespaceSelector) || has(self.podSelector)",
                "a peer must set namespaceSelector, podSelector or cidr",
            ),
            cel(
                "!has(self.cidr) || (!has(self.namespaceSelector) && !has(self.podSelector))",
                "cidr cannot be combined with namespaceSelector or podSelector",
            ),
        )
    )
    namespace_selector: LabelSelector | None = Field(None, description="Namespaces the peer pods are in.")
    pod_selector: LabelSelector | None = Field(None, description="Labels of the peer pods.")
    cidr: str | None = Field(
        None,
        max_length=64,
        description="An IP range outside the cluster, in CIDR notation.",
        json_schema_extra=validations(cel("isCIDR(self)", "cidr must be an IP range such as 10.0.0.0/16")),
    )


class PortSpec(ApiModel):
    """A destination port."""

    port: int = Field(ge=1, le=65535, description="Port number.")
    protocol: Literal["TCP", "UDP"] = Field("TCP", description="Protocol.")


class IngressRule(ApiModel):
    """Who may connect to the model's mTLS port."""

    from_: list[Peer] = Field(
        alias="from", min_length=1, max_length=32, description="Peers allowed to connect."
    )


class EgressRule(ApiModel):
    """Where the model may connect to, besides cluster DNS."""

    to: list[Peer] = Field(min_length=1, max_length=32, description="Destinations.")
    ports: list[PortSpec] = Field(
        min_length=1, max_length=16, description="Destination ports. Required: no rule opens every port."
    )


class Network(ApiModel):
    """Network isolation. Everything not declared here is denied, in both directions."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.allowIngressFromAnywhere || !has(self.ingress) || "
                "!self.ingress.exists(r, r.from.exists(p, " + PEER_IS_ANYWHERE + "))",
                "spec.network.ingress admits every namespace or address: narrow the peer, or set "
                "spec.network.allowIngressFromAnywhere: true to accept the weakening",
                ".ingress",
            ),
            cel(
                "self.allowEgressToAnywhere || !has(self.egress) || !self.egress.exists(r, r.to.exists(p, "
                + PEER_IS_ANYWHERE
                + "))",
                "spec.network.egress reaches every namespace or address: narrow the peer, or set "
                "spec.network.allowEgressToAnywhere: true to accept the weakening",
                ".egress",
            ),
        )
    )
    ingress: list[IngressRule] = Field(
        default_factory=list,
        max_length=16,
        description="Peers that may reach the model's mTLS port. Default: nobody.",
    )
    egress: list[EgressRule] = Field(
        default_factory=list,
        max_length=16,
        description="Destinations the model may reach. Cluster DNS is always allowed; default: nothing else.",
    )
    allow_ingress_from_anywhere: bool = Field(
        False,
        description=(
            "Accept ingress peers that select every namespace or every address (a /0 CIDR). "
            "Weakens the network-isolation control, which then reports Weakened."
        ),
    )
    allow_egress_to_anywhere: bool = Field(
        False,
        description=(
            "Accept egress peers that select every namespace or every address (a /0 CIDR). "
            "Weakens the network-isolation control, which then reports Weakened."
        ),
    )


# ----------------------------------------------------------------------------------------------- mTLS


class MTLSClient(ApiModel):
    """A workload allowed to call the model. It gets a client certificate as a Secret in its namespace."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "size(self.name) + size(self.__namespace__) <= 63",
                "name and namespace together must not exceed 63 characters: the certificate's common "
                "name <name>.<namespace> is limited to 64",
            )
        )
    )

    name: str = Field(
        description="Client identity; the certificate's subject is CN=<name>.<namespace>.",
        pattern=DNS_LABEL_PATTERN,
        max_length=63,
    )
    namespace: str = Field(
        description="Namespace that receives the client's certificate Secret.",
        pattern=DNS_LABEL_PATTERN,
        max_length=63,
    )


class MTLS(ApiModel):
    """Mutual TLS in front of the model. Always on: only declared clients with operator-issued
    certificates get through."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "duration(self.certificateDuration) >= duration('1h')",
                "spec.mtls.certificateDuration must be at least 1h",
                ".certificateDuration",
            ),
            cel(
                "!has(self.renewBefore) || "
                "duration(self.certificateDuration) - duration(self.renewBefore) >= duration('30m')",
                "spec.mtls.renewBefore must leave a certificate at least 30m of use before its renewal",
                ".renewBefore",
            ),
        )
    )
    certificate_duration: str = Field(
        "24h",
        pattern=DURATION_PATTERN,
        min_length=2,
        max_length=16,
        description="Lifetime of issued certificates.",
    )
    renew_before: str | None = Field(
        None,
        pattern=DURATION_PATTERN,
        min_length=2,
        max_length=16,
        description="Renew this long before expiry. Default: one third of certificateDuration.",
    )
    min_tls_version: Literal["1.3", "1.2"] = Field(
        "1.3",
        alias="minTLSVersion",
        description=(
            "Lowest TLS version the sidecar accepts. 1.2 (AEAD ciphers only) weakens the mtls control, "
            "which then reports Weakened."
        ),
    )
    clients: list[MTLSClient] = Field(
        default_factory=list,
        max_length=64,
        description="Clients allowed to call the model. Default: none.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name", "namespace"],
        },
    )


# --------------------------------------------------------------------------------------------- access


class Subject(ApiModel):
    """A user, group or service account."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "(self.kind == 'ServiceAccount') == has(self.__namespace__)",
                "namespace is required for a ServiceAccount and not allowed otherwise",
            )
        )
    )
    kind: Literal["User", "Group", "ServiceAccount"] = Field(description="Kind of subject.")
    name: str = Field(min_length=1, max_length=253, description="Name of the user, group or account.")
    namespace: str | None = Field(
        None, pattern=DNS_LABEL_PATTERN, max_length=63, description="Namespace of a ServiceAccount."
    )


class Access(ApiModel):
    """Who may see or change this model. The model's own ServiceAccount never gets permissions."""

    viewers: list[Subject] = Field(
        default_factory=list,
        max_length=64,
        description="May read this SMD, the pods in its namespace and their logs. Nothing else.",
    )
    deployers: list[Subject] = Field(
        default_factory=list,
        max_length=64,
        description="May get, update and patch this SMD only: never exec, never Secrets.",
    )


# -------------------------------------------------------------------------------------------- storage


class Storage(ApiModel):
    """A persistent volume for model files. Only created on a StorageClass that encrypts at rest."""

    size: str = Field(pattern=QUANTITY_PATTERN, max_length=32, description="Requested size, e.g. 20Gi.")
    storage_class_name: str = Field(
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description=(
            "StorageClass of the volume. It must encrypt: a known provisioner parameter, or the "
            'annotation securemodels.io/encrypted="true" set by a cluster admin.'
        ),
    )
    mount_path: str = Field(
        "/models",
        pattern=r"^/[A-Za-z0-9/._-]*$",
        max_length=256,
        description="Mount path in the model container.",
    )


class Residency(ApiModel):
    """Where the model may run."""

    regions: list[Annotated[str, Field(max_length=63, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")]] = Field(
        min_length=1,
        max_length=16,
        description="Allowed values of the node label topology.kubernetes.io/region (required affinity).",
    )


# ----------------------------------------------------------------------------------------------- spec


class SecureModelDeploymentSpec(ApiModel):
    """Desired state of a SecureModelDeployment."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!has(self.storage) || self.model.replicas <= 1",
                "spec.model.replicas must be 0 or 1 with spec.storage: the volume is ReadWriteOnce",
                ".model.replicas",
            ),
            cel(
                "!has(self.imagePolicy) || !has(self.imagePolicy.allowedRegistries) || "
                "size(self.imagePolicy.allowedRegistries) == 0 || "
                "self.imagePolicy.allowedRegistries.exists(r, self.model.image.startsWith(r + '/'))",
                "spec.model.image is not from a registry in spec.imagePolicy.allowedRegistries",
                ".model.image",
            ),
        )
    )
    model: ModelSpec = Field(description="The model server container.")
    image_policy: ImagePolicy = Field(ImagePolicy(), description="Registry allow-list for the model image.")
    network: Network = Field(Network(), description="Network isolation.")
    mtls: MTLS = Field(MTLS(), description="Mutual TLS in front of the model.")
    access: Access = Field(Access(), description="Who may see or change this model.")
    storage: Storage | None = Field(None, description="Optional encrypted volume for model files.")
    residency: Residency | None = Field(None, description="Optional regions the model must run in.")


# --------------------------------------------------------------------------------------------- status


class Condition(ApiModel):
    """A Kubernetes-style condition."""

    type: str = Field(description="Condition type.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="CamelCase reason.")
    message: str = Field("", description="Human-readable detail.")
    last_transition_time: str = Field(description="When status last changed (RFC 3339).")
    observed_generation: int = Field(0, description="Generation of the spec the condition is about.")


class ControlState(ApiModel):
    """One security control's verdict, judged from the live objects."""

    name: str = Field(description="Control name, e.g. image-digest.")
    status: Literal["Pass", "Fail", "Weakened"] = Field(
        description="Pass; Fail (live state violates it); Weakened (the spec opted out on purpose)."
    )
    reason: str = Field(description="CamelCase reason.")
    message: str = Field("", description="Human-readable detail.")


class CertificateStatus(ApiModel):
    """The model's current server certificate. No key material, ever."""

    not_after: str = Field(description="Expiry (RFC 3339).")
    serial_number: str = Field(description="Serial number, hex.")
    sha256_fingerprint: str = Field(description="SHA-256 fingerprint of the DER certificate, hex.")


class SecureModelDeploymentStatus(ApiModel):
    """Observed state, written by the operator only."""

    observed_generation: int | None = Field(None, description="Generation the status describes.")
    phase: Literal["Ready", "Progressing", "Degraded", "Blocked"] | None = Field(
        None, description="Summary: Ready, Progressing, Degraded or Blocked."
    )
    compliant: bool | None = Field(None, description="True when every control passes.")
    image: str | None = Field(None, description="Running image, shortened for display.")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, Compliant and one condition per control.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    controls: list[ControlState] = Field(
        default_factory=list,
        description="Per-control verdicts.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    certificate: CertificateStatus | None = Field(None, description="Current server certificate.")


class SecureModelDeployment(ApiModel):
    """A model-serving workload that is locked down by construction."""

    model_config = ConfigDict(extra="ignore")
    spec: SecureModelDeploymentSpec
    status: SecureModelDeploymentStatus | None = None


def describe(error: ValidationError, prefix: str = "spec") -> str:
    """Every problem of a spec, each named by its field path as users write it."""
    return "; ".join(
        f"{'.'.join([prefix, *(str(part) for part in item['loc'])])}: {item['msg']}"
        for item in error.errors()
    )
