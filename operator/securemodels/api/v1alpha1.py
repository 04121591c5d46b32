"""The SecureModelDeployment API, version v1alpha1.

These pydantic models are the single source of truth: the CRD's OpenAPI schema, its CEL rules and the
operator's parsing of a live object all come from here. Field names are the camelCase aliases users write;
every field carries a description so that `kubectl explain` is useful.

Every CEL rule is declared once, as a `Rule` that holds both the CEL the API server runs and the same
check in Python. The operator parses stored objects with these models, so an SMD that bypassed the CRD's
validation (a replaced CRD, an object older than a rule) is refused by the operator with the API
server's own message; `securemodels render` refuses it offline the same way.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

GROUP = "securemodels.io"
VERSION = "v1alpha1"
KIND = "SecureModelDeployment"
PLURAL = "securemodeldeployments"
SINGULAR = "securemodeldeployment"
SHORT_NAMES = ("smd",)
# Children are named <name>-<purpose>; 45 leaves room for every purpose within 63 characters.
MAX_NAME_LENGTH = 45
NAME_PATTERN = "^[a-z]([-a-z0-9]*[a-z0-9])?$"

SECRET_FILES_DIR = "/var/run/secrets/securemodels"  # noqa: S105 - a directory, not a password
SCRATCH_DIR = "/tmp"
SCRATCH_SIZE = "256Mi"
SHARED_MEMORY_DIR = "/dev/shm"
# A model's startup budget: long enough for the largest weights, short enough to catch a typo.
MIN_STARTUP_TIMEOUT, MAX_STARTUP_TIMEOUT = "30s", "4h"
# Where the weights' verifier finds the signing key or certificate chain (a ConfigMap, mounted).
SIGNING_TRUST_DIR = "/var/run/securemodels/signing-trust"
# Ports the operator's sidecar owns inside the pod; the model must not take them.
TLS_PORT = 8443
HEALTH_PORT = 8081
# Environment variables the operator sets on the model container start with this.
RESERVED_ENV_PREFIX = "SECUREMODELS_"
# What the admission policy checks one by one against the requester's own permissions (the API server
# allows about twenty authorizer checks per policy): Secrets mounted, ConfigMaps read, mTLS clients.
MAX_SECRET_FILES = 16
MAX_CONFIG_MAP_ENV = 16
MAX_CLIENTS = 16
# A single CIDR broader than this prefix reaches "anywhere": more than a /8 of IPv4 or a /32 of IPv6.
BROADEST_IPV4_PREFIX = 8
BROADEST_IPV6_PREFIX = 32

DIGEST_IMAGE_PATTERN = (
    r"^([a-z0-9]([a-z0-9-]*[a-z0-9])?([.][a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:[0-9]+)?/)?"
    r"[a-z0-9]+([._/-][a-z0-9]+)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?@sha256:[a-f0-9]{64}$"
)
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
REGISTRY_PATTERN = r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]+)?(/[a-z0-9._-]+)*$"
DURATION_PATTERN = r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?$"
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$"
# Absolute paths of plain segments: no empty segment, no "." or "..", no trailing slash.
MOUNT_PATH_PATTERN = r"^(/[A-Za-z0-9_-][A-Za-z0-9._-]*)+$"
# HTTP paths go into the sidecar's nginx.conf: no spaces, quotes, semicolons, braces or variables.
HTTP_PATH_PATTERN = r"^/[A-Za-z0-9/._-]*$"
# Relative paths of plain segments: no leading "/", no "." or ".." segment, no hidden files.
RELATIVE_PATH_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$"
_DURATION = re.compile(r"([0-9]+h)?([0-9]+m)?([0-9]+s)?")
_QUANTITY = re.compile(r"(?P<number>[0-9]+(\.[0-9]+)?)(?P<suffix>m|k|M|G|T|Ki|Mi|Gi|Ti)?")


def registry_allows(image: str, registries: tuple[str, ...] | list[str]) -> bool:
    """An empty list allows every registry; otherwise the image must sit under one of the prefixes,
    as the CRD's CEL rule checks for spec.imagePolicy.allowedRegistries."""
    return not registries or any(image.startswith(registry.rstrip("/") + "/") for registry in registries)


def seconds(duration: str) -> int:
    """A duration as the API writes it (24h, 90m, 1h30m, 45s) in seconds."""
    match = _DURATION.fullmatch(duration)
    if not duration or match is None:
        raise ValueError(f"invalid duration {duration!r}: expected e.g. 24h, 90m, 1h30m or 45s")
    hours, minutes, secs = (int(group[:-1]) if group else 0 for group in match.groups())
    return hours * 3600 + minutes * 60 + secs


def unique(items: Iterable[Hashable]) -> bool:
    seen: list[Hashable] = list(items)
    return len(seen) == len(set(seen))


@dataclass(frozen=True)
class Rule:
    """One validation rule, written twice on purpose: as CEL for the API server and as a Python check
    for the operator and `securemodels render`. tests/integration/test_api_rules.py feeds every rule's
    counter-example to both and expects the same refusal."""

    cel: str
    message: str
    holds: Callable[[Any], bool]
    field_path: str | None = None

    def entry(self) -> dict[str, str]:
        """The rule as an x-kubernetes-validations entry."""
        entry = {"rule": self.cel, "message": self.message}
        if self.field_path:
            entry["fieldPath"] = self.field_path
        return entry


class ApiModel(BaseModel):
    """Base of every API object: camelCase aliases, unknown fields refused, immutable once parsed, and
    the class's `RULES` both in its schema and checked on parsing."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)
    RULES: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _rules_hold(self) -> Self:
        broken = [rule.message for rule in type(self).RULES if not rule.holds(self)]
        if broken:
            raise ValueError("; ".join(broken))
        return self

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        own_rules = cls.__dict__.get("RULES", ())
        if own_rules:
            target = handler.resolve_ref_schema(schema)
            target.setdefault("x-kubernetes-validations", []).extend(rule.entry() for rule in own_rules)
        return schema


def field_rules(*rules: Rule) -> dict[str, Any]:
    """json_schema_extra for a scalar field's own CEL rules (checked in Python by a field validator)."""
    return {"x-kubernetes-validations": [rule.entry() for rule in rules]}


