"""The weights-verification control: what it builds into the pod, what blocks an SMD, and how it judges
the template and the running pods. Every attempt to make unsigned or unverified weights serve while the
control passes is tried next to the same state untouched, which passes."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from securemodels.api.v1alpha1 import SIGNING_TRUST_DIR, SecureModelDeploymentSpec
from securemodels.config import OperatorConfig
from securemodels.desired import judging
from securemodels.desired.controls import image_digest, pod_security, storage, weights
from securemodels.desired.model import Context, Facts, Manifest, Observed
from unit.builders import (
    DIGEST,
    NOW,
    REGISTRY,
    allowing,
    altered,
    build,
    container,
    context,
    find,
    live,
    observe,
    pod_spec,
    spec,
    storage_class,
    tampered,
    with_pod,
    with_pods,
)

WEIGHTS_IMAGE = f"{REGISTRY}/ml/fraud-weights:2024.1@{DIGEST}"
OTHER_DIGEST = "sha256:" + "0123456789abcdef" * 4
VERIFIER = f"{REGISTRY}/secure-model-operator@{DIGEST}"
CONFIG = OperatorConfig(weights_verifier_image=VERIFIER)
CONFIG_MAP = "fraud-signing-key"
KEY = "key.pub"
MANIFEST_SHA256 = "51" * 32


def pem(key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


SIGNER = ec.generate_private_key(ec.SECP256R1())
PUBLIC_PEM = pem(SIGNER.public_key())
PIN = hashlib.sha256(PUBLIC_PEM).hexdigest()
SIGNER_SHA256 = hashlib.sha256(
    SIGNER.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).hexdigest()


def self_signed() -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "model signers")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(SIGNER.public_key())
        .serial_number(1)
        .not_valid_before(NOW)
        .not_valid_after(NOW.replace(year=NOW.year + 1))
        .sign(SIGNER, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def config_map(data: dict[str, str] | None = None) -> Manifest:
    return {"metadata": {"name": CONFIG_MAP}, "data": {KEY: PUBLIC_PEM.decode()} if data is None else data}


def signed(**weights_fields: Any) -> SecureModelDeploymentSpec:
    fields: dict[str, Any] = {
        "image": WEIGHTS_IMAGE,
        "signature": {"publicKey": {"name": CONFIG_MAP, "key": KEY}},
        **weights_fields,
    }
    return spec(model={"weights": {key: value for key, value in fields.items() if value is not None}})


def signed_context(
    smd: SecureModelDeploymentSpec | None = None,
    *,
    config: OperatorConfig = CONFIG,
    trust: Manifest | None = None,
    **facts: Any,
) -> Context:
    smd = smd if smd is not None else signed()
    base = Facts(
        storage_class=storage_class() if smd.storage else None,
        node_regions={"node-a": "eu-west-1"},
        signing_config_map=trust if trust is not None else config_map(),
    )
    return context(smd, config=config, facts=replace(base, **facts))


def reported(pod: Manifest, message: str, exit_code: int = 0, *, model_running: bool = True) -> None:
    """The kubelet's view of a pod whose verifier ended with `message` and `exit_code`."""
    pod["status"] = {
        "phase": "Running" if model_running else "Pending",
        "initContainerStatuses": [
            {
                "name": weights.VERIFIER_CONTAINER,
                "state": {"terminated": {"exitCode": exit_code, "reason": "Completed", "message": message}},
            }
        ],
        "containerStatuses": [
            {"name": "model", "state": {"running": {}} if model_running else {"waiting": {}}}
        ],
    }


def verified(pod: Manifest, pin: str = PIN, manifest: str = MANIFEST_SHA256) -> None:
    report = {weights.MANIFEST_FIELD: manifest, weights.SIGNER_FIELD: SIGNER_SHA256, weights.TRUST_FIELD: pin}
    reported(pod, json.dumps(report))


def judged(ctx: Context, observed: Observed) -> dict[str, tuple[str, str, str]]:
    return {item.name: (item.status, item.reason, item.message) for item in judging.judge(ctx, observed)}


