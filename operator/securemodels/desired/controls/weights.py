"""Control `weights-verification`: the model serves only weights whose signature was verified.

The weights are what the operator exists to protect, and an image digest pins the server, not them. With
`spec.model.weights.signature`, an init container runs the OpenSSF Model Signing verifier (the
`model-signing` library, in the operator's own image) on the weights, read-only, against the public key
or certificate chain of a ConfigMap the SMD names, before the model container may start. A model whose
weights fail never starts. The operator pins the trusted key's SHA-256 in the verifier's arguments, so a
key swapped in the ConfigMap is refused by pods started before the operator has seen it.

Judged by effect: the Deployment's template and every running pod must verify exactly the declared
weights with the pinned key, in an init container that runs to completion before the model (not a
restartable "sidecar" init container), and the model must see the weights read-only; every running pod
must report, through its verifier's termination message, the manifest digest and signer key it verified.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from securemodels.api.v1alpha1 import SIGNING_TRUST_DIR, Weights, WeightsStatus, registry_allows
from securemodels.desired import canonical
from securemodels.desired.controls import pod_security, storage
from securemodels.desired.controls.base import verdict
from securemodels.desired.model import Blocker, Context, ControlResult, Manifest, Observed

NAME = "weights-verification"
CONDITION = "WeightsVerified"
VERIFIER_CONTAINER = "verify-weights"
MODEL_CONTAINER = "model"
WEIGHTS_VOLUME = "weights"
TRUST_VOLUME = "signing-trust"
TRUST_FILE = "trust.pem"
# The trust pin shown by `securemodels render`, which reads no ConfigMap: not hex, so a verifier given it
# refuses every key.
OFFLINE_PIN = "pinned-by-the-operator"
# What the verifier writes to its termination message when the weights verify (one JSON object).
MANIFEST_FIELD = "manifestSha256"
SIGNER_FIELD = "signerKeySha256"
TRUST_FIELD = "trustSha256"
# The curves model-signing accepts for elliptic-curve keys.
CURVES = ("secp256r1", "secp384r1", "secp521r1")
VERIFIER_RESOURCES = {
    "requests": {"cpu": "250m", "memory": "256Mi"},
    "limits": {"cpu": "2", "memory": "1Gi"},
}


class Reason(StrEnum):
    VERIFIED = "SignatureVerified"
    NOT_REQUESTED = "NotRequested"
    VERIFICATION_FAILED = "VerificationFailed"
    NOT_VERIFIED = "NotVerified"
    DEPLOYMENT_MISSING = "DeploymentMissing"
    SIGNATURE_REQUIRED = "SignatureRequired"
    SIGNING_KEY_NOT_FOUND = "SigningKeyNotFound"
    SIGNING_KEY_INVALID = "SigningKeyInvalid"
    VERIFIER_NOT_CONFIGURED = "VerifierNotConfigured"


# ------------------------------------------------------------------------------------- trust material


def trust_bytes(config_map: Manifest | None, key: str) -> bytes | None:
    """The value of `key` in the ConfigMap, as the kubelet writes it to the file; None when absent."""
    if config_map is None:
        return None
    text = (config_map.get("data") or {}).get(key)
    if text is not None:
        return str(text).encode()
    encoded = (config_map.get("binaryData") or {}).get(key)
    if encoded is None:
        return None
    try:
        return base64.b64decode(str(encoded), validate=True)
    except binascii.Error:
        return None


def public_key_sha256(key: ec.EllipticCurvePublicKey) -> str:
    """SHA-256 of the DER SubjectPublicKeyInfo: `openssl pkey -pubin -outform DER | sha256sum`."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def trust_problem(data: bytes, certificate_chain: bool) -> str | None:
    """Why the material cannot verify a model-signing signature, or None."""
    if certificate_chain:
        try:
            certificates = x509.load_pem_x509_certificates(data)
        except ValueError:
            return "holds no PEM certificates"
        return None if certificates else "holds no PEM certificates"
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        return "is not a PEM public key"
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in CURVES:
        return "is not an elliptic-curve public key on P-256, P-384 or P-521"
    return None


def signer_of(data: bytes) -> str | None:
    """The signer key's fingerprint, when the trust material is the key itself."""
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        return None
    return public_key_sha256(key) if isinstance(key, ec.EllipticCurvePublicKey) else None


