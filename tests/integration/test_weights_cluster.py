"""Signed weights on the real control plane: admission refuses weights that are not pinned or not
allowed, a missing key blocks with one Event and writes nothing, the verifier's report in pod status
becomes the SMD's status and metrics, a failed verification is reported, and tampering with the verifier,
the key or the weights in the Deployment fails the control and is repaired.

kwok's pods do not run containers, so the verifier's report is written into the pod's status here as the
kubelet writes it from the init container's termination message (tests/weights runs the verifier
itself, and tests/e2e on a real node).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from localcluster import LocalCluster
from securemodels.config import OperatorConfig
from securemodels.desired.controls import weights
from support.kube import Kubectl, wait_for
from support.manifests import smd
from support.operator import RESYNC_SECONDS, FakeClock, RunningOperator
from support.paths import OPERATOR_NAMESPACE

pytestmark = pytest.mark.integration

WITHIN_A_RESYNC = RESYNC_SECONDS * 3
DIGEST = "sha256:" + "cd" * 32
WEIGHTS_IMAGE = f"registry.example.com/ml/fraud-weights:1.0@{DIGEST}"
VERIFIER = "registry.example.com/secure-model-operator@sha256:" + "5e" * 32
KEY_CONFIG_MAP = "fraud-signing-key"
MANIFEST_SHA256 = "6d" * 32


@pytest.fixture(scope="module")
def operator(cluster: LocalCluster, clock: FakeClock) -> Iterator[RunningOperator]:
    """The operator as the chart configures it: the weights' verifier is an image by digest."""
    config = OperatorConfig(
        namespace=OPERATOR_NAMESPACE, resync_seconds=RESYNC_SECONDS, weights_verifier_image=VERIFIER
    )
    running = RunningOperator(cluster.kubeconfig, config, clock).start()
    yield running
    running.stop()


def public_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def key_config_map(namespace: str, pem: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": KEY_CONFIG_MAP, "namespace": namespace},
        "data": {"release.pub": pem},
    }


def signed_smd(name: str, namespace: str, **weights_fields: Any) -> dict[str, Any]:
    return smd(
        name,
        namespace,
        model={
            "weights": {
                "image": WEIGHTS_IMAGE,
                "signature": {"publicKey": {"name": KEY_CONFIG_MAP, "key": "release.pub"}},
                **weights_fields,
            }
        },
    )


def phase(kubectl: Kubectl, name: str, namespace: str) -> str | None:
    return kubectl.status(name, namespace).get("phase")


def control(kubectl: Kubectl, name: str, namespace: str) -> dict[str, Any] | None:
    return kubectl.control(kubectl.get("smd", name, namespace), weights.NAME)