def healthy(ctx: Context) -> Observed:
    """The operator's objects written, and the pod's verifier done: the weights verified."""
    return with_pod(observe(ctx), verified)


def verifier_of(manifest: Manifest) -> dict[str, Any]:
    (found,) = [
        item for item in pod_spec(manifest)["initContainers"] if item["name"] == weights.VERIFIER_CONTAINER
    ]
    return dict(found)


# -------------------------------------------------------------------------------------------- builders


def test_signed_weights_from_an_image_are_mounted_read_only_and_verified_first() -> None:
    deployment = find(build(signed_context()).owned, "Deployment")
    volumes = {item["name"]: item for item in pod_spec(deployment)["volumes"]}
    verifier = verifier_of(deployment)

    assert volumes[weights.WEIGHTS_VOLUME]["image"] == {"reference": WEIGHTS_IMAGE, "pullPolicy": "Always"}
    assert volumes[weights.TRUST_VOLUME]["configMap"] == {
        "name": CONFIG_MAP,
        "items": [{"key": KEY, "path": weights.TRUST_FILE}],
        "defaultMode": 0o444,
    }
    assert {"name": "weights", "mountPath": "/weights", "readOnly": True} in container(deployment, "model")[
        "volumeMounts"
    ]
    assert verifier["image"] == VERIFIER
    assert verifier["command"] == ["securemodels", "verify-weights"]
    assert verifier["args"] == [
        "/weights",
        "--signature",
        "/weights/model.sig",
        "--public-key",
        f"{SIGNING_TRUST_DIR}/{weights.TRUST_FILE}",
        "--trust-sha256",
        PIN,
    ]
    assert "restartPolicy" not in verifier
    assert verifier["resources"]["limits"] == {"cpu": "2", "memory": "1Gi"}
    assert all(mount["readOnly"] for mount in verifier["volumeMounts"])


def test_the_verifier_is_as_hardened_as_the_other_containers() -> None:
    deployment = find(build(signed_context()).owned, "Deployment")

    assert pod_security.pod_problems(pod_spec(deployment)) == []
    assert verifier_of(deployment)["securityContext"] == pod_security.container_security_context()


def test_a_certificate_chain_and_another_signature_path_reach_the_verifier() -> None:
    smd = signed(
        signature={"path": "sig/model.sig", "certificateChain": {"name": CONFIG_MAP, "key": "chain.pem"}}
    )
    ctx = signed_context(smd, trust=config_map({"chain.pem": self_signed().decode()}))
    args = verifier_of(find(build(ctx).owned, "Deployment"))["args"]

    assert args[:4] == ["/weights", "--signature", "/weights/sig/model.sig", "--certificate-chain"]
    assert args[-1] == hashlib.sha256(ctx.facts.signing_config_map["data"]["chain.pem"].encode()).hexdigest()  # type: ignore[index]


def test_weights_on_the_volume_make_the_whole_volume_read_only_for_the_model() -> None:
    smd = spec(
        storage={"size": "20Gi", "storageClassName": "encrypted-gp3"},
        model={
            "weights": {
                "storagePath": "llama-3",
                "mountPath": "/weights",
                "signature": {"publicKey": {"name": CONFIG_MAP, "key": KEY}},
            }
        },
    )
    deployment = find(build(signed_context(smd)).owned, "Deployment")
    mounts = container(deployment, "model")["volumeMounts"]

    assert {"name": storage.VOLUME, "mountPath": "/models", "readOnly": True} in mounts
    assert {"name": storage.VOLUME, "mountPath": "/weights", "subPath": "llama-3", "readOnly": True} in mounts
    assert {
        "name": storage.VOLUME,
        "mountPath": "/weights",
        "subPath": "llama-3",
        "readOnly": True,
    } in verifier_of(deployment)["volumeMounts"]
    assert weights.WEIGHTS_VOLUME not in {item["name"] for item in pod_spec(deployment)["volumes"]}


def test_unsigned_weights_are_mounted_without_a_verifier() -> None:
    ctx = signed_context(signed(signature=None))
    deployment = find(build(ctx).owned, "Deployment")

    assert "initContainers" not in pod_spec(deployment)
    assert weights.TRUST_VOLUME not in {item["name"] for item in pod_spec(deployment)["volumes"]}
    assert judged(ctx, observe(ctx))[weights.NAME][:2] == ("Pass", "NotRequested")