def trust_pin(context: Context) -> str:
    """SHA-256 of the trust material as the verifier will read it; a stand-in offline."""
    weights = context.spec.model.weights
    if weights is None or weights.signature is None:
        return OFFLINE_PIN
    data = trust_bytes(context.facts.signing_config_map, weights.signature.trust.key)
    return hashlib.sha256(data).hexdigest() if data is not None else OFFLINE_PIN


# ------------------------------------------------------------------------------------------- builders


def source(weights: Weights) -> str:
    """The weights as status names them: the image, or the directory on the SMD's volume."""
    return weights.image if weights.image is not None else f"volume:{weights.storage_path}"


def volumes(context: Context) -> list[dict[str, Any]]:
    """The weights image volume and the ConfigMap of the trusted key; the SMD's own volume carries
    weights on storage."""
    weights = context.spec.model.weights
    found: list[dict[str, Any]] = []
    if weights is None:
        return found
    if weights.image is not None:
        found.append(
            {
                "name": WEIGHTS_VOLUME,
                "image": {"reference": weights.image, "pullPolicy": context.config.image_pull_policy},
            }
        )
    if weights.signature is not None:
        trust = weights.signature.trust
        found.append(
            {
                "name": TRUST_VOLUME,
                "configMap": {
                    "name": trust.name,
                    "items": [{"key": trust.key, "path": TRUST_FILE}],
                    "defaultMode": 0o444,
                },
            }
        )
    return found


def weights_mount(weights: Weights) -> dict[str, Any]:
    """The weights, read-only, where the model (and the verifier) find them."""
    if weights.image is not None:
        return {"name": WEIGHTS_VOLUME, "mountPath": weights.mount_path, "readOnly": True}
    return {
        "name": storage.VOLUME,
        "mountPath": weights.mount_path,
        "subPath": weights.storage_path,
        "readOnly": True,
    }


def volume_read_only(context: Context) -> bool:
    """With weights on the SMD's volume, the model mounts all of it read-only: a model that could write
    the volume could change the weights after they were verified, and a restarted container is not
    verified again."""
    weights = context.spec.model.weights
    return weights is not None and weights.storage_path is not None


def verifier_args(context: Context) -> list[str]:
    weights = context.spec.model.weights
    assert weights is not None and weights.signature is not None
    signature = weights.signature
    trust_flag = "--public-key" if signature.public_key is not None else "--certificate-chain"
    return [
        weights.mount_path,
        "--signature",
        f"{weights.mount_path}/{signature.path}",
        trust_flag,
        f"{SIGNING_TRUST_DIR}/{TRUST_FILE}",
        "--trust-sha256",
        trust_pin(context),
    ]


def init_containers(context: Context) -> list[dict[str, Any]]:
    """The verifier, when a signature is declared: it must exit 0 before the model container starts."""
    weights = context.spec.model.weights
    verifier = context.config.weights_verifier_image
    if weights is None or weights.signature is None or verifier is None:
        return []
    return [
        {
            "name": VERIFIER_CONTAINER,
            "image": verifier,
            "imagePullPolicy": context.config.image_pull_policy,
            "command": ["securemodels", "verify-weights"],
            "args": verifier_args(context),
            "resources": VERIFIER_RESOURCES,
            "securityContext": pod_security.container_security_context(),
            "terminationMessagePolicy": "File",
            "volumeMounts": [
                weights_mount(weights),
                {"name": TRUST_VOLUME, "mountPath": SIGNING_TRUST_DIR, "readOnly": True},
            ],
        }
    ]


# ------------------------------------------------------------------------------------------ preflight


def offline_preflight(context: Context) -> Blocker | None:
    """What blocks the SMD whatever the cluster holds: settings of the operator."""
    weights = context.spec.model.weights
    signed = weights is not None and weights.signature is not None
    if context.config.require_signed_weights and not signed:
        return Blocker(
            Reason.SIGNATURE_REQUIRED,
            "the cluster requires signed weights: declare spec.model.weights with a signature",
        )
    verifier = context.config.weights_verifier_image
    if signed and verifier is None:
        return Blocker(
            Reason.VERIFIER_NOT_CONFIGURED,
            "spec.model.weights.signature needs the operator's weightsVerifierImage setting, which is unset",
        )
    if signed and verifier is not None and not registry_allows(verifier, context.config.allowed_registries):
        return Blocker(
            Reason.VERIFIER_NOT_CONFIGURED,
            f"spec.model.weights.signature needs the operator's weightsVerifierImage {verifier}, which "
            "is not from a registry the cluster allows: mirror it to one of them and set "
            "weightsVerifierImage",
        )
    return None


