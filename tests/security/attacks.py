"""The attacker's kit: models to attack, the moves shared by several attacks, and what a defence must show.

A detection is only believed when it shows in all three places the operator promises: the control's
verdict in the SMD's status (naming the problem), the compliance metric, and a Warning Event.
"""

from __future__ import annotations

import base64
import datetime
import json
import subprocess
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from support.kube import Kubectl, wait_for
from support.manifests import smd
from support.operator import RESYNC_SECONDS, RunningOperator

# A change made just after a pass is judged at the next one; allow for the reconcile and for scheduling.
WITHIN_A_RESYNC = RESYNC_SECONDS * 3
# Long enough to see that nothing more happens: three resync periods.
THREE_RESYNCS = RESYNC_SECONDS * 3
CONTROLS = (
    "image-digest",
    "network-isolation",
    "mtls",
    "rbac",
    "storage-encryption",
    "data-residency",
    "pod-security",
    "weights-verification",
)
MANAGED = "app.kubernetes.io/managed-by=secure-model-operator"
OPERATOR_FIELD_MANAGER = "securemodels"
PINNED = "registry.example.com/tools/busybox@sha256:" + "cd" * 32
RESTRICTED_CONTAINER: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


@dataclass(frozen=True)
class Model:
    """An SMD under attack."""

    name: str
    namespace: str

    @property
    def selector(self) -> str:
        return f"app.kubernetes.io/name=secure-model,app.kubernetes.io/instance={self.name}"


def new_namespace(kubectl: Kubectl, prefix: str) -> str:
    """A fresh namespace enforcing Pod Security "restricted", as model namespaces should."""
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    labels = {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }
    kubectl.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
    return name


def delete_namespaces(kubectl: Kubectl, names: Iterable[str]) -> None:
    names = list(names)
    if names:
        kubectl.run("delete", "namespace", *names, "--wait=false", "--ignore-not-found")


def launch(kubectl: Kubectl, prefix: str, specs: list[dict[str, Any]], name: str = "m") -> list[Model]:
    """One fresh namespace per spec, each with an SMD `name` made from it, all applied at once."""
    models = [Model(name, new_namespace(kubectl, prefix)) for _ in specs]
    kubectl.apply(
        [smd(model.name, model.namespace, **spec) for model, spec in zip(models, specs, strict=True)]
    )
    return models


def all_smds(kubectl: Kubectl) -> dict[tuple[str, str], dict[str, Any]]:
    return {(item["metadata"]["namespace"], item["metadata"]["name"]): item for item in kubectl.items("smd")}


def fully_compliant(smd_object: dict[str, Any] | None) -> bool:
    status = (smd_object or {}).get("status") or {}
    controls = {item["name"]: item["status"] for item in status.get("controls") or []}
    return status.get("phase") == "Ready" and all(controls.get(name) == "Pass" for name in CONTROLS)


def wait_compliant(kubectl: Kubectl, models: list[Model], timeout: float = 120.0) -> None:
    """Every model Ready with all eight controls passing: the baseline an attack starts from."""
    behind: list[str] = []

    def probe() -> bool:
        found = all_smds(kubectl)
        behind[:] = [
            f"{model.namespace}/{model.name}: {_summary(found.get((model.namespace, model.name)))}"
            for model in models
            if not fully_compliant(found.get((model.namespace, model.name)))
        ]
        return not behind

    try:
        wait_for(probe, timeout=timeout, interval=0.5, what="every model Ready and compliant")
    except AssertionError:
        late = [model for model in models if any(item.startswith(f"{model.namespace}/") for item in behind)]
        seen = {
            model.namespace: {
                "pods": [_pod_summary(pod) for pod in kubectl.items("pod", model.namespace)],
                "deployment": ((kubectl.get("deployment", model.name, model.namespace) or {}).get("status")),
            }
            for model in late
        }
        raise AssertionError(f"not Ready and compliant after {timeout}s: {behind}; live: {seen}") from None


def _pod_summary(pod: dict[str, Any]) -> str:
    status = pod.get("status") or {}
    waiting = [item.get("reason") for item in status.get("conditions") or [] if item.get("status") != "True"]
    return f"{pod['metadata']['name']} {status.get('phase')} {waiting} on {pod['spec'].get('nodeName')}"


def _summary(smd_object: dict[str, Any] | None) -> str:
    status = (smd_object or {}).get("status") or {}
    failing = [item["name"] for item in status.get("controls") or [] if item["status"] != "Pass"]
    ready: dict[str, Any] = next(
        (item for item in status.get("conditions") or [] if item["type"] == "Ready"), {}
    )
    said = str(ready.get("message"))[:200]
    return f"{status.get('phase')} ({ready.get('reason')}: {said}) not passing {failing}"


def control(kubectl: Kubectl, model: Model, name: str) -> dict[str, Any] | None:
    return kubectl.control(kubectl.get("smd", model.name, model.namespace), name)


def ready_condition(kubectl: Kubectl, model: Model) -> dict[str, Any]:
    return kubectl.condition(kubectl.get("smd", model.name, model.namespace), "Ready") or {}


def wait_blocked(kubectl: Kubectl, model: Model, timeout: float = WITHIN_A_RESYNC) -> dict[str, Any]:
    """The Ready condition once the SMD is Blocked."""

    def probe() -> dict[str, Any] | None:
        found = kubectl.get("smd", model.name, model.namespace)
        if ((found or {}).get("status") or {}).get("phase") != "Blocked":
            return None
        return kubectl.condition(found, "Ready")

    return wait_for(probe, timeout=timeout, interval=0.2, what=f"{model} Blocked")


