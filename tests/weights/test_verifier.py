"""The weights' verifier, run as the init container runs it: the `securemodels verify-weights` command of
the installed package (the operator image installs the same package and the same locked model-signing),
with the arguments the operator templates, on model directories signed by model-signing's own CLI.

Signed with a test key: passes and reports the signed manifest's digest and the signer key. One byte of
one file changed, a file added, another key, a key other than the pinned one, a certificate from another
CA: each fails with a message that names the file or the key, and a non-zero exit code. The termination
log, where the kubelet reads the outcome for the operator, holds the same.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from securemodels.api.v1alpha1 import SIGNING_TRUST_DIR, SecureModelDeploymentSpec
from securemodels.config import OperatorConfig
from securemodels.desired.controls import weights
from securemodels.desired.model import Facts
from unit.builders import DIGEST, REGISTRY, context

BIN = Path(sys.executable).parent
SECUREMODELS = BIN / "securemodels"
MODEL_SIGNING = BIN / "model_signing"


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str
    termination: str


def private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return key


def public_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


def model(directory: Path) -> Path:
    """A small model: a config, a tokenizer and weights in a subdirectory."""
    (directory / "shards").mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps({"architectures": ["Tiny"], "hidden_size": 8}))
    (directory / "tokenizer.json").write_text(json.dumps({"vocab": {"a": 0, "b": 1}}))
    (directory / "shards" / "model-00001.safetensors").write_bytes(os.urandom(256 * 1024))
    return directory


def sign_with_key(directory: Path, key: Path) -> None:
    subprocess.run(
        [str(MODEL_SIGNING), "sign", "key", str(directory), "--private_key", str(key),
         "--signature", str(directory / "model.sig")],
        check=True, capture_output=True, text=True,
    )  # fmt: skip


def verify(
    directory: Path, trust: Path, termination: Path, *, chain: bool = False, pin: str | None = None
) -> Run:
    """The init container's command, with the arguments the operator's builder templates for a
    signature at model.sig, the trust file where the ConfigMap is mounted, and the pin."""
    smd = SecureModelDeploymentSpec.model_validate(
        {
            "model": {
                "image": f"{REGISTRY}/ml/m@{DIGEST}",
                "weights": {
                    "image": f"{REGISTRY}/ml/w@{DIGEST}",
                    "signature": {
                        ("certificateChain" if chain else "publicKey"): {"name": "trust", "key": "pem"}
                    },
                },
            }
        }
    )
    ctx = context(
        smd,
        config=OperatorConfig(weights_verifier_image=f"{REGISTRY}/v@{DIGEST}"),
        facts=Facts(signing_config_map={"metadata": {"name": "trust"}, "data": {"pem": trust.read_text()}}),
    )
    (container,) = weights.init_containers(ctx)
    # Where the pod mounts the weights (/weights) and the ConfigMap, here in the test's directories.
    mounted = {f"{SIGNING_TRUST_DIR}/{weights.TRUST_FILE}": str(trust)}
    args = [mounted.get(item) or item.replace("/weights", str(directory), 1) for item in container["args"]]
    if pin is not None:
        args[-1] = pin
    assert container["command"] == ["securemodels", "verify-weights"]
    termination.write_text("")  # the kubelet creates it before the container starts
    result = subprocess.run(
        [str(SECUREMODELS), "verify-weights", *args, "--termination-log", str(termination)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    return Run(result.returncode, result.stdout, result.stderr, termination.read_text())


@pytest.fixture
def signed(tmp_path: Path) -> tuple[Path, Path, ec.EllipticCurvePrivateKey]:
    key = private_key(tmp_path / "signer.key")
    directory = model(tmp_path / "model")
    sign_with_key(directory, tmp_path / "signer.key")
    return directory, public_key(key, tmp_path / "signer.pub"), key


def der_sha256(path: Path) -> str:
    """The key fingerprint as an operator would compute it by hand: openssl pkey -pubin -outform DER."""
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-in", str(path), "-outform", "DER"], check=True, capture_output=True
    ).stdout
    return hashlib.sha256(der).hexdigest()


def test_signed_weights_pass_and_report_the_manifest_and_the_signer(
    signed: tuple[Path, Path, ec.EllipticCurvePrivateKey], tmp_path: Path
) -> None:
    directory, trust, _ = signed
    run = verify(directory, trust, tmp_path / "termination-log")

    assert run.code == 0, run.stderr
    report = json.loads(run.termination)
    assert report == json.loads(run.stdout)
    assert report[weights.SIGNER_FIELD] == der_sha256(trust)
    assert report[weights.TRUST_FIELD] == hashlib.sha256(trust.read_bytes()).hexdigest()
    bundle = json.loads((directory / "model.sig").read_text())
    import base64

    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    assert report[weights.MANIFEST_FIELD] == statement["subject"][0]["digest"]["sha256"]
    parsed = weights.evidence(
        {"status": {"initContainerStatuses": [{"name": weights.VERIFIER_CONTAINER, "state": {
            "terminated": {"exitCode": 0, "message": run.termination}}}]}}
    )  # fmt: skip
    assert parsed.verified and parsed.manifest_sha256 == report[weights.MANIFEST_FIELD]


def test_one_changed_byte_of_one_file_fails_naming_the_file(
    signed: tuple[Path, Path, ec.EllipticCurvePrivateKey], tmp_path: Path
) -> None:
    directory, trust, _ = signed
    shard = directory / "shards" / "model-00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[4096] ^= 0x01
    shard.write_bytes(bytes(data))
    run = verify(directory, trust, tmp_path / "termination-log")

    assert run.code != 0
    assert "Hash mismatch for 'shards/model-00001.safetensors'" in run.stderr
    assert run.termination.startswith("verification failed: ")
    assert "shards/model-00001.safetensors" in run.termination
    assert weights.evidence(
        {"status": {"initContainerStatuses": [{"name": weights.VERIFIER_CONTAINER, "state": {
            "terminated": {"exitCode": run.code, "message": run.termination}}}]}}
    ).message == run.termination.strip()  # fmt: skip


def test_a_file_added_after_signing_fails_naming_it(
    signed: tuple[Path, Path, ec.EllipticCurvePrivateKey], tmp_path: Path
) -> None:
    directory, trust, _ = signed
    (directory / "backdoor.py").write_text("import os\n")
    run = verify(directory, trust, tmp_path / "termination-log")

    assert run.code != 0
    assert "backdoor.py" in run.stderr


def test_another_key_fails_naming_the_key(
    signed: tuple[Path, Path, ec.EllipticCurvePrivateKey], tmp_path: Path
) -> None:
    directory, _, _ = signed
    other = public_key(private_key(tmp_path / "other.key"), tmp_path / "other.pub")
    run = verify(directory, other, tmp_path / "termination-log")

    assert run.code != 0
    assert f"signed by the key {other} (sha256 {der_sha256(other)})" in run.stderr
    assert "Key mismatch" in run.stderr


def test_a_key_other_than_the_pinned_one_is_refused_before_verifying(
    signed: tuple[Path, Path, ec.EllipticCurvePrivateKey], tmp_path: Path
) -> None:
    directory, trust, _ = signed
    pinned = hashlib.sha256(b"the key the operator read").hexdigest()
    run = verify(directory, trust, tmp_path / "termination-log", pin=pinned)

    assert run.code != 0
    assert f"the trusted key {trust} has sha256" in run.stderr
    assert f"not the {pinned} the operator pinned" in run.stderr


def test_the_offline_stand_in_pin_verifies_nothing(
    signed: tuple[Path, Path, ec.EllipticCurvePrivateKey], tmp_path: Path
) -> None:
    directory, trust, _ = signed

    assert verify(directory, trust, tmp_path / "termination-log", pin=weights.OFFLINE_PIN).code != 0


def test_weights_without_a_signature_fail(tmp_path: Path) -> None:
    directory = model(tmp_path / "model")
    trust = public_key(private_key(tmp_path / "k"), tmp_path / "k.pub")
    run = verify(directory, trust, tmp_path / "termination-log")

    assert run.code != 0
    assert f"cannot read the signature {directory}/model.sig" in run.stderr


# --------------------------------------------------------------------------------- certificate chains


def certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool,
) -> x509.Certificate:
    now = datetime.now(UTC)
    issuer_name, issuer_key = issuer if issuer is not None else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
    )  # fmt: skip
    return builder.sign(issuer_key, hashes.SHA256())


def pem(*certificates: x509.Certificate) -> bytes:
    return b"".join(item.public_bytes(serialization.Encoding.PEM) for item in certificates)


def test_a_certificate_chain_verifies_the_signing_certificate_and_only_its_ca(tmp_path: Path) -> None:
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = certificate("model signing root", root_key, None, ca=True)
    signer_key = private_key(tmp_path / "signer.key")
    leaf = certificate("ml-release", signer_key, ("model signing root", root_key), ca=False)
    (tmp_path / "signer.crt").write_bytes(pem(leaf))
    (tmp_path / "root.crt").write_bytes(pem(root))
    directory = model(tmp_path / "model")
    subprocess.run(
        [str(MODEL_SIGNING), "sign", "certificate", str(directory),
         "--private_key", str(tmp_path / "signer.key"), "--signing_certificate", str(tmp_path / "signer.crt"),
         "--certificate_chain", str(tmp_path / "root.crt"), "--signature", str(directory / "model.sig")],
        check=True, capture_output=True, text=True,
    )  # fmt: skip

    passed = verify(directory, tmp_path / "root.crt", tmp_path / "termination-log", chain=True)
    assert passed.code == 0, passed.stderr
    assert json.loads(passed.stdout)[weights.SIGNER_FIELD] == public_key_sha256(signer_key)

    other_root = certificate("someone else's root", ec.generate_private_key(ec.SECP256R1()), None, ca=True)
    (tmp_path / "other-root.crt").write_bytes(pem(other_root))
    failed = verify(directory, tmp_path / "other-root.crt", tmp_path / "termination-log", chain=True)
    assert failed.code != 0
    assert f"signed by a certificate that chains to {tmp_path / 'other-root.crt'}" in failed.stderr


def public_key_sha256(key: ec.EllipticCurvePrivateKey) -> str:
    return weights.public_key_sha256(key.public_key())