def preflight(context: Context, observed: Observed) -> Blocker | None:
    if (blocker := offline_preflight(context)) is not None:
        return blocker
    weights = context.spec.model.weights
    if weights is None or weights.signature is None:
        return None
    signature = weights.signature
    trust = signature.trust
    field = "publicKey" if signature.public_key is not None else "certificateChain"
    where = f"spec.model.weights.signature.{field}"
    config_map = context.facts.signing_config_map
    if config_map is None:
        return Blocker(Reason.SIGNING_KEY_NOT_FOUND, f"{where}: ConfigMap {trust.name} does not exist")
    data = trust_bytes(config_map, trust.key)
    if data is None:
        return Blocker(
            Reason.SIGNING_KEY_NOT_FOUND, f"{where}: ConfigMap {trust.name} has no key {trust.key}"
        )
    problem = trust_problem(data, certificate_chain=signature.certificate_chain is not None)
    if problem is not None:
        return Blocker(
            Reason.SIGNING_KEY_INVALID, f"{where}: key {trust.key} of ConfigMap {trust.name} {problem}"
        )
    return None


# ----------------------------------------------------------------------------------------------- check


def _containers(pod_spec: Manifest) -> Iterator[dict[str, Any]]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from pod_spec.get(key) or []


def _weights_volumes(context: Context, weights: Weights, pod_spec: Manifest) -> set[str]:
    """Every volume of the pod that holds the weights, whatever it is named: the image's, or any volume
    of the SMD's claim."""
    names = {WEIGHTS_VOLUME if weights.image is not None else storage.VOLUME}
    for volume in pod_spec.get("volumes") or []:
        reference = (volume.get("image") or {}).get("reference")
        claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
        if (weights.image is not None and reference == weights.image) or (
            weights.storage_path is not None and claim == context.names.volume_claim.name
        ):
            names.add(str(volume.get("name")))
    return names


def _reaches_weights(mount: Manifest, weights: Weights, volumes: set[str]) -> bool:
    """Whether the mount shows the weights' files: their volume, and on the SMD's volume a directory
    that is theirs, inside them or above them."""
    if mount.get("name") not in volumes:
        return False
    if weights.storage_path is None or "subPathExpr" in mount:
        return True
    sub = posixpath.normpath(str(mount.get("subPath") or ".")).strip("/")
    path = weights.storage_path
    return sub in ("", ".") or sub == path or sub.startswith(path + "/") or path.startswith(sub + "/")


def _is_weights_mount(mount: Manifest, weights: Weights) -> bool:
    wanted = weights_mount(weights)
    return {key: mount.get(key) for key in wanted} == wanted


def _mount_problems(context: Context, weights: Weights, pod_spec: Manifest, where: str) -> list[str]:
    problems = []
    volumes = _weights_volumes(context, weights, pod_spec)
    for container in _containers(pod_spec):
        name = container.get("name")
        for mount in container.get("volumeMounts") or []:
            writable = mount.get("readOnly") is not True
            if _reaches_weights(mount, weights, volumes) and writable:
                problems.append(f"{where}: container {name} may write the weights (volume {mount['name']})")
    model = next(
        (item for item in pod_spec.get("containers") or [] if item.get("name") == MODEL_CONTAINER), None
    )
    if model is not None and not any(
        _is_weights_mount(mount, weights) for mount in model.get("volumeMounts") or []
    ):
        problems.append(f"{where}: the model container does not mount the weights at {weights.mount_path}")
    return problems