def list_map(*keys: str) -> dict[str, Any]:
    """A list whose items are keyed: the API server refuses two items with the same keys."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)}


LIST_SET: dict[str, Any] = {"x-kubernetes-list-type": "set"}

# ---------------------------------------------------------------------------------------------- metadata


# The model's ServiceAccount is named after the SMD: "default" is every namespace's own account.
RESERVED_NAMES = ("default",)


def name_problem(name: object) -> str | None:
    """Why metadata.name cannot name an SMD (the CRD's root rule), or None."""
    if (
        not isinstance(name, str)
        or re.fullmatch(NAME_PATTERN, name) is None
        or len(name) > MAX_NAME_LENGTH
        or name in RESERVED_NAMES
    ):
        return NAME_RULE.message
    return None


NAME_RULE = Rule(
    cel=f"self.metadata.name.matches('{NAME_PATTERN}') && size(self.metadata.name) <= {MAX_NAME_LENGTH} && "
    f"!(self.metadata.name in {list(RESERVED_NAMES)})",
    message="metadata.name must be a DNS label that starts with a letter, "
    f"at most {MAX_NAME_LENGTH} characters, and not {', '.join(RESERVED_NAMES)}: it names the Service and "
    "the ServiceAccount and prefixes every object the operator creates",
    holds=lambda name: name_problem(name) is None,
)

# ---------------------------------------------------------------------------------------------- model


class KeyReference(ApiModel):
    """A key in a Secret or ConfigMap in the SMD's namespace."""

    name: str = Field(description="Name of the object.", pattern=DNS_SUBDOMAIN_PATTERN, max_length=253)
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
    secret_name: str = Field(description="Name of the Secret.", pattern=DNS_SUBDOMAIN_PATTERN, max_length=253)


class EnvVar(ApiModel):
    """An environment variable for the model container."""

    RULES = (
        Rule(
            "has(self.value) != has(self.valueFrom)",
            "exactly one of value or valueFrom must be set",
            lambda env: (env.value is None) != (env.value_from is None),
        ),
    )
    name: str = Field(description="Variable name.", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=128)
    value: str | None = Field(None, description="Literal value.", max_length=32768)
    value_from: EnvSource | None = Field(None, description="Value read from a ConfigMap.")


# The names a container's resources may use: cpu, memory, and extended resources, which device plugins
# advertise (nvidia.com/gpu, nvidia.com/mig-1g.10gb, amd.com/gpu). Kubernetes' own rule for an extended
# resource: a domain-prefixed name outside kubernetes.io, and not a quota name (requests.<resource>).
STANDARD_RESOURCES = ("cpu", "memory")
EXTENDED_RESOURCE_PATTERN = (
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
MAX_RESOURCE_NAME_LENGTH = 128
_QUANTITY_SUFFIXES = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
}


def quantity(text: str) -> Decimal:
    """The value of a quantity as QUANTITY_PATTERN admits it (500m, 2, 1.5Gi): CEL's quantity()."""
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise ValueError(f"invalid quantity {text!r}")
    return Decimal(match["number"]) * _QUANTITY_SUFFIXES[match["suffix"] or ""]


def is_extended_resource(name: str) -> bool:
    """Whether `name` is an extended resource as Kubernetes defines one (IsExtendedResourceName)."""
    return (
        len(name) <= MAX_RESOURCE_NAME_LENGTH
        and re.fullmatch(EXTENDED_RESOURCE_PATTERN, name) is not None
        and "kubernetes.io/" not in name
        and not name.startswith("requests.")
    )


def _quantity_text(value: object) -> object:
    """Kubernetes writes a quantity as a string or an integer (nvidia.com/gpu: 1); the operator keeps
    the text. A bool is left for the type check to refuse."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


# A quantity in a resource map: a string of QUANTITY_PATTERN, or a non-negative integer.
Quantity = Annotated[
    str,
    BeforeValidator(_quantity_text),
    Field(pattern=QUANTITY_PATTERN, max_length=32),
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "minimum": 0,
            "pattern": QUANTITY_PATTERN,
            "maxLength": 32,
        }
    ),
]


def _resource_names(field: str) -> Rule:
    allowed = (
        f"k in {list(STANDARD_RESOURCES)} || (size(k) <= {MAX_RESOURCE_NAME_LENGTH} && "
        f"k.matches('{EXTENDED_RESOURCE_PATTERN}') && !k.contains('kubernetes.io/') && "
        "!k.startsWith('requests.'))"
    )
    return Rule(
        f"self.{field}.all(k, {allowed})",
        f"spec.model.resources.{field}: a resource is cpu, memory or an extended resource "
        "<domain>/<name> such as nvidia.com/gpu; ephemeral-storage, hugepages-*, kubernetes.io names and "
        "quota names such as requests.nvidia.com/gpu are not accepted",
        lambda resources: all(
            name in STANDARD_RESOURCES or is_extended_resource(name) for name in getattr(resources, field)
        ),
        f".{field}",
    )


def _cel_quantity(amounts: str, key: str) -> str:
    return f"quantity(string(self.{amounts}[{key}]))"


class Resources(ApiModel):
    """Requests and limits of the model container, as in Kubernetes: cpu and memory, always both set,
    and extended resources such as nvidia.com/gpu, which cannot be overcommitted."""

    RULES = (
        _resource_names("requests"),
        _resource_names("limits"),
        Rule(
            f"{list(STANDARD_RESOURCES)}.all(k, k in self.requests && k in self.limits && "
            f"{_cel_quantity('limits', 'k')}.isGreaterThan(quantity('0')))",
            "spec.model.resources: requests and limits must both set cpu and memory, and the limits must "
            "be above zero (a zero limit is no limit)",
            lambda resources: all(
                name in resources.requests
                and name in resources.limits
                and quantity(resources.limits[name]) > 0
                for name in STANDARD_RESOURCES
            ),
        ),
        Rule(
            f"self.requests.all(k, !(k in self.limits) || "
            f"{_cel_quantity('requests', 'k')}.compareTo({_cel_quantity('limits', 'k')}) <= 0)",
            "spec.model.resources: a request must not exceed its limit",
            lambda resources: all(
                name not in resources.limits or quantity(amount) <= quantity(resources.limits[name])
                for name, amount in resources.requests.items()
            ),
        ),
        Rule(
            f"self.requests.all(k, k in {list(STANDARD_RESOURCES)} || (k in self.limits && "
            f"{_cel_quantity('requests', 'k')}.compareTo({_cel_quantity('limits', 'k')}) == 0))",
            "spec.model.resources: an extended resource such as nvidia.com/gpu cannot be overcommitted: "
            "its request must equal its limit, or set the limit alone",
            lambda resources: all(
                name in STANDARD_RESOURCES
                or (name in resources.limits and quantity(amount) == quantity(resources.limits[name]))
                for name, amount in resources.requests.items()
            ),
        ),
        Rule(
            f"self.limits.all(k, k in {list(STANDARD_RESOURCES)} || "
            f"{_cel_quantity('limits', 'k')}.isInteger())",
            "spec.model.resources.limits: an extended resource counts whole devices (nvidia.com/gpu: 1, "
            "not 0.5 or 500m)",
            lambda resources: all(
                name in STANDARD_RESOURCES or quantity(amount) == quantity(amount).to_integral_value()
                for name, amount in resources.limits.items()
            ),
            ".limits",
        ),
    )
    requests: dict[str, Quantity] = Field(
        {"cpu": "250m", "memory": "512Mi"},
        max_length=8,
        description=(
            "Guaranteed resources: cpu and memory, and extended resources equal to their limits "
            "(an extended resource set only in limits is requested as much)."
        ),
    )
    limits: dict[str, Quantity] = Field(
        {"cpu": "2", "memory": "2Gi"},
        max_length=8,
        description="Maximum resources: cpu and memory, and extended resources such as nvidia.com/gpu.",
    )

    def container_resources(self) -> dict[str, dict[str, str]]:
        """As the container gets them. Kubernetes fills a missing request from its limit on the Pod but
        not on a template: the template says so itself, so that its pods are what it says."""
        return {"requests": {**self.limits, **self.requests}, "limits": dict(self.limits)}


IMAGE_RULE = Rule(
    f"self.matches('{DIGEST_IMAGE_PATTERN}')",
    "spec.model.image must be pinned by digest: <registry>/<repository>[:tag]@sha256:<64 hex>",
    lambda image: re.fullmatch(DIGEST_IMAGE_PATTERN, image) is not None,
)


WEIGHTS_IMAGE_RULE = Rule(
    f"self.matches('{DIGEST_IMAGE_PATTERN}')",
    "spec.model.weights.image must be pinned by digest: <registry>/<repository>[:tag]@sha256:<64 hex>",
    lambda image: re.fullmatch(DIGEST_IMAGE_PATTERN, image) is not None,
)


class WeightsSignature(ApiModel):
    """An OpenSSF Model Signing signature of the weights (a Sigstore bundle made by `model-signing`),
    verified offline, without a transparency log, before the model container starts."""

    RULES = (
        Rule(
            "has(self.publicKey) != has(self.certificateChain)",
            "spec.model.weights.signature: exactly one of publicKey or certificateChain must be set",
            lambda signature: (signature.public_key is None) != (signature.certificate_chain is None),
        ),
    )
    path: str = Field(
        "model.sig",
        pattern=RELATIVE_PATH_PATTERN,
        max_length=256,
        description="Where the signature is, relative to the weights' directory.",
    )
    public_key: KeyReference | None = Field(
        None,
        description=(
            "A ConfigMap key holding the signer's elliptic-curve public key (PEM, P-256, P-384 or P-521)."
        ),
    )
    certificate_chain: KeyReference | None = Field(
        None,
        description=(
            "A ConfigMap key holding the PEM certificates the signing certificate must chain to (its "
            "intermediates and root)."
        ),
    )

    @property
    def trust(self) -> KeyReference:
        """The ConfigMap key the signature is verified against."""
        found = self.public_key or self.certificate_chain
        assert found is not None  # one of them, by the rule above
        return found


class Weights(ApiModel):
    """The model's weights: pinned by digest in an OCI image or artifact, or on the SMD's encrypted
    volume; mounted read-only, and verified by signature before the model starts when a signature is
    declared."""

    RULES = (
        Rule(
            "has(self.image) != has(self.storagePath)",
            "spec.model.weights: exactly one of image or storagePath must be set",
            lambda weights: (weights.image is None) != (weights.storage_path is None),
        ),
        Rule(
            " && ".join(
                f"self.mountPath != '{taken}' && !self.mountPath.startsWith('{taken}/') && "
                f"!'{taken}'.startsWith(self.mountPath + '/')"
                for taken in (SCRATCH_DIR, SECRET_FILES_DIR, SIGNING_TRUST_DIR)
            ),
            f"spec.model.weights.mountPath must not be {SCRATCH_DIR}, {SECRET_FILES_DIR} or "
            f"{SIGNING_TRUST_DIR}, nor a directory inside or above them: the operator mounts those",
            lambda weights: not mount_path_reserved(weights.mount_path, SIGNING_TRUST_DIR),
            ".mountPath",
        ),
    )
    image: str | None = Field(
        None,
        max_length=512,
        description=(
            "An OCI image or artifact holding the weights, pinned by digest, mounted read-only as an "
            "image volume (Kubernetes 1.35 or later, and a container runtime that supports image "
            "volumes)."
        ),
        json_schema_extra=field_rules(WEIGHTS_IMAGE_RULE),
    )

    @field_validator("image")
    @classmethod
    def _weights_pinned_by_digest(cls, image: str | None) -> str | None:
        if image is not None and not WEIGHTS_IMAGE_RULE.holds(image):
            raise ValueError(WEIGHTS_IMAGE_RULE.message)
        return image

    storage_path: str | None = Field(
        None,
        pattern=RELATIVE_PATH_PATTERN,
        max_length=256,
        description=(
            "A directory on the SMD's encrypted volume (spec.storage), relative to it. The whole volume "
            "is then mounted read-only into the model container."
        ),
    )
    mount_path: str = Field(
        "/weights",
        pattern=MOUNT_PATH_PATTERN,
        max_length=256,
        description="Where the model container finds the weights, read-only.",
    )
    signature: WeightsSignature | None = Field(
        None,
        description="The signature to verify before the model starts. None: the weights are not verified.",
    )


class ModelSpec(ApiModel):
    """The model server container."""

    RULES = (
        Rule(
            f"self.port != {TLS_PORT} && self.port != {HEALTH_PORT}",
            f"spec.model.port must not be {TLS_PORT} or {HEALTH_PORT}: the mTLS sidecar uses them",
            lambda model: model.port not in (TLS_PORT, HEALTH_PORT),
            ".port",
        ),
        Rule(
            f"!has(self.metricsPort) || !(self.metricsPort in [self.port, {TLS_PORT}, {HEALTH_PORT}])",
            f"spec.model.metricsPort must differ from spec.model.port, {TLS_PORT} and {HEALTH_PORT}",
            lambda model: model.metrics_port not in (model.port, TLS_PORT, HEALTH_PORT),
            ".metricsPort",
        ),
        Rule(
            f"!has(self.env) || self.env.filter(e, has(e.valueFrom)).size() <= {MAX_CONFIG_MAP_ENV}",
            f"spec.model.env: at most {MAX_CONFIG_MAP_ENV} variables may come from ConfigMaps",
            lambda model: sum(1 for item in model.env if item.value_from is not None) <= MAX_CONFIG_MAP_ENV,
            ".env",
        ),
        Rule(
            f"!has(self.env) || !self.env.exists(e, e.name.startsWith('{RESERVED_ENV_PREFIX}'))",
            f"spec.model.env: names starting with {RESERVED_ENV_PREFIX} are reserved for the operator",
            lambda model: not any(item.name.startswith(RESERVED_ENV_PREFIX) for item in model.env),
            ".env",
        ),
        Rule(
            f"duration(self.startupTimeout) >= duration('{MIN_STARTUP_TIMEOUT}') && "
            f"duration(self.startupTimeout) <= duration('{MAX_STARTUP_TIMEOUT}')",
            f"spec.model.startupTimeout must be between {MIN_STARTUP_TIMEOUT} and {MAX_STARTUP_TIMEOUT}",
            lambda model: (
                seconds(MIN_STARTUP_TIMEOUT) <= seconds(model.startup_timeout) <= seconds(MAX_STARTUP_TIMEOUT)
            ),
            ".startupTimeout",
        ),
        Rule(
            "!has(self.sharedMemorySize) || quantity(self.sharedMemorySize).isGreaterThan(quantity('0'))",
            "spec.model.sharedMemorySize must be above zero",
            lambda model: model.shared_memory_size is None or quantity(model.shared_memory_size) > 0,
            ".sharedMemorySize",
        ),
        Rule(
            "!has(self.sharedMemorySize) || !('memory' in self.resources.limits) || "
            f"quantity(self.sharedMemorySize).add(quantity('{SCRATCH_SIZE}'))"
            ".compareTo(quantity(string(self.resources.limits['memory']))) <= 0",
            f"spec.model.sharedMemorySize and the {SCRATCH_SIZE} in-memory {SCRATCH_DIR} must fit in "
            "spec.model.resources.limits.memory: what the model writes to them counts against it",
            lambda model: (
                model.shared_memory_size is None
                or "memory" not in model.resources.limits
                or quantity(model.shared_memory_size) + quantity(SCRATCH_SIZE)
                <= quantity(model.resources.limits["memory"])
            ),
            ".sharedMemorySize",
        ),
    )
    image: str = Field(
        description=(
            "Container image, pinned by digest: <registry>/<repository>[:tag]@sha256:<64 hex digits>. "
            "Tags alone are refused because they can be moved to other content."
        ),
        max_length=512,
        json_schema_extra=field_rules(IMAGE_RULE),
    )

    @field_validator("image")
    @classmethod
    def _pinned_by_digest(cls, image: str) -> str:
        if not IMAGE_RULE.holds(image):
            raise ValueError(IMAGE_RULE.message)
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
        pattern=HTTP_PATH_PATTERN,
        max_length=256,
        description=(
            "HTTP path that answers 200 when the model can serve: the readiness and startup checks, and "
            "the liveness check unless livenessPath is set. vLLM and TGI: /health; NIM: "
            "/v1/health/ready; KServe v2: /v2/health/ready."
        ),
    )
    liveness_path: str | None = Field(
        None,
        pattern=HTTP_PATH_PATTERN,
        max_length=256,
        description=(
            "HTTP path that answers 200 while the model process is healthy, when that differs from "
            "healthPath (NIM: /v1/health/live; KServe v2: /v2/health/live). The container is restarted "
            "when it fails for two minutes."
        ),
    )
    startup_timeout: str = Field(
        "5m",
        pattern=DURATION_PATTERN,
        min_length=2,
        max_length=16,
        description=(
            f"How long the model may take to load, from its start to its first successful readiness "
            f"check, {MIN_STARTUP_TIMEOUT} to {MAX_STARTUP_TIMEOUT}. Liveness is checked only after it; "
            "a model not ready by then is restarted. The Deployment's progress deadline leaves this "
            "budget and ten minutes more."
        ),
    )
    replicas: int = Field(1, ge=0, le=1000, description="Number of model server pods.")
    command: list[Annotated[str, Field(max_length=4096)]] | None = Field(
        None, max_length=64, description="Overrides the image's entrypoint."
    )
    args: list[Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=list, max_length=256, description="Arguments to the entrypoint."
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=128,
        description=(
            f"Environment variables of the model container; names are unique and must not start with "
            f"{RESERVED_ENV_PREFIX}."
        ),
        json_schema_extra=list_map("name"),
    )
    secret_files: list[SecretFile] = Field(
        default_factory=list,
        max_length=MAX_SECRET_FILES,
        description=f"Secrets mounted read-only as files under {SECRET_FILES_DIR}/<name>/.",
        json_schema_extra=list_map("name"),
    )
    resources: Resources = Field(
        Resources(), description="Requests and limits: cpu, memory and extended resources (GPUs)."
    )
    shared_memory_size: str | None = Field(
        None,
        pattern=QUANTITY_PATTERN,
        max_length=32,
        description=(
            "Size of a memory-backed /dev/shm, e.g. 8Gi, for inference across several GPUs (PyTorch and "
            f"NCCL exchange tensors there). It counts against the memory limit, with the {SCRATCH_SIZE} "
            f"{SCRATCH_DIR}. Default: none, the container runtime's 64Mi."
        ),
    )
    weights: Weights | None = Field(
        None, description="The model's weights, pinned and, with a signature, verified before serving."
    )

    @field_validator("env")
    @classmethod
    def _env_names_unique(cls, env: list[EnvVar]) -> list[EnvVar]:
        if not unique(item.name for item in env):
            raise ValueError("names must be unique")
        return env

    @field_validator("secret_files")
    @classmethod
    def _secret_file_names_unique(cls, files: list[SecretFile]) -> list[SecretFile]:
        if not unique(item.name for item in files):
            raise ValueError("names must be unique")
        return files


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
        json_schema_extra=LIST_SET,
    )

    @field_validator("allowed_registries")
    @classmethod
    def _registries_unique(cls, registries: list[str]) -> list[str]:
        if not unique(registries):
            raise ValueError("entries must be unique")
        return registries


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

    @property
    def is_broad(self) -> bool:
        """No positive requirement (a label value, or In): Exists, NotIn and DoesNotExist can match every
        namespace, since every namespace carries kubernetes.io/metadata.name."""
        return not self.match_labels and not any(item.operator == "In" for item in self.match_expressions)


def _broad(selector: str) -> str:
    """CEL twin of LabelSelector.is_broad."""
    return (
        f"((!has({selector}.matchLabels) || size({selector}.matchLabels) == 0) && "
        f"(!has({selector}.matchExpressions) || !{selector}.matchExpressions.exists(e, e.operator == 'In')))"
    )


def cidr_is_broad(cidr: str) -> bool:
    """Wider than a /8 of IPv4 or a /32 of IPv6: most of the internet, not a destination."""
    network = ipaddress.ip_network(cidr, strict=False)
    limit = BROADEST_IPV4_PREFIX if network.version == 4 else BROADEST_IPV6_PREFIX
    return network.prefixlen < limit


def _cidr_broad(cidr: str) -> str:
    """CEL twin of cidr_is_broad."""
    return (
        f"((cidr({cidr}).ip().family() == 4 && cidr({cidr}).prefixLength() < {BROADEST_IPV4_PREFIX}) || "
        f"(cidr({cidr}).ip().family() == 6 && cidr({cidr}).prefixLength() < {BROADEST_IPV6_PREFIX}))"
    )


CIDR_RULE = Rule(
    "isCIDR(self) && string(cidr(self).masked()) == self",
    "cidr must be an IP range in canonical form, such as 10.0.0.0/16 (no address bits past the prefix)",
    lambda cidr: _canonical_cidr(cidr),
)


def _canonical_cidr(cidr: str) -> bool:
    try:
        return str(ipaddress.ip_network(cidr, strict=True)) == cidr and "/" in cidr
    except ValueError:
        return False


class Peer(ApiModel):
    """Pods or addresses on the other side of a connection.

    `namespaceSelector` and `podSelector` together select pods in matching namespaces; `podSelector`
    alone selects pods in the SMD's namespace; `cidr` selects addresses outside the cluster.
    """

    RULES = (
        Rule(
            "has(self.cidr) || has(self.namespaceSelector) || has(self.podSelector)",
            "a peer must set namespaceSelector, podSelector or cidr",
            lambda peer: (
                peer.cidr is not None or peer.namespace_selector is not None or peer.pod_selector is not None
            ),
        ),
        Rule(
            "!has(self.cidr) || (!has(self.namespaceSelector) && !has(self.podSelector))",
            "cidr cannot be combined with namespaceSelector or podSelector",
            lambda peer: peer.cidr is None or (peer.namespace_selector is None and peer.pod_selector is None),
        ),
    )
    namespace_selector: LabelSelector | None = Field(None, description="Namespaces the peer pods are in.")
    pod_selector: LabelSelector | None = Field(None, description="Labels of the peer pods.")
    cidr: str | None = Field(
        None,
        max_length=64,
        description="An IP range outside the cluster, in canonical CIDR notation.",
        json_schema_extra=field_rules(CIDR_RULE),
    )

    @field_validator("cidr")
    @classmethod
    def _cidr_is_canonical(cls, cidr: str | None) -> str | None:
        if cidr is not None and not CIDR_RULE.holds(cidr):
            raise ValueError(CIDR_RULE.message)
        return cidr

    @property
    def is_anywhere(self) -> bool:
        """Every pod in every namespace, or a range wider than a /8 (IPv4) or /32 (IPv6)."""
        if self.cidr is not None:
            return cidr_is_broad(self.cidr)
        return (
            self.namespace_selector is not None
            and self.namespace_selector.is_broad
            and (self.pod_selector is None or self.pod_selector.is_broad)
        )


# CEL twin of Peer.is_anywhere, for a peer named `p`.
PEER_IS_ANYWHERE = (
    f"(has(p.cidr) && {_cidr_broad('p.cidr')}) || (has(p.namespaceSelector) && "
    + _broad("p.namespaceSelector")
    + " && (!has(p.podSelector) || "
    + _broad("p.podSelector")
    + "))"
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

    RULES = (
        Rule(
            "self.allowIngressFromAnywhere || !has(self.ingress) || "
            "!self.ingress.exists(r, r.from.exists(p, " + PEER_IS_ANYWHERE + "))",
            "spec.network.ingress admits every namespace or most addresses: narrow the peer, or set "
            "spec.network.allowIngressFromAnywhere: true to accept the weakening",
            lambda net: (
                net.allow_ingress_from_anywhere
                or not any(peer.is_anywhere for rule in net.ingress for peer in rule.from_)
            ),
            ".ingress",
        ),
        Rule(
            "self.allowEgressToAnywhere || !has(self.egress) || "
            "!self.egress.exists(r, r.to.exists(p, " + PEER_IS_ANYWHERE + "))",
            "spec.network.egress reaches every namespace or most addresses: narrow the peer, or set "
            "spec.network.allowEgressToAnywhere: true to accept the weakening",
            lambda net: (
                net.allow_egress_to_anywhere
                or not any(peer.is_anywhere for rule in net.egress for peer in rule.to)
            ),
            ".egress",
        ),
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
            "Accept ingress peers that select every namespace or most addresses. Weakens the "
            "network-isolation control, which then reports Weakened. Needs the security-admin "
            "permission to set."
        ),
    )
    allow_egress_to_anywhere: bool = Field(
        False,
        description=(
            "Accept egress peers that select every namespace or most addresses. Weakens the "
            "network-isolation control, which then reports Weakened. Needs the security-admin "
            "permission to set."
        ),
    )


# ----------------------------------------------------------------------------------------------- mTLS


class MTLSClient(ApiModel):
    """A workload allowed to call the model. It gets a client certificate as a Secret in its namespace."""

    RULES = (
        Rule(
            "size(self.name) + size(self.__namespace__) <= 63",
            "name and namespace together must not exceed 63 characters: the certificate's common "
            "name <name>.<namespace> is limited to 64",
            lambda client: len(client.name) + len(client.namespace) <= 63,
        ),
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

    RULES = (
        Rule(
            "duration(self.certificateDuration) >= duration('1h')",
            "spec.mtls.certificateDuration must be at least 1h",
            lambda mtls: seconds(mtls.certificate_duration) >= 3600,
            ".certificateDuration",
        ),
        Rule(
            "!has(self.renewBefore) || "
            "duration(self.certificateDuration) - duration(self.renewBefore) >= duration('30m')",
            "spec.mtls.renewBefore must leave a certificate at least 30m of use before its renewal",
            lambda mtls: (
                mtls.renew_before is None
                or seconds(mtls.certificate_duration) - seconds(mtls.renew_before) >= 1800
            ),
            ".renewBefore",
        ),
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
            "which then reports Weakened. Needs the security-admin permission to set."
        ),
    )
    clients: list[MTLSClient] = Field(
        default_factory=list,
        max_length=MAX_CLIENTS,
        description=(
            "Clients allowed to call the model. Default: none. Changing the list needs the security-admin "
            "permission, and the right to deliver client certificates into each client's namespace."
        ),
        json_schema_extra=list_map("name", "namespace"),
    )

    @field_validator("clients")
    @classmethod
    def _clients_unique(cls, clients: list[MTLSClient]) -> list[MTLSClient]:
        if not unique((client.name, client.namespace) for client in clients):
            raise ValueError("each name and namespace may appear once")
        return clients


# --------------------------------------------------------------------------------------------- access


class Subject(ApiModel):
    """A user, group or service account."""

    RULES = (
        Rule(
            "(self.kind == 'ServiceAccount') == has(self.__namespace__)",
            "namespace is required for a ServiceAccount and not allowed otherwise",
            lambda subject: (subject.kind == "ServiceAccount") == (subject.namespace is not None),
        ),
    )
    kind: Literal["User", "Group", "ServiceAccount"] = Field(description="Kind of subject.")
    name: str = Field(min_length=1, max_length=253, description="Name of the user, group or account.")
    namespace: str | None = Field(
        None, pattern=DNS_LABEL_PATTERN, max_length=63, description="Namespace of a ServiceAccount."
    )

    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.name, self.namespace or "")


def _subjects_unique(field: str) -> Rule:
    same = (
        "t.kind == s.kind && t.name == s.name && "
        "(has(t.__namespace__) ? t.__namespace__ : '') == (has(s.__namespace__) ? s.__namespace__ : '')"
    )
    return Rule(
        f"!has(self.{field}) || self.{field}.all(s, self.{field}.exists_one(t, {same}))",
        f"spec.access.{field} lists a subject twice",
        lambda access: unique(subject.key() for subject in getattr(access, field)),
        f".{field}",
    )


class Access(ApiModel):
    """Who may see or change this model. The model's own ServiceAccount never gets permissions.
    Changing either list needs the security-admin permission, and the requester must hold what the
    list grants."""

    RULES = (_subjects_unique("viewers"), _subjects_unique("deployers"))
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


# Directories the operator mounts in the model container (/dev/shm with spec.model.sharedMemorySize).
OPERATOR_MOUNTS = (SCRATCH_DIR, SECRET_FILES_DIR, SHARED_MEMORY_DIR)


def mount_path_reserved(path: str, *also: str) -> bool:
    """The model's scratch directory, the Secret files' directory, /dev/shm (or one of `also`), or a
    directory inside or above one of them."""
    return any(
        path == taken or path.startswith(taken + "/") or taken.startswith(path + "/")
        for taken in (*OPERATOR_MOUNTS, *also)
    )


class Storage(ApiModel):
    """A persistent volume for model files. Only created on a StorageClass that encrypts at rest."""

    RULES = (
        Rule(
            " && ".join(
                f"self.mountPath != '{taken}' && !self.mountPath.startsWith('{taken}/') && "
                f"!'{taken}'.startsWith(self.mountPath + '/')"
                for taken in OPERATOR_MOUNTS
            ),
            f"spec.storage.mountPath must not be {', '.join(OPERATOR_MOUNTS)}, nor a directory inside or "
            "above them: the operator mounts those",
            lambda storage: not mount_path_reserved(storage.mount_path),
            ".mountPath",
        ),
    )
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
        pattern=MOUNT_PATH_PATTERN,
        max_length=256,
        description="Mount path in the model container.",
    )


RetentionChoice = Literal["Retain", "Delete"]


class RetentionPolicy(ApiModel):
    """What happens to the model's PersistentVolumeClaim, after StatefulSet's field of the same name.
    Data is kept unless the SMD asks otherwise."""

    when_deleted: RetentionChoice = Field(
        "Retain", description="When the SMD is deleted: Retain (default) keeps the claim, Delete removes it."
    )
    when_storage_removed: RetentionChoice = Field(
        "Retain",
        description="When spec.storage is removed: Retain (default) keeps the claim, Delete removes it.",
    )


class Residency(ApiModel):
    """Where the model may run."""

    regions: list[Annotated[str, Field(max_length=63, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")]] = Field(
        min_length=1,
        max_length=16,
        description="Allowed values of the node label topology.kubernetes.io/region (required affinity).",
        json_schema_extra=LIST_SET,
    )

    @field_validator("regions")
    @classmethod
    def _regions_unique(cls, regions: list[str]) -> list[str]:
        if not unique(regions):
            raise ValueError("entries must be unique")
        return regions


# ------------------------------------------------------------------------------------------ scheduling

LABEL_KEY_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
LABEL_VALUE_PATTERN = r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$"


class Toleration(ApiModel):
    """A taint the model's pods tolerate, as in Kubernetes (e.g. a GPU node pool's)."""

    RULES = (
        Rule(
            "self.operator != 'Exists' || !has(self.value)",
            "a toleration with operator Exists takes no value",
            lambda item: item.operator != "Exists" or item.value is None,
        ),
        Rule(
            "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
            "tolerationSeconds applies to the NoExecute effect only",
            lambda item: item.toleration_seconds is None or item.effect == "NoExecute",
        ),
    )
    key: str = Field(description="Taint key.", pattern=LABEL_KEY_PATTERN, max_length=317)
    operator: Literal["Equal", "Exists"] = Field(
        "Equal", description="Equal (the value must match) or Exists.", json_schema_extra={"maxLength": 6}
    )
    value: str | None = Field(
        None, description="Taint value, for Equal.", pattern=LABEL_VALUE_PATTERN, max_length=63
    )
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect; empty: every effect.", json_schema_extra={"maxLength": 16}
    )
    toleration_seconds: int | None = Field(
        None, ge=0, le=86400, description="How long the pod stays on a node that gets a NoExecute taint."
    )


NODE_AFFINITY_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt")


class NodeSelectorRequirement(ApiModel):
    """A requirement on a node label, as in Kubernetes."""

    RULES = (
        Rule(
            "!(self.operator in ['In', 'NotIn']) || (has(self.values) && size(self.values) > 0)",
            "a node selector requirement with operator In or NotIn needs values",
            lambda item: item.operator not in ("In", "NotIn") or bool(item.values),
        ),
        Rule(
            "!(self.operator in ['Exists', 'DoesNotExist']) || !has(self.values) || size(self.values) == 0",
            "a node selector requirement with operator Exists or DoesNotExist takes no values",
            lambda item: item.operator not in ("Exists", "DoesNotExist") or not item.values,
        ),
        Rule(
            "!(self.operator in ['Gt', 'Lt']) || (has(self.values) && size(self.values) == 1 && "
            "self.values[0].matches('^[0-9]{1,18}$'))",
            "a node selector requirement with operator Gt or Lt takes one whole number",
            lambda item: (
                item.operator not in ("Gt", "Lt")
                or (len(item.values) == 1 and re.fullmatch(r"[0-9]{1,18}", item.values[0]) is not None)
            ),
        ),
    )
    key: str = Field(description="Node label key.", pattern=LABEL_KEY_PATTERN, max_length=317)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"] = Field(
        description="In, NotIn, Exists, DoesNotExist, Gt or Lt.", json_schema_extra={"maxLength": 12}
    )
    values: list[Annotated[str, Field(max_length=63, pattern=LABEL_VALUE_PATTERN)]] = Field(
        default_factory=list,
        max_length=64,
        description="Label values: for In and NotIn one or more, for Gt and Lt one whole number.",
    )

    def as_manifest(self) -> dict[str, Any]:
        found: dict[str, Any] = {"key": self.key, "operator": self.operator}
        if self.values:
            found["values"] = list(self.values)
        return found


class NodeSelectorTerm(ApiModel):
    """Requirements that must all hold of a node."""

    match_expressions: list[NodeSelectorRequirement] = Field(
        min_length=1, max_length=16, description="Requirements on node labels, all of which must hold."
    )


class RequiredNodeAffinity(ApiModel):
    """Nodes the pods must run on: any one of the terms must hold, and the residency as well."""

    node_selector_terms: list[NodeSelectorTerm] = Field(
        min_length=1,
        max_length=8,
        description=(
            "Terms, any one of which must hold. The residency's region requirement is added to every "
            "term, so no term reaches outside spec.residency.regions."
        ),
    )


class PreferredSchedulingTerm(ApiModel):
    """A preference for nodes, and its weight."""

    weight: int = Field(ge=1, le=100, description="Added to the score of a node that matches, 1 to 100.")
    preference: NodeSelectorTerm = Field(description="Requirements the preferred nodes meet.")


class NodeAffinity(ApiModel):
    """Node affinity, as in Kubernetes. It narrows where the pods run; it cannot widen the residency."""

    required_during_scheduling_ignored_during_execution: RequiredNodeAffinity | None = Field(
        None, description="Nodes the pods must run on."
    )
    preferred_during_scheduling_ignored_during_execution: list[PreferredSchedulingTerm] = Field(
        default_factory=list, max_length=16, description="Nodes the scheduler prefers, by weight."
    )


class Scheduling(ApiModel):
    """Where the model's pods may be scheduled, besides spec.residency. These fields only narrow: the
    residency's required node affinity always applies as well."""

    RULES = (
        Rule(
            f"!has(self.nodeSelector) || self.nodeSelector.all(k, k.matches('{LABEL_KEY_PATTERN}') && "
            "size(k) <= 317)",
            "spec.scheduling.nodeSelector: keys must be label keys ([prefix/]name)",
            lambda scheduling: all(
                re.fullmatch(LABEL_KEY_PATTERN, key) and len(key) <= 317 for key in scheduling.node_selector
            ),
            ".nodeSelector",
        ),
    )
    node_selector: dict[str, Annotated[str, Field(max_length=63, pattern=LABEL_VALUE_PATTERN)]] = Field(
        default_factory=dict, max_length=16, description="Node labels the pods' nodes must all carry."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=16, description="Taints the pods tolerate, e.g. nvidia.com/gpu."
    )
    priority_class_name: str | None = Field(
        None, pattern=DNS_SUBDOMAIN_PATTERN, max_length=253, description="PriorityClass of the pods."
    )
    runtime_class_name: str | None = Field(
        None, pattern=DNS_SUBDOMAIN_PATTERN, max_length=253, description="RuntimeClass of the pods."
    )
    node_affinity: NodeAffinity | None = Field(
        None,
        description=(
            "Required and preferred node affinity. Required terms are ORed, as in Kubernetes, and the "
            "residency's region requirement is part of each of them."
        ),
    )