def test_no_weights_change_nothing_in_the_pod() -> None:
    deployment = find(build(context()).owned, "Deployment")

    assert "initContainers" not in pod_spec(deployment)
    assert [item["name"] for item in pod_spec(deployment)["volumes"]][:1] == ["scratch"]


def test_offline_the_pin_is_a_stand_in_no_verifier_accepts() -> None:
    ctx = replace(signed_context(), facts=Facts())

    assert weights.trust_pin(ctx) == weights.OFFLINE_PIN
    assert not all(character in "0123456789abcdef" for character in weights.OFFLINE_PIN)


# ------------------------------------------------------------------------------------------- preflight


def blocker(ctx: Context) -> tuple[str, str] | None:
    found = weights.preflight(ctx, Observed())
    return (found.reason, found.message) if found else None


def test_a_declared_key_that_is_there_and_usable_blocks_nothing() -> None:
    assert blocker(signed_context()) is None
    assert judging.preflight(signed_context(), Observed()) == ()


@pytest.mark.parametrize(
    ("trust", "reason", "says"),
    [
        (None, "SigningKeyNotFound", f"ConfigMap {CONFIG_MAP} does not exist"),
        (config_map({"other": "x"}), "SigningKeyNotFound", f"ConfigMap {CONFIG_MAP} has no key {KEY}"),
        (config_map({KEY: "not a key"}), "SigningKeyInvalid", "is not a PEM public key"),
        (
            config_map({KEY: pem(rsa.generate_private_key(65537, 2048).public_key()).decode()}),
            "SigningKeyInvalid",
            "is not an elliptic-curve public key",
        ),
    ],
    ids=["no ConfigMap", "no key", "not PEM", "RSA"],
)
def test_a_key_that_cannot_verify_blocks_with_the_field_named(
    trust: Manifest | None, reason: str, says: str
) -> None:
    ctx = replace(signed_context(), facts=replace(signed_context().facts, signing_config_map=trust))
    found = blocker(ctx)

    assert found is not None
    assert found[0] == reason
    assert found[1].startswith("spec.model.weights.signature.publicKey: ")
    assert says in found[1]


def test_a_chain_without_certificates_blocks() -> None:
    smd = signed(signature={"certificateChain": {"name": CONFIG_MAP, "key": KEY}})

    assert blocker(signed_context(smd, trust=config_map({KEY: PUBLIC_PEM.decode()}))) == (
        "SigningKeyInvalid",
        f"spec.model.weights.signature.certificateChain: key {KEY} of ConfigMap {CONFIG_MAP} "
        "holds no PEM certificates",
    )
    assert blocker(signed_context(smd, trust=config_map({KEY: self_signed().decode()}))) is None


def test_a_key_in_binary_data_counts_as_written_by_the_kubelet() -> None:
    import base64

    trust = {"metadata": {"name": CONFIG_MAP}, "binaryData": {KEY: base64.b64encode(PUBLIC_PEM).decode()}}

    assert blocker(signed_context(trust=trust)) is None
    assert weights.trust_pin(signed_context(trust=trust)) == PIN


def test_the_cluster_can_require_signed_weights() -> None:
    strict = CONFIG.model_copy(update={"require_signed_weights": True})

    assert blocker(signed_context(context().spec, config=strict)) == (
        "SignatureRequired",
        "the cluster requires signed weights: declare spec.model.weights with a signature",
    )
    assert blocker(signed_context(signed(signature=None), config=strict))[0] == "SignatureRequired"  # type: ignore[index]
    assert blocker(signed_context(config=strict)) is None


def test_a_signature_without_a_configured_verifier_blocks() -> None:
    found = blocker(signed_context(config=OperatorConfig()))

    assert found is not None and found[0] == "VerifierNotConfigured"


