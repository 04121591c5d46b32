"""`securemodels verify-weights`: the init container that lets a model start only on signed weights.

The verification itself is the OpenSSF Model Signing library's (`model-signing`, public API): it checks
the Sigstore bundle's signature with the trusted elliptic-curve key or certificate chain, offline and
without a transparency log, then hashes every file of the weights and compares them with the signed
manifest. This module adds what the operator needs around it: the trusted material must be the one the
operator pinned (its SHA-256, given as an argument, so a key swapped into the ConfigMap meanwhile is
refused), and the outcome goes to the container's termination message, where the operator reads the
verified manifest digest and signer key for status, or the reason a pod never started.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from securemodels.desired.controls import weights

TERMINATION_LOG = Path("/dev/termination-log")
MISMATCH = "Signature mismatch: "
# How model-signing prints a digest in its mismatch list: the repr of its Digest dataclass.
_DIGEST_REPR = re.compile(
    r"""Digest\(algorithm='([^']+)', digest_value=(b'(?:[^'\\]|\\.)*'|b"(?:[^"\\]|\\.)*")\)"""
)


class VerificationError(Exception):
    """The weights must not be served; the message says which file or key is at fault."""


@dataclass(frozen=True)
class Report:
    manifest_sha256: str
    signer_key_sha256: str
    trust_sha256: str

    def as_json(self) -> str:
        return json.dumps(
            {
                weights.MANIFEST_FIELD: self.manifest_sha256,
                weights.SIGNER_FIELD: self.signer_key_sha256,
                weights.TRUST_FIELD: self.trust_sha256,
            },
            sort_keys=True,
        )


def _pinned_trust(path: Path, pin: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise VerificationError(f"cannot read the trusted key {path}: {error.strerror}") from None
    found = hashlib.sha256(data).hexdigest()
    if not hmac.compare_digest(found, pin):
        raise VerificationError(
            f"the trusted key {path} has sha256 {found}, not the {pin} the operator pinned: it changed "
            "after the operator read it"
        )
    return data


def _bundle(signature: Path) -> dict[str, object]:
    try:
        bundle = json.loads(signature.read_bytes())
    except OSError as error:
        raise VerificationError(f"cannot read the signature {signature}: {error.strerror}") from None
    except ValueError:
        raise VerificationError(f"the signature {signature} is not a Sigstore bundle (JSON)") from None
    if not isinstance(bundle, dict):
        raise VerificationError(f"the signature {signature} is not a Sigstore bundle (JSON)")
    return bundle


def _manifest_sha256(bundle: dict[str, object]) -> str:
    """The statement's subject digest: SHA-256 over every file's digest, as model-signing defines it."""
    envelope = bundle.get("dsseEnvelope") or {}
    assert isinstance(envelope, dict)
    statement = json.loads(base64.b64decode(str(envelope.get("payload", ""))))
    (subject,) = statement["subject"]
    return str(subject["digest"]["sha256"])


def _signer_key_sha256(bundle: dict[str, object], trusted_key: bytes | None) -> str:
    """The signer's key: the trusted key itself, or the signing certificate's, first of the bundle's
    chain (which model-signing has verified up to the trusted chain)."""
    if trusted_key is not None:
        fingerprint = weights.signer_of(trusted_key)
        assert fingerprint is not None  # the library accepted it as an EC key
        return fingerprint
    material = bundle.get("verificationMaterial") or {}
    assert isinstance(material, dict)
    leaf = material["x509CertificateChain"]["certificates"][0]["rawBytes"]
    key = x509.load_der_x509_certificate(base64.b64decode(leaf)).public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return weights.public_key_sha256(key)


def readable(detail: str) -> str:
    """model-signing's mismatch list, one problem after another, with digests in hex."""
    if not detail.startswith(MISMATCH):
        return detail
    try:
        problems = ast.literal_eval(detail.removeprefix(MISMATCH))
    except (ValueError, SyntaxError):
        return detail
    if not isinstance(problems, list):
        return detail

    def hexed(match: re.Match[str]) -> str:
        value = ast.literal_eval(match.group(2))
        return f"{match.group(1)}:{value.hex()}" if isinstance(value, bytes) else match.group(0)

    return "; ".join(_DIGEST_REPR.sub(hexed, str(item)) for item in problems)


def verify(
    model: Path,
    signature: Path,
    *,
    trust: Path,
    certificate_chain: bool,
    trust_sha256: str,
) -> Report:
    """Verify the weights in `model` against `signature`, with the pinned key or certificate chain."""
    import model_signing  # heavy (Sigstore, protobuf): imported only by this command

    data = _pinned_trust(trust, trust_sha256)
    bundle = _bundle(signature)
    config = model_signing.verifying.Config()  # type: ignore[no-untyped-call]
    if certificate_chain:
        config.use_certificate_verifier(certificate_chain=[trust])
        signer = f"a certificate that chains to {trust}"
    else:
        config.use_elliptic_key_verifier(public_key=trust)
        signer = f"the key {trust} (sha256 {weights.signer_of(data)})"
    try:
        config.verify(model, signature)
    except Exception as error:  # noqa: BLE001 - the library reports every refusal as some exception
        detail = readable(str(error)) or type(error).__name__
        raise VerificationError(
            f"the weights in {model} do not verify against {signature}, signed by {signer}: {detail}"
        ) from None
    try:
        return Report(
            manifest_sha256=_manifest_sha256(bundle),
            signer_key_sha256=_signer_key_sha256(bundle, None if certificate_chain else data),
            trust_sha256=trust_sha256,
        )
    except (KeyError, IndexError, TypeError, ValueError, AssertionError):
        raise VerificationError(f"the signature {signature} names no single signed manifest") from None


def report(message: str, termination_log: Path) -> None:
    """The kubelet copies the termination log into the pod's status, for the operator to read."""
    if termination_log.exists():
        termination_log.write_text(message[:4096])