# -------------------------------------------------------------------------------------------- serving

# Sizes as the API writes them (64Mi, 512Ki, 1Gi, 1048576): whole bytes, binary suffixes only.
BYTE_SIZE_PATTERN = r"^[1-9][0-9]{0,12}(Ki|Mi|Gi)?$"
_BYTE_UNITS = {"": 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}
_BYTE_SIZE = re.compile(r"([0-9]+)(Ki|Mi|Gi)?")
MIN_REQUEST_BODY, MAX_REQUEST_BODY = "1Ki", "4Gi"
MIN_RESPONSE_TIMEOUT, MAX_RESPONSE_TIMEOUT = "1s", "1h"
# Inference payloads (images, audio, batches) outgrow nginx's 1 MiB; a busy LLM with a long prompt can
# take longer than nginx's 60 s to its first token.
DEFAULT_MAX_REQUEST_BODY, DEFAULT_RESPONSE_TIMEOUT = "64Mi", "5m"
MAX_REQUESTS_PER_SECOND = 10000
ServingProtocol = Literal["HTTP", "GRPC"]


def byte_size(size: str) -> int:
    """A size as the API writes it (64Mi, 512Ki, 1Gi, 1048576) in bytes."""
    match = _BYTE_SIZE.fullmatch(size)
    if match is None:
        raise ValueError(f"invalid size {size!r}: expected whole bytes with an optional Ki, Mi or Gi")
    return int(match.group(1)) * _BYTE_UNITS[match.group(2) or ""]