def test_a_verifier_outside_the_cluster_registries_blocks_signed_weights_only() -> None:
    config = allowing(REGISTRY).model_copy(update={"weights_verifier_image": f"quay.io/smo@{DIGEST}"})
    found = blocker(signed_context(config=config))

    assert found is not None and found[0] == "VerifierNotConfigured"
    assert "not from a registry the cluster allows" in found[1]
    assert blocker(signed_context(signed(signature=None), config=config)) is None


def test_a_weights_image_outside_the_cluster_registries_blocks() -> None:
    config = allowing("mirror.example.com").model_copy(
        update={"weights_verifier_image": f"mirror.example.com/v@{DIGEST}"}
    )
    smd = spec(model={"image": f"mirror.example.com/ml/fraud@{DIGEST}", "weights": {"image": WEIGHTS_IMAGE}})
    found = image_digest.preflight(signed_context(smd, config=config), Observed())

    assert found is not None and found.reason == "RegistryNotAllowed"
    assert found.message.startswith(f"spec.model.weights.image {WEIGHTS_IMAGE} is not from a registry")


# ---------------------------------------------------------------------------------------------- judging


def test_a_pod_that_verified_its_weights_passes_and_status_shows_what_it_verified() -> None:
    ctx = signed_context()
    observed = healthy(ctx)
    found = judged(ctx, observed)

    assert set(item[0] for item in found.values()) == {"Pass"}, found
    assert found[weights.NAME][:2] == ("Pass", "SignatureVerified")
    assert MANIFEST_SHA256 in found[weights.NAME][2] and SIGNER_SHA256 in found[weights.NAME][2]
    status = weights.weights_status(ctx, observed)
    assert status is not None
    assert (status.source, status.manifest_sha256, status.signer_key_sha256) == (
        WEIGHTS_IMAGE,
        MANIFEST_SHA256,
        SIGNER_SHA256,
    )
    assert weights.failed_pods(observed) == 0


def test_a_pod_still_verifying_is_not_a_failure() -> None:
    ctx = signed_context()
    observed = with_pod(observe(ctx), lambda pod: pod.update(status={"phase": "Pending"}))

    assert judged(ctx, observed)[weights.NAME][:2] == ("Pass", "SignatureVerified")
    assert weights.weights_status(ctx, observed).manifest_sha256 is None  # type: ignore[union-attr]


def test_weights_that_fail_verification_are_reported_with_the_verifiers_words() -> None:
    ctx = signed_context()
    message = "verification failed: ... Hash mismatch for 'weights.bin' ..."
    observed = with_pod(observe(ctx), lambda pod: reported(pod, message, exit_code=1, model_running=False))
    status, reason, text = judged(ctx, observed)[weights.NAME]

    assert (status, reason) == ("Fail", "VerificationFailed")
    assert "Hash mismatch for 'weights.bin'" in text
    assert weights.failed_pods(observed) == 1


def test_a_verifier_restarting_after_a_failure_still_counts_as_failed() -> None:
    ctx = signed_context()

    def crash_looping(pod: Manifest) -> None:
        reported(pod, "verification failed: key mismatch", exit_code=1, model_running=False)
        status = pod["status"]["initContainerStatuses"][0]
        status["lastState"], status["state"] = status["state"], {"waiting": {"reason": "CrashLoopBackOff"}}

    assert judged(ctx, with_pod(observe(ctx), crash_looping))[weights.NAME][1] == "VerificationFailed"


def mutate_template(change: Any) -> Any:
    def mutation(deployment: Manifest) -> None:
        change(deployment["spec"]["template"]["spec"])

    return mutation


def without_verifier(spec_: Manifest) -> None:
    del spec_["initContainers"]


def key_swapped(spec_: Manifest) -> None:
    next(item for item in spec_["volumes"] if item["name"] == weights.TRUST_VOLUME)["configMap"]["name"] = (
        "attacker-key"
    )


def weights_by_tag(spec_: Manifest) -> None:
    volume = next(item for item in spec_["volumes"] if item["name"] == weights.WEIGHTS_VOLUME)
    volume["image"]["reference"] = f"{REGISTRY}/ml/fraud-weights:latest"


def other_weights(spec_: Manifest) -> None:
    volume = next(item for item in spec_["volumes"] if item["name"] == weights.WEIGHTS_VOLUME)
    volume["image"]["reference"] = f"{REGISTRY}/ml/fraud-weights@{OTHER_DIGEST}"