def _volume_problems(context: Context, weights: Weights, pod_spec: Manifest, where: str) -> list[str]:
    problems = []
    by_name = {item.get("name"): item for item in pod_spec.get("volumes") or []}
    if weights.image is not None:
        reference = ((by_name.get(WEIGHTS_VOLUME) or {}).get("image") or {}).get("reference")
        if reference != weights.image:
            problems.append(
                f"{where}: volume {WEIGHTS_VOLUME} mounts {reference or 'nothing'}, "
                "not spec.model.weights.image"
            )
    if weights.signature is not None:
        trust = weights.signature.trust
        config_map = (by_name.get(TRUST_VOLUME) or {}).get("configMap") or {}
        items = [(item.get("key"), item.get("path")) for item in config_map.get("items") or []]
        if config_map.get("name") != trust.name or items != [(trust.key, TRUST_FILE)]:
            problems.append(
                f"{where}: volume {TRUST_VOLUME} is not key {trust.key} of ConfigMap {trust.name}"
            )
    return problems


def _verifier_problems(context: Context, pod_spec: Manifest, where: str, *, current: bool) -> list[str]:
    """The verifier must be there, be ours, and finish before the model starts. `current`: the template,
    which must pin the key the operator read now (a pod of an earlier template may pin an earlier key)."""
    weights = context.spec.model.weights
    assert weights is not None
    init = pod_spec.get("initContainers") or []
    verifier = next((item for item in init if item.get("name") == VERIFIER_CONTAINER), None)
    if verifier is None:
        return [f"{where}: no init container verifies the weights"]
    problems = []
    if verifier.get("image") != context.config.weights_verifier_image:
        problems.append(
            f"{where}: the {VERIFIER_CONTAINER} init container runs {verifier.get('image')}, not the verifier"
        )
    if verifier.get("restartPolicy") == "Always":
        # A restartable init container runs beside the model instead of before it.
        problems.append(f"{where}: the {VERIFIER_CONTAINER} init container does not run before the model")
    expected = verifier_args(context)
    args = list(verifier.get("args") or [])
    same_args = args == expected if current else args[:-1] == expected[:-1]
    if verifier.get("command") != ["securemodels", "verify-weights"] or not same_args:
        problems.append(
            f"{where}: the {VERIFIER_CONTAINER} init container does not verify spec.model.weights with the "
            "declared key"
        )
    mounts = [(item.get("name"), item.get("mountPath")) for item in verifier.get("volumeMounts") or []]
    if (TRUST_VOLUME, SIGNING_TRUST_DIR) not in mounts or not any(
        _is_weights_mount(item, weights) for item in verifier.get("volumeMounts") or []
    ):
        problems.append(
            f"{where}: the {VERIFIER_CONTAINER} init container does not mount the weights and key"
        )
    return problems


def spec_problems(context: Context, pod_spec: Manifest, where: str, *, current: bool) -> list[str]:
    """What is wrong with how one pod spec mounts and verifies the weights."""
    weights = context.spec.model.weights
    if weights is None:
        return []
    problems = _volume_problems(context, weights, pod_spec, where)
    problems += _mount_problems(context, weights, pod_spec, where)
    if weights.signature is not None:
        problems += _verifier_problems(context, pod_spec, where, current=current)
    return problems


@dataclass(frozen=True)
class Evidence:
    """What a pod's verifier reported: verified (with the digests), failed (with its message), or not
    finished."""

    verified: bool
    finished: bool
    manifest_sha256: str = ""
    signer_key_sha256: str = ""
    trust_sha256: str = ""
    message: str = ""


def _terminated(status: Manifest) -> Manifest | None:
    for key in ("state", "lastState"):
        found = (status.get(key) or {}).get("terminated")
        if found:
            return dict(found)
    return None


def evidence(pod: Manifest) -> Evidence:
    """The verifier's report in the pod's status."""
    statuses = (pod.get("status") or {}).get("initContainerStatuses") or []
    status = next((item for item in statuses if item.get("name") == VERIFIER_CONTAINER), None)
    terminated = _terminated(status) if status is not None else None
    if terminated is None:
        return Evidence(verified=False, finished=False)
    message = str(terminated.get("message") or "").strip()
    if terminated.get("exitCode") != 0:
        return Evidence(
            verified=False, finished=True, message=message or f"exit code {terminated.get('exitCode')}"
        )
    try:
        report = json.loads(message)
        return Evidence(
            verified=True,
            finished=True,
            manifest_sha256=str(report[MANIFEST_FIELD]),
            signer_key_sha256=str(report[SIGNER_FIELD]),
            trust_sha256=str(report[TRUST_FIELD]),
        )
    except (ValueError, KeyError, TypeError):
        return Evidence(verified=False, finished=True, message="", trust_sha256="")