def wait_control(
    kubectl: Kubectl, name: str, namespace: str, status: str, timeout: float = WITHIN_A_RESYNC
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        found = control(kubectl, name, namespace)
        return found if found and found["status"] == status else None

    return wait_for(probe, timeout=timeout, interval=0.1, what=f"{weights.NAME} {status}")


def template(kubectl: Kubectl, name: str, namespace: str) -> dict[str, Any]:
    return dict(kubectl.get("deployment", name, namespace)["spec"]["template"]["spec"])


def running_pods(kubectl: Kubectl, name: str, namespace: str) -> list[dict[str, Any]]:
    def probe() -> list[dict[str, Any]] | None:
        pods = kubectl.items("pod", namespace, f"app.kubernetes.io/instance={name}")
        running = [
            pod
            for pod in pods
            if pod["status"].get("phase") == "Running" and not pod["metadata"].get("deletionTimestamp")
        ]
        return running or None

    return wait_for(probe, timeout=60, what=f"{name}'s pods running")


def report(kubectl: Kubectl, namespace: str, pod: dict[str, Any], message: str, exit_code: int = 0) -> None:
    """What the kubelet writes when the verifier ends: its termination message in the pod's status."""
    statuses = pod["status"]["initContainerStatuses"]
    index = next(i for i, item in enumerate(statuses) if item["name"] == weights.VERIFIER_CONTAINER)
    terminated = dict(statuses[index]["state"]["terminated"])
    terminated.update(exitCode=exit_code, message=message, reason="Completed" if exit_code == 0 else "Error")
    patch = [
        {
            "op": "replace",
            "path": f"/status/initContainerStatuses/{index}/state",
            "value": {"terminated": terminated},
        }
    ]
    kubectl(
        "patch", "pod", pod["metadata"]["name"], "-n", namespace, "--subresource=status", "--type=json",
        "-p", json.dumps(patch),
    )  # fmt: skip


def verified_report(pin: str, signer: str = "73" * 32) -> str:
    return json.dumps(
        {weights.MANIFEST_FIELD: MANIFEST_SHA256, weights.SIGNER_FIELD: signer, weights.TRUST_FIELD: pin}
    )


def pin_of(pem: str) -> str:
    return hashlib.sha256(pem.encode()).hexdigest()


def warnings(kubectl: Kubectl, namespace: str, name: str, reason: str) -> list[dict[str, Any]]:
    return [
        item
        for item in kubectl.items("event", namespace)
        if item["involvedObject"]["name"] == name and item["reason"] == reason and item["type"] == "Warning"
    ]


# ---------------------------------------------------------------------------------------------- admission


TWO_ROOTS = {"publicKey": {"name": KEY_CONFIG_MAP, "key": "k"}, "certificateChain": {"name": "c", "key": "k"}}


@pytest.mark.parametrize(
    ("weights_fields", "policy", "says"),
    [
        ({"image": "registry.example.com/ml/fraud-weights:1.0"}, {},
         "spec.model.weights.image must be pinned by digest"),
        ({"image": f"quay.io/ml/fraud-weights@{DIGEST}"}, {"allowedRegistries": ["registry.example.com"]},
         "spec.model.weights.image is not from a registry in spec.imagePolicy.allowedRegistries"),
        ({"signature": TWO_ROOTS}, {},
         "spec.model.weights.signature: exactly one of publicKey or certificateChain must be set"),
        ({"image": None, "storagePath": "llama"}, {}, "spec.model.weights.storagePath needs spec.storage"),
    ],
    ids=["tag", "registry", "two trust roots", "no volume"],
)  # fmt: skip
def test_weights_the_api_server_refuses_with_the_field_named(
    kubectl: Kubectl, namespace: str, weights_fields: dict[str, Any], policy: dict[str, Any], says: str
) -> None:
    manifest = signed_smd("refused", namespace, **weights_fields)
    manifest["spec"]["model"]["weights"] = {
        key: value for key, value in manifest["spec"]["model"]["weights"].items() if value is not None
    }
    if policy:
        manifest["spec"]["imagePolicy"] = policy

    result = kubectl.run("apply", "-f", "-", stdin=yaml.safe_dump(manifest))

    assert result.returncode != 0
    assert says in result.stderr
    assert kubectl.get("smd", "refused", namespace) is None


# ----------------------------------------------------------------------------------------------- blocked


def test_a_missing_key_blocks_with_one_event_and_the_key_unblocks(
    kubectl: Kubectl, namespace: str, operator: RunningOperator
) -> None:
    kubectl.apply(signed_smd("keyless", namespace))

    wait_for(lambda: phase(kubectl, "keyless", namespace) == "Blocked", what="Blocked")
    ready = kubectl.condition(kubectl.get("smd", "keyless", namespace), "Ready")
    assert ready is not None and ready["reason"] == "SigningKeyNotFound"
    assert (
        f"spec.model.weights.signature.publicKey: ConfigMap {KEY_CONFIG_MAP} does not exist"
        in ready["message"]
    )
    assert kubectl.get("deployment", "keyless", namespace) is None
    assert kubectl.children("keyless", namespace) == []
    wait_for(lambda: warnings(kubectl, namespace, "keyless", "SigningKeyNotFound"), what="the Event")
    events_then = warnings(kubectl, namespace, "keyless", "SigningKeyNotFound")
    assert len(events_then) == 1 and events_then[0].get("count", 1) == 1

    def ready_now() -> dict[str, Any]:
        return kubectl.condition(kubectl.get("smd", "keyless", namespace), "Ready") or {}

    kubectl.apply({**key_config_map(namespace, "not a key"), "data": {"other": "x"}})
    wait_for(
        lambda: "has no key release.pub" in ready_now().get("message", ""),
        timeout=WITHIN_A_RESYNC,
        what="the missing key named",
    )
    kubectl.apply(key_config_map(namespace, "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n"))
    wait_for(
        lambda: ready_now().get("reason") == "SigningKeyInvalid",
        timeout=WITHIN_A_RESYNC,
        what="SigningKeyInvalid",
    )

    pem = public_pem()
    kubectl.apply(key_config_map(namespace, pem))
    wait_for(
        lambda: kubectl.get("deployment", "keyless", namespace), timeout=WITHIN_A_RESYNC, what="realised"
    )
    (verifier,) = template(kubectl, "keyless", namespace)["initContainers"]
    assert verifier["args"][-1] == pin_of(pem)
    assert kubectl.get("configmap", KEY_CONFIG_MAP, namespace) is not None  # the user's, untouched


# ------------------------------------------------------------------------------------------ the verdicts


def test_the_verifiers_report_becomes_status_and_metrics(
    kubectl: Kubectl, namespace: str, operator: RunningOperator
) -> None:
    pem = public_pem()
    kubectl.apply([key_config_map(namespace, pem), signed_smd("signed", namespace)])
    (pod,) = running_pods(kubectl, "signed", namespace)

    # kwok reports the init container done, with no report: the model runs unverified, as far as anyone
    # can tell.
    failed = wait_control(kubectl, "signed", namespace, "Fail", timeout=60)
    assert failed["reason"] == "NotVerified"
    assert "the verifier finished without reporting a verified manifest" in failed["message"]

    report(kubectl, namespace, pod, verified_report(pin_of(pem)))
    passed = wait_control(kubectl, "signed", namespace, "Pass", timeout=60)
    assert passed["reason"] == "SignatureVerified"
    status = kubectl.status("signed", namespace)
    assert status["weights"] == {
        "source": WEIGHTS_IMAGE,
        "manifestSha256": MANIFEST_SHA256,
        "signerKeySha256": "73" * 32,
    }
    wait_for(lambda: phase(kubectl, "signed", namespace) == "Ready", timeout=60, what="Ready")
    assert operator.metric(
        "securemodels_weights_verified_info", namespace=namespace, name="signed",
        manifest_sha256=MANIFEST_SHA256, signer_key_sha256="73" * 32,
    ) == 1  # fmt: skip
    assert (
        operator.metric(
            "securemodels_compliance_status", namespace=namespace, name="signed", control=weights.NAME
        )
        == 1
    )


def test_weights_that_fail_verification_are_reported_and_never_counted_verified(
    kubectl: Kubectl, namespace: str, operator: RunningOperator
) -> None:
    kubectl.apply([key_config_map(namespace, public_pem()), signed_smd("tampered", namespace)])
    (pod,) = running_pods(kubectl, "tampered", namespace)
    message = "verification failed: ... Hash mismatch for 'model-00001.safetensors' ..."

    report(kubectl, namespace, pod, message, exit_code=1)

    failed = wait_control(kubectl, "tampered", namespace, "Fail", timeout=60)
    assert failed["reason"] == "VerificationFailed"
    assert "Hash mismatch for 'model-00001.safetensors'" in failed["message"]
    failed_pods = "securemodels_weights_verification_failed_pods"
    wait_for(
        lambda: operator.metric(failed_pods, namespace=namespace, name="tampered") == 1,
        what="the failed pod counted",
    )
    assert "manifestSha256" not in kubectl.status("tampered", namespace)["weights"]
    assert phase(kubectl, "tampered", namespace) == "Degraded"


# --------------------------------------------------------------------------------------------- tampering


def realised_and_verified(kubectl: Kubectl, name: str, namespace: str) -> str:
    pem = public_pem()
    kubectl.apply([key_config_map(namespace, pem), signed_smd(name, namespace)])
    (pod,) = running_pods(kubectl, name, namespace)
    report(kubectl, namespace, pod, verified_report(pin_of(pem)))
    wait_control(kubectl, name, namespace, "Pass", timeout=60)
    return pem


def patch_deployment(kubectl: Kubectl, name: str, namespace: str, *operations: dict[str, Any]) -> None:
    kubectl("patch", "deployment", name, "-n", namespace, "--type=json", "-p", json.dumps(list(operations)))


def volume_index(kubectl: Kubectl, name: str, namespace: str, volume: str) -> int:
    volumes = template(kubectl, name, namespace)["volumes"]
    return next(index for index, item in enumerate(volumes) if item["name"] == volume)


def test_a_removed_verifier_fails_the_control_and_is_restored(
    kubectl: Kubectl, namespace: str, operator: RunningOperator
) -> None:
    pem = realised_and_verified(kubectl, "guarded", namespace)

    patch_deployment(
        kubectl, "guarded", namespace, {"op": "remove", "path": "/spec/template/spec/initContainers"}
    )

    failed = wait_control(kubectl, "guarded", namespace, "Fail")
    assert (
        "was changed outside the operator at spec.template.spec.initContainers (removed); restored"
        in failed["message"]
    )
    restored = wait_for(
        lambda: template(kubectl, "guarded", namespace).get("initContainers"), what="restored"
    )
    assert restored[0]["args"][-1] == pin_of(pem)


def test_a_swapped_key_fails_the_control_and_is_restored(
    kubectl: Kubectl, namespace: str, operator: RunningOperator
) -> None:
    realised_and_verified(kubectl, "keyed", namespace)
    index = volume_index(kubectl, "keyed", namespace, weights.TRUST_VOLUME)
    kubectl.apply(
        {
            **key_config_map(namespace, public_pem()),
            "metadata": {"name": "attacker-key", "namespace": namespace},
        }
    )

    path = f"/spec/template/spec/volumes/{index}/configMap/name"
    patch_deployment(kubectl, "keyed", namespace, {"op": "replace", "path": path, "value": "attacker-key"})

    failed = wait_control(kubectl, "keyed", namespace, "Fail")
    assert f"volumes[{weights.TRUST_VOLUME}]" in failed["message"]
    wait_for(
        lambda: (
            template(kubectl, "keyed", namespace)["volumes"][index]["configMap"]["name"] == KEY_CONFIG_MAP
        ),
        what="the key restored",
    )
    assert kubectl.get("configmap", "attacker-key", namespace) is not None  # not the operator's to delete


def test_weights_swapped_for_a_tag_fail_both_controls_and_are_restored(
    kubectl: Kubectl, namespace: str, operator: RunningOperator
) -> None:
    realised_and_verified(kubectl, "pinned", namespace)
    index = volume_index(kubectl, "pinned", namespace, weights.WEIGHTS_VOLUME)

    patch_deployment(
        kubectl, "pinned", namespace,
        {"op": "replace", "path": f"/spec/template/spec/volumes/{index}/image/reference",
         "value": "registry.example.com/ml/fraud-weights:latest"},
    )  # fmt: skip

    failed = wait_control(kubectl, "pinned", namespace, "Fail")
    assert f"volumes[{weights.WEIGHTS_VOLUME}]" in failed["message"]
    smd_now = kubectl.get("smd", "pinned", namespace)
    image_digest = kubectl.control(smd_now, "image-digest")
    assert image_digest is not None and image_digest["status"] == "Fail"
    wait_for(
        lambda: (
            template(kubectl, "pinned", namespace)["volumes"][index]["image"]["reference"] == WEIGHTS_IMAGE
        ),
        what="the weights restored",
    )


def test_a_new_key_in_the_config_map_is_pinned_at_the_next_pass(
    kubectl: Kubectl, namespace: str, operator: RunningOperator
) -> None:
    realised_and_verified(kubectl, "rotated", namespace)
    rotated = public_pem()

    kubectl.apply(key_config_map(namespace, rotated))

    wait_for(
        lambda: template(kubectl, "rotated", namespace)["initContainers"][0]["args"][-1] == pin_of(rotated),
        timeout=WITHIN_A_RESYNC, what="the new pin",
    )  # fmt: skip