def verifier_beside_the_model(spec_: Manifest) -> None:
    spec_["initContainers"][0]["restartPolicy"] = "Always"


def verifier_checks_nothing(spec_: Manifest) -> None:
    spec_["initContainers"][0]["command"] = ["true"]


def verifier_replaced(spec_: Manifest) -> None:
    spec_["initContainers"][0]["image"] = f"{REGISTRY}/always-ok@{OTHER_DIGEST}"


def verifier_checks_another_directory(spec_: Manifest) -> None:
    spec_["initContainers"][0]["args"][0] = "/tmp"


def key_unpinned(spec_: Manifest) -> None:
    spec_["initContainers"][0]["args"][-1] = hashlib.sha256(b"attacker key").hexdigest()


def writable_weights(spec_: Manifest) -> None:
    model = next(item for item in spec_["containers"] if item["name"] == "model")
    next(item for item in model["volumeMounts"] if item["name"] == weights.WEIGHTS_VOLUME)["readOnly"] = False


def model_reads_elsewhere(spec_: Manifest) -> None:
    model = next(item for item in spec_["containers"] if item["name"] == "model")
    model["volumeMounts"] = [item for item in model["volumeMounts"] if item["name"] != weights.WEIGHTS_VOLUME]


TEMPLATE_ATTACKS = [
    without_verifier,
    key_swapped,
    weights_by_tag,
    other_weights,
    verifier_beside_the_model,
    verifier_checks_nothing,
    verifier_replaced,
    verifier_checks_another_directory,
    key_unpinned,
    writable_weights,
    model_reads_elsewhere,
]


@pytest.mark.parametrize("attack", TEMPLATE_ATTACKS, ids=lambda attack: attack.__name__)
def test_a_template_that_would_serve_unverified_weights_fails(attack: Any) -> None:
    ctx = signed_context()
    untouched = healthy(ctx)
    observed = altered(untouched, "Deployment", mutate_template(attack))

    assert judged(ctx, untouched)[weights.NAME][0] == "Pass"
    status, reason, message = judged(ctx, observed)[weights.NAME]
    assert (status, reason) == ("Fail", "NotVerified"), message
    assert message.startswith("the Deployment's template: ")


@pytest.mark.parametrize("attack", TEMPLATE_ATTACKS, ids=lambda attack: attack.__name__)
def test_a_pod_that_would_serve_unverified_weights_fails_even_when_stamped(attack: Any) -> None:
    """Judged on the pod itself, not only through its stamp: a pod re-stamped to match still fails."""
    ctx = signed_context()
    observed = with_pod(healthy(ctx), lambda pod: attack(pod["spec"]), stamp=True)
    status, _, message = judged(ctx, observed)[weights.NAME]

    assert status == "Fail", message
    assert "pod " in message


def test_a_weights_image_by_tag_also_fails_image_digest() -> None:
    ctx = signed_context()
    found = judged(ctx, altered(healthy(ctx), "Deployment", mutate_template(weights_by_tag)))

    assert found[image_digest.NAME][:2] == ("Fail", "ImagePolicyViolated")
    assert (
        "volume weights image" in found[image_digest.NAME][2]
        and "is not pinned by digest" in found[image_digest.NAME][2]
    )


def test_a_pod_serving_without_a_verifier_report_fails() -> None:
    ctx = signed_context()
    running = with_pod(
        observe(ctx),
        lambda pod: pod.update(status={"containerStatuses": [{"name": "model", "state": {"running": {}}}]}),
    )

    assert judged(ctx, running)[weights.NAME][:2] == ("Fail", "NotVerified")
    assert "started without its weights being verified" in judged(ctx, running)[weights.NAME][2]


def test_a_verifier_that_exits_zero_without_a_report_is_not_trusted() -> None:
    ctx = signed_context()
    observed = with_pod(observe(ctx), lambda pod: reported(pod, "all good"))

    assert judged(ctx, observed)[weights.NAME][:2] == ("Fail", "NotVerified")