def events(kubectl: Kubectl, namespace: str, name: str | None = None, kind: str | None = None) -> list[Any]:
    """Events in `namespace` about the object `name` (of `kind`), oldest first."""
    found = [
        item
        for item in kubectl.items("event", namespace)
        if (name is None or item["involvedObject"].get("name") == name)
        and (kind is None or item["involvedObject"].get("kind") == kind)
    ]
    return sorted(found, key=lambda item: item["metadata"]["creationTimestamp"])


def smd_events(kubectl: Kubectl, model: Model, reason: str | None = None) -> list[Any]:
    return [
        item
        for item in events(kubectl, model.namespace, model.name, "SecureModelDeployment")
        if reason is None or item["reason"] == reason
    ]


def compliance(operator: RunningOperator, model: Model, name: str) -> float | None:
    return operator.metric(
        "securemodels_compliance_status", namespace=model.namespace, name=model.name, control=name
    )


def stored(kubectl: Kubectl, kind: str, name: str, namespace: str | None) -> dict[str, Any] | None:
    """An object exactly as the API server stores it (for a byte-for-byte comparison later)."""
    return kubectl.get(kind, name, namespace)  # type: ignore[no-any-return]


# What controllers other than the operator change on objects they did not make: status always, the
# scheduler's and kwok's pod fields, the volume binder's claim fields, the Deployment controller's revision.
_CONTROLLER_FIELDS = {"Pod": ("spec",), "PersistentVolumeClaim": ("spec",)}
_CONTROLLER_ANNOTATIONS = (
    "pv.kubernetes.io/",
    "volume.beta.kubernetes.io/",
    "volume.kubernetes.io/",
    "deployment.kubernetes.io/",
)
# The API server copies the node's topology labels onto a pod when it binds it (Kubernetes 1.35+).
_CONTROLLER_LABELS = ("topology.kubernetes.io/",)


def fingerprint(item: Mapping[str, Any] | None) -> str | None:
    """Everything about an object that anyone but a controller doing its usual job could change: which
    object it is, its labels, annotations, owners and finalizers, its content, and whether the operator's
    field manager ever wrote to it."""
    if item is None:
        return None
    metadata = item["metadata"]
    annotations = {
        key: value
        for key, value in (metadata.get("annotations") or {}).items()
        if not key.startswith(_CONTROLLER_ANNOTATIONS)
    }
    labels = {
        key: value
        for key, value in (metadata.get("labels") or {}).items()
        if not key.startswith(_CONTROLLER_LABELS)
    }
    skipped = ("apiVersion", "kind", "metadata", "status", *_CONTROLLER_FIELDS.get(item.get("kind", ""), ()))
    if item.get("aggregationRule"):
        skipped = (*skipped, "rules")  # an aggregated ClusterRole's rules are the aggregation controller's
    content = {key: value for key, value in item.items() if key not in skipped}
    managers = sorted({entry.get("manager", "") for entry in metadata.get("managedFields") or []})
    return json.dumps(
        {
            "uid": metadata["uid"],
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": metadata.get("ownerReferences"),
            "finalizers": metadata.get("finalizers"),
            "content": content,
            "written by the operator": OPERATOR_FIELD_MANAGER in managers,
        },
        sort_keys=True,
    )


def patch(
    kubectl: Kubectl, kind: str, name: str, namespace: str, body: Any, kind_of_patch: str = "merge"
) -> None:
    kubectl("patch", kind, name, "-n", namespace, f"--type={kind_of_patch}", "-p", json.dumps(body))


def restricted_pod(
    name: str,
    namespace: str,
    *,
    labels: Mapping[str, str] | None = None,
    volumes: list[dict[str, Any]] | None = None,
    mounts: list[dict[str, Any]] | None = None,
    env: list[dict[str, Any]] | None = None,
    service_account: str | None = None,
) -> dict[str, Any]:
    """A pod the Pod Security "restricted" level admits: what an attacker with pods/create can start."""
    container: dict[str, Any] = {
        "name": "c",
        "image": PINNED,
        "command": ["sleep", "3600"],
        "securityContext": RESTRICTED_CONTAINER,
    }
    if mounts:
        container["volumeMounts"] = mounts
    if env:
        container["env"] = env
    spec: dict[str, Any] = {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "automountServiceAccountToken": False,
    }
    if volumes:
        spec["volumes"] = volumes
    if service_account:
        spec["serviceAccountName"] = service_account
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {})},
        "spec": spec,
    }


def model_pods(kubectl: Kubectl, model: Model) -> list[dict[str, Any]]:
    return [
        pod
        for pod in kubectl.items("pod", model.namespace, model.selector)
        if pod["metadata"].get("deletionTimestamp") is None
    ]


def try_apply(kubectl: Kubectl, manifest: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """kubectl apply as the admin, returning a refusal instead of raising it."""
    return kubectl.run("apply", "-f", "-", stdin=yaml.safe_dump(manifest))


@dataclass(frozen=True)
class Authority:
    """A CA nobody asked the operator to trust."""

    certificate_pem: bytes
    key_pem: bytes
    fingerprint: str  # SHA-256 of the certificate, hex
    common_name: str


def attacker_ca(common_name: str = "attacker-ca") -> Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return Authority(
        certificate.public_bytes(serialization.Encoding.PEM),
        key_pem,
        certificate.fingerprint(hashes.SHA256()).hex(),
        common_name,
    )


def issuer_of(certificate_pem: bytes) -> str:
    """The common name of the issuer of the first certificate in a PEM bundle."""
    certificate = x509.load_pem_x509_certificate(certificate_pem)
    return str(certificate.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def secret_bytes(secret: Mapping[str, Any] | None, key: str) -> bytes:
    return base64.b64decode(((secret or {}).get("data") or {}).get(key, ""))