class RateLimit(ApiModel):
    """Requests each client identity may send: a token bucket per identity, refilled at
    requestsPerSecond and holding burst requests. A request beyond it is answered 429 by the sidecar
    and never reaches the model."""

    requests_per_second: int = Field(
        ge=1, le=MAX_REQUESTS_PER_SECOND, description="Sustained requests per second of each client."
    )
    burst: int | None = Field(
        None,
        ge=0,
        le=MAX_REQUESTS_PER_SECOND,
        description="Requests a client may send at once above the steady rate. Default: requestsPerSecond.",
    )


def _within(value: str, low: str, high: str, measure: Callable[[str], int]) -> bool:
    return measure(low) <= measure(value) <= measure(high)


class Serving(ApiModel):
    """How the mTLS sidecar passes requests to the model: the protocol, how large a request and how
    long a wait it accepts, how many requests each client may send, and whether it logs them."""

    RULES = (
        Rule(
            "self.protocol != 'GRPC' || has(self.healthPort)",
            "spec.serving.healthPort is required with protocol GRPC: the sidecar calls the model's "
            "health path over HTTP, which a gRPC port does not speak",
            lambda serving: serving.protocol != "GRPC" or serving.health_port is not None,
            ".healthPort",
        ),
        Rule(
            f"!has(self.healthPort) || (self.healthPort != {TLS_PORT} && self.healthPort != {HEALTH_PORT})",
            f"spec.serving.healthPort must not be {TLS_PORT} or {HEALTH_PORT}: the mTLS sidecar uses them",
            lambda serving: serving.health_port not in (TLS_PORT, HEALTH_PORT),
            ".healthPort",
        ),
        Rule(
            f"quantity(self.maxRequestBodySize).compareTo(quantity('{MIN_REQUEST_BODY}')) >= 0 && "
            f"quantity(self.maxRequestBodySize).compareTo(quantity('{MAX_REQUEST_BODY}')) <= 0",
            f"spec.serving.maxRequestBodySize must be between {MIN_REQUEST_BODY} and {MAX_REQUEST_BODY}",
            lambda serving: _within(
                serving.max_request_body_size, MIN_REQUEST_BODY, MAX_REQUEST_BODY, byte_size
            ),
            ".maxRequestBodySize",
        ),
        Rule(
            f"duration(self.responseTimeout) >= duration('{MIN_RESPONSE_TIMEOUT}') && "
            f"duration(self.responseTimeout) <= duration('{MAX_RESPONSE_TIMEOUT}')",
            f"spec.serving.responseTimeout must be between {MIN_RESPONSE_TIMEOUT} and {MAX_RESPONSE_TIMEOUT}",
            lambda serving: _within(
                serving.response_timeout, MIN_RESPONSE_TIMEOUT, MAX_RESPONSE_TIMEOUT, seconds
            ),
            ".responseTimeout",
        ),
    )
    protocol: ServingProtocol = Field(
        "HTTP",
        description=(
            "What spec.model.port speaks. HTTP: HTTP/1.1 to the model, streamed answers passed on as "
            "written. GRPC: HTTP/2 on the TLS port and gRPC to the model (Triton, KServe v2 gRPC), "
            "with the same client certificates and allow-list."
        ),
        json_schema_extra={"maxLength": 4},
    )
    health_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description=(
            "Port of the model's HTTP health path (spec.model.healthPath), when it is not "
            "spec.model.port. Required with protocol GRPC (Triton: 8000)."
        ),
    )
    max_request_body_size: str = Field(
        DEFAULT_MAX_REQUEST_BODY,
        pattern=BYTE_SIZE_PATTERN,
        max_length=16,
        description=(
            f"Largest request body the sidecar passes on, {MIN_REQUEST_BODY} to {MAX_REQUEST_BODY} "
            "(e.g. 64Mi); a larger one is answered 413. Bodies stream to the model, never to disk."
        ),
    )
    response_timeout: str = Field(
        DEFAULT_RESPONSE_TIMEOUT,
        pattern=DURATION_PATTERN,
        min_length=2,
        max_length=16,
        description=(
            f"How long the sidecar waits on the model, {MIN_RESPONSE_TIMEOUT} to {MAX_RESPONSE_TIMEOUT}: "
            "for the start of its answer (a first token) and then between two pieces of a streamed "
            "answer; after it, 504."
        ),
    )
    rate_limit: RateLimit | None = Field(
        None, description="Requests per second and burst allowed to each client identity. Default: none."
    )
    access_log: bool = Field(
        True,
        description=(
            "One JSON line per request: client identity, method, path without query, status, bytes, "
            "duration; never a query, header value or body. false weakens the mtls control, which then "
            "reports Weakened. Needs the security-admin permission to set."
        ),
    )