def test_a_report_for_another_key_than_the_pods_pin_fails() -> None:
    ctx = signed_context()
    observed = with_pod(observe(ctx), lambda pod: verified(pod, pin="ab" * 32))

    assert "a key other than the one its template pins" in judged(ctx, observed)[weights.NAME][2]


def test_a_pod_of_the_template_before_a_key_rotation_still_passes() -> None:
    """A pod verified with the previous key, while the rollout to the new one runs, is not tampering."""
    old_ctx = signed_context()
    old_pod = healthy(old_ctx).pods[0]
    rotated = ec.generate_private_key(ec.SECP256R1()).public_key()
    new_ctx = signed_context(trust=config_map({KEY: pem(rotated).decode()}))
    new_pin = hashlib.sha256(pem(rotated)).hexdigest()
    new_pods = with_pod(observe(new_ctx), lambda pod: verified(pod, pin=new_pin))
    observed = with_pods(new_pods, tampered(old_pod, lambda pod: pod["metadata"].update(name="fraud-old")))

    assert judged(new_ctx, observed)[weights.NAME][0] == "Pass"


def test_only_stamped_pods_of_the_current_template_report_the_digest() -> None:
    ctx = signed_context()
    observed = healthy(ctx)
    forged = tampered(observed.pods[0], lambda pod: pod["spec"].update(nodeSelector={"x": "y"}))
    forged["metadata"]["name"] = "forged"
    verified(forged, manifest="66" * 32)

    status = weights.weights_status(ctx, with_pods(observed, forged))
    assert status is not None and status.manifest_sha256 == MANIFEST_SHA256
    sibling = tampered(observed.pods[0], lambda pod: pod["metadata"].update(name="sibling"))
    verified(sibling, manifest="66" * 32)
    two_versions = with_pods(observed, sibling)
    assert weights.weights_status(ctx, two_versions).manifest_sha256 is None  # type: ignore[union-attr]


def test_weights_on_a_volume_the_model_may_write_fail() -> None:
    smd = spec(
        storage={"size": "20Gi", "storageClassName": "encrypted-gp3"},
        model={
            "weights": {
                "storagePath": "llama-3",
                "signature": {"publicKey": {"name": CONFIG_MAP, "key": KEY}},
            }
        },
    )
    ctx = signed_context(smd)

    def writable(spec_: Manifest) -> None:
        model = next(item for item in spec_["containers"] if item["name"] == "model")
        for mount in model["volumeMounts"]:
            mount.pop("readOnly", None)

    assert judged(ctx, healthy(ctx))[weights.NAME][0] == "Pass"
    status, _, message = judged(ctx, altered(healthy(ctx), "Deployment", mutate_template(writable)))[
        weights.NAME
    ]
    assert status == "Fail"
    assert "container model may write the weights (volume models)" in message


def storage_weights_context() -> Context:
    smd = spec(
        storage={"size": "20Gi", "storageClassName": "encrypted-gp3"},
        model={
            "weights": {
                "storagePath": "llama-3",
                "signature": {"publicKey": {"name": CONFIG_MAP, "key": KEY}},
            }
        },
    )
    return signed_context(smd)


def mounted_writable(volume: str, sub_path: str | None) -> Any:
    def change(spec_: Manifest) -> None:
        sidecar = next(item for item in spec_["containers"] if item["name"] != "model")
        mount = {"name": volume, "mountPath": "/var/cache/x", **({"subPath": sub_path} if sub_path else {})}
        sidecar["volumeMounts"].append(mount)

    return change


def another_volume_of_the_claim(spec_: Manifest) -> None:
    spec_["volumes"].append({"name": "alias", "persistentVolumeClaim": {"claimName": "fraud-models"}})
    mounted_writable("alias", None)(spec_)


@pytest.mark.parametrize(
    "change",
    [
        mounted_writable("models", None),
        mounted_writable("models", "llama-3"),
        mounted_writable("models", "llama-3/tokenizer"),
        mounted_writable("models", "./llama-3"),
        another_volume_of_the_claim,
    ],
    ids=["whole volume", "the directory", "inside it", "dotted", "the claim by another name"],
)
def test_a_writable_way_to_weights_on_the_volume_fails(change: Any) -> None:
    ctx = storage_weights_context()
    status, _, message = judged(ctx, altered(healthy(ctx), "Deployment", mutate_template(change)))[
        weights.NAME
    ]

    assert status == "Fail"
    assert "may write the weights" in message