def _model_started(pod: Manifest) -> bool:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        state = status.get("state") or {}
        if status.get("name") == MODEL_CONTAINER and ("running" in state or "terminated" in state):
            return True
    return False


def _pinned(pod: Manifest) -> str | None:
    for container in (pod.get("spec") or {}).get("initContainers") or []:
        if container.get("name") == VERIFIER_CONTAINER:
            args = list(container.get("args") or [])
            return args[-1] if args else None
    return None


def pod_problems(context: Context, pod: Manifest) -> tuple[list[str], list[str]]:
    """(failed verifications, other problems) of one running pod's evidence."""
    name = pod["metadata"]["name"]
    found = evidence(pod)
    if found.finished and not found.verified and found.message:
        return [f"pod {name}: the weights failed verification: {found.message}"], []
    if found.verified:
        if found.trust_sha256 != _pinned(pod):
            return [], [f"pod {name}: the verifier used a key other than the one its template pins"]
        return [], []
    if found.finished:
        return [], [f"pod {name}: the verifier finished without reporting a verified manifest"]
    if _model_started(pod):
        return [], [f"pod {name}: the model started without its weights being verified"]
    return [], []  # still verifying: it serves nothing yet


def check(context: Context, observed: Observed) -> ControlResult:
    weights = context.spec.model.weights
    problems = list(observed.findings.get(NAME, ()))
    if weights is None or weights.signature is None:
        what = "spec.model.weights declares no signature" if weights else "spec.model.weights is not set"
        return verdict(NAME, problems, Reason.NOT_VERIFIED, Reason.NOT_REQUESTED, f"{what}: not verified")
    deployment = observed.get(context.names.deployment)
    if deployment is None:
        return ControlResult(NAME, "Fail", Reason.DEPLOYMENT_MISSING, "the model's Deployment does not exist")
    problems += spec_problems(
        context, deployment["spec"]["template"]["spec"], "the Deployment's template", current=True
    )
    failed: list[str] = []
    for pod in observed.pods:
        where = f"pod {pod['metadata']['name']}"
        problems += spec_problems(context, pod.get("spec") or {}, where, current=False)
        pod_failed, pod_other = pod_problems(context, pod)
        failed += pod_failed
        problems += pod_other
    if failed:
        return ControlResult(NAME, "Fail", Reason.VERIFICATION_FAILED, "; ".join(failed + problems))
    status = weights_status(context, observed)
    verified = (
        f"the pods verified manifest sha256:{status.manifest_sha256}, signed by key "
        f"sha256:{status.signer_key_sha256}"
        if status is not None and status.manifest_sha256
        else "every pod verifies the weights' signature before the model starts"
    )
    return verdict(NAME, problems, Reason.NOT_VERIFIED, Reason.VERIFIED, verified)


def weights_status(context: Context, observed: Observed) -> WeightsStatus | None:
    """What the running pods of the current template verified, for status: the digests they agree on."""
    weights = context.spec.model.weights
    if weights is None:
        return None
    deployment = observed.get(context.names.deployment)
    template = ((deployment or {}).get("spec") or {}).get("template") or {}
    current = ((template.get("metadata") or {}).get("annotations") or {}).get(
        canonical.TEMPLATE_MAC_ANNOTATION
    )
    reports = {
        (found.manifest_sha256, found.signer_key_sha256)
        for pod in observed.pods
        if current is not None
        and ((pod.get("metadata") or {}).get("annotations") or {}).get(canonical.TEMPLATE_MAC_ANNOTATION)
        == current
        and canonical.judge_pod(context.stamp_key, context.owner.uid, pod, None).stamped
        and (found := evidence(pod)).verified
    }
    if weights.signature is None or len(reports) != 1:
        return WeightsStatus(source=source(weights))
    ((manifest, signer),) = reports
    return WeightsStatus(source=source(weights), manifest_sha256=manifest, signer_key_sha256=signer)


def failed_pods(observed: Observed) -> int:
    """Pods whose verifier refused the weights, for the metric."""
    return sum(
        1
        for pod in observed.pods
        if (found := evidence(pod)).finished and not found.verified and found.message
    )