# ----------------------------------------------------------------------------------------- quarantine


class Quarantine(ApiModel):
    """An incident switch. While it is set, the model's network is cut both ways (DNS included), its
    sidecar refuses every client, and the operator changes nothing else: the pods are kept, as they
    are, for forensics. Removing it restores everything."""

    reason: str = Field(
        min_length=1,
        max_length=256,
        description="Why the model is quarantined (an incident or ticket): status and Event say it.",
    )


# ----------------------------------------------------------------------------------------------- spec


class SecureModelDeploymentSpec(ApiModel):
    """Desired state of a SecureModelDeployment."""

    RULES = (
        Rule(
            "!has(self.storage) || self.model.replicas <= 1",
            "spec.model.replicas must be 0 or 1 with spec.storage: the volume is ReadWriteOnce",
            lambda spec: spec.storage is None or spec.model.replicas <= 1,
            ".model.replicas",
        ),
        Rule(
            "!has(self.imagePolicy) || !has(self.imagePolicy.allowedRegistries) || "
            "size(self.imagePolicy.allowedRegistries) == 0 || "
            "self.imagePolicy.allowedRegistries.exists(r, self.model.image.startsWith(r + '/'))",
            "spec.model.image is not from a registry in spec.imagePolicy.allowedRegistries",
            lambda spec: registry_allows(spec.model.image, spec.image_policy.allowed_registries),
            ".model.image",
        ),
        Rule(
            "!has(self.serving) || !has(self.serving.healthPort) || self.serving.protocol != 'GRPC' || "
            "self.serving.healthPort != self.model.port",
            "spec.serving.healthPort must differ from spec.model.port with protocol GRPC",
            lambda spec: spec.serving.protocol != "GRPC" or spec.serving.health_port != spec.model.port,
            ".serving.healthPort",
        ),
        Rule(
            "!has(self.model.weights) || !has(self.model.weights.image) || !has(self.imagePolicy) || "
            "!has(self.imagePolicy.allowedRegistries) || size(self.imagePolicy.allowedRegistries) == 0 || "
            "self.imagePolicy.allowedRegistries.exists(r, self.model.weights.image.startsWith(r + '/'))",
            "spec.model.weights.image is not from a registry in spec.imagePolicy.allowedRegistries",
            lambda spec: (
                spec.model.weights is None
                or spec.model.weights.image is None
                or registry_allows(spec.model.weights.image, spec.image_policy.allowed_registries)
            ),
            ".model.weights.image",
        ),
        Rule(
            "!has(self.model.weights) || !has(self.model.weights.storagePath) || has(self.storage)",
            "spec.model.weights.storagePath needs spec.storage: the weights are on its volume",
            lambda spec: (
                spec.model.weights is None
                or spec.model.weights.storage_path is None
                or spec.storage is not None
            ),
            ".model.weights.storagePath",
        ),
        Rule(
            "!has(self.model.weights) || !has(self.storage) || "
            "self.model.weights.mountPath != self.storage.mountPath",
            "spec.model.weights.mountPath must differ from spec.storage.mountPath",
            lambda spec: (
                spec.model.weights is None
                or spec.storage is None
                or spec.model.weights.mount_path != spec.storage.mount_path
            ),
            ".model.weights.mountPath",
        ),
    )
    model: ModelSpec = Field(description="The model server container.")
    image_policy: ImagePolicy = Field(ImagePolicy(), description="Registry allow-list for the model image.")
    network: Network = Field(Network(), description="Network isolation.")
    mtls: MTLS = Field(MTLS(), description="Mutual TLS in front of the model.")
    access: Access = Field(Access(), description="Who may see or change this model.")
    storage: Storage | None = Field(None, description="Optional encrypted volume for model files.")
    persistent_volume_claim_retention_policy: RetentionPolicy = Field(
        RetentionPolicy(), description="What happens to the volume when the SMD or its storage goes."
    )
    residency: Residency | None = Field(None, description="Optional regions the model must run in.")
    scheduling: Scheduling = Field(Scheduling(), description="Node selection and tolerations of the pods.")
    serving: Serving = Field(
        Serving(), description="Protocol, limits and access log of the mTLS sidecar in front of the model."
    )
    quarantine: Quarantine | None = Field(
        None, description="Set to freeze the model during an incident; remove to restore it."
    )