def test_a_writable_mount_of_another_directory_of_the_volume_passes() -> None:
    ctx = storage_weights_context()
    found = judged(
        ctx, altered(healthy(ctx), "Deployment", mutate_template(mounted_writable("models", "cache")))
    )

    assert found[weights.NAME][0] == "Pass"


def test_the_weights_image_volume_is_storage_the_control_accepts_and_no_other_image_volume() -> None:
    ctx = signed_context()

    def another_image_volume(spec_: Manifest) -> None:
        spec_["volumes"].append({"name": "extra", "image": {"reference": f"{REGISTRY}/data@{OTHER_DIGEST}"}})

    assert judged(ctx, healthy(ctx))[storage.NAME][0] == "Pass"
    found = judged(ctx, altered(healthy(ctx), "Deployment", mutate_template(another_image_volume)))
    assert (
        found[storage.NAME][0] == "Fail" and "volume extra is not encrypted storage" in found[storage.NAME][2]
    )
    assert "volume extra mounts" in found[image_digest.NAME][2]


def test_drift_on_the_verifier_is_reported_by_this_control() -> None:
    ctx = signed_context()
    observed = replace(
        healthy(ctx),
        drift={ctx.names.deployment: ("spec.template.spec.initContainers (removed)",)},
    )

    status, _, message = judged(ctx, observed)[weights.NAME]
    assert status == "Fail"
    assert (
        "was changed outside the operator at spec.template.spec.initContainers (removed); restored" in message
    )


def test_the_live_deployment_missing_fails() -> None:
    ctx = signed_context()
    observed = replace(
        healthy(ctx),
        objects={ref: item for ref, item in healthy(ctx).objects.items() if ref.kind != "Deployment"},
    )

    assert judged(ctx, observed)[weights.NAME][:2] == ("Fail", "DeploymentMissing")


def test_the_live_template_is_what_is_judged() -> None:
    ctx = signed_context()
    deployment = live(healthy(ctx), "Deployment")

    assert weights.spec_problems(ctx, pod_spec(deployment), "t", current=True) == []


# ---------------------------------------------------------------------------------------------- render


def test_render_shows_the_verifier_with_the_configured_image_and_refuses_without_one(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    from securemodels import cli
    from support.paths import EXAMPLES

    config = tmp_path / "config.yaml"
    config.write_text(f"weightsVerifierImage: {VERIFIER}\n")
    example = str(EXAMPLES / "signed-weights.yaml")

    assert cli.main(["render", "-f", example, "--config", str(config)]) == 0
    (deployment,) = [
        doc for doc in yaml.safe_load_all(capsys.readouterr().out) if doc["kind"] == "Deployment"
    ]
    assert verifier_of(deployment)["image"] == VERIFIER
    assert verifier_of(deployment)["args"][-1] == weights.OFFLINE_PIN
    assert cli.main(["render", "-f", example]) == 1
    assert "llm-chat: VerifierNotConfigured: " in capsys.readouterr().err


def test_the_pod_cache_keeps_the_verifiers_report_and_nothing_else_of_the_status() -> None:
    from securemodels.k8s import cache

    pod = healthy(signed_context()).pods[0]
    pod["status"]["podIP"] = "10.0.0.7"
    pod["status"]["initContainerStatuses"][0].update(imageID="sha256:x", ready=True, restartCount=0)
    pod["status"]["initContainerStatuses"][0]["state"]["terminated"]["startedAt"] = "2030-01-01T00:00:00Z"
    kept = cache.pod_essentials(pod)

    assert set(kept["status"]) == {"phase", "initContainerStatuses", "containerStatuses"}
    (verifier,) = kept["status"]["initContainerStatuses"]
    assert set(verifier["state"]["terminated"]) == {"exitCode", "message"}
    assert weights.evidence(kept) == weights.evidence(pod)
    assert weights.evidence(kept).verified