# --------------------------------------------------------------------------------------------- status


class Condition(ApiModel):
    """A Kubernetes-style condition."""

    type: str = Field(description="Condition type.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="CamelCase reason.")
    message: str = Field("", description="Human-readable detail.")
    last_transition_time: str = Field(description="When status last changed (RFC 3339).")
    observed_generation: int = Field(0, description="Generation of the spec the condition is about.")


ControlStatusValue = Literal["Pass", "Fail", "Weakened"]


class ControlState(ApiModel):
    """One security control's verdict, judged from the live objects."""

    name: str = Field(description="Control name, e.g. image-digest.")
    status: ControlStatusValue = Field(
        description="Pass; Fail (live state violates it); Weakened (the spec opted out on purpose)."
    )
    reason: str = Field(description="CamelCase reason.")
    message: str = Field("", description="Human-readable detail.")


class CertificateStatus(ApiModel):
    """The model's current server certificate. No key material, ever."""

    not_after: str = Field(description="Expiry (RFC 3339).")
    serial_number: str = Field(description="Serial number, hex.")
    sha256_fingerprint: str = Field(description="SHA-256 fingerprint of the DER certificate, hex.")


class WeightsStatus(ApiModel):
    """What the model's running pods verified before they started: no key material, only digests."""

    source: str = Field(description="The weights image, or the directory on the SMD's volume.")
    manifest_sha256: str | None = Field(
        None,
        description=(
            "SHA-256 of the signed manifest (the signature's subject digest, over every file's digest) "
            "that the running pods of the current template verified."
        ),
    )
    signer_key_sha256: str | None = Field(
        None, description="SHA-256 of the signer's public key (DER SubjectPublicKeyInfo) they verified."
    )


Phase = Literal["Ready", "Progressing", "Degraded", "Blocked", "Quarantined"]


class SecureModelDeploymentStatus(ApiModel):
    """Observed state, written by the operator only."""

    observed_generation: int | None = Field(None, description="Generation the status describes.")
    phase: Phase | None = Field(None, description="Summary: Ready, Progressing, Degraded or Blocked.")
    compliant: bool | None = Field(None, description="True when every control passes.")
    image: str | None = Field(None, description="Running image, shortened for display.")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, Compliant and one condition per control.",
        json_schema_extra=list_map("type"),
    )
    controls: list[ControlState] = Field(
        default_factory=list,
        description="Per-control verdicts.",
        json_schema_extra=list_map("name"),
    )
    certificate: CertificateStatus | None = Field(None, description="Current server certificate.")
    weights: WeightsStatus | None = Field(None, description="The model's weights, as the pods verified them.")

    def as_object(self) -> dict[str, Any]:
        """The status as stored: camelCase, absent fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class SecureModelDeployment(ApiModel):
    """A model-serving workload that is locked down by construction."""

    model_config = ConfigDict(extra="ignore")
    spec: SecureModelDeploymentSpec
    status: SecureModelDeploymentStatus | None = None


def describe(error: ValidationError, prefix: str = "spec") -> str:
    """Every problem of a spec, each named by its field path as users write it."""
    problems = []
    for item in error.errors():
        message = str(item["msg"]).removeprefix("Value error, ")
        location = ".".join([prefix, *(str(part) for part in item["loc"])])
        # A rule's own message names its field already.
        problems.append(message if message.startswith(location) else f"{location}: {message}")
    return "; ".join(problems)
