"""The operator's certificate authority and the certificates it issues for mutual TLS.

Every model gets a server certificate for its nginx sidecar, and every declared client a client
certificate; all of them chain to one CA whose certificate and key live in a Secret in the operator's
namespace. This module decides what those certificates are and when they must change, and nothing
else: it reads and returns PEM bytes and Secret data, and takes the time as an argument. The caller
does the Kubernetes I/O. Being pure, a CA rotation that takes months can be tested in milliseconds,
and the handshake tests run exactly the certificates the operator would issue.

CA rotation never breaks a working connection: the next CA is added to the trust bundle before it
signs anything, and a retired CA stays trusted until it expires, so during the overlap every party
trusts both.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KeyAlgorithm = Literal["ECDSA-P256", "RSA-3072"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

# Secret data keys. tls.crt/tls.key/ca.crt follow the kubernetes.io/tls convention, which the
# model's and the clients' Secrets use too; next.* hold the pending CA during a rotation.
CERT_KEY = "tls.crt"
PRIVATE_KEY_KEY = "tls.key"
CA_BUNDLE_KEY = "ca.crt"
NEXT_CERT_KEY = "next.crt"
NEXT_PRIVATE_KEY_KEY = "next.key"
NEXT_ACTIVATES_AT_KEY = "next.activates-at"
_CA_SECRET_KEYS = (
    CERT_KEY,
    PRIVATE_KEY_KEY,
    CA_BUNDLE_KEY,
    NEXT_CERT_KEY,
    NEXT_PRIVATE_KEY_KEY,
    NEXT_ACTIVATES_AT_KEY,
)

# Certificates start this long before "now", so a peer whose clock runs a little behind accepts them.
CLOCK_SKEW = timedelta(minutes=5)
# The X.509 upper bound for a common name (RFC 5280, ub-common-name).
MAX_COMMON_NAME_LENGTH = 64
CA_NAME_PREFIX = "secure-model-operator CA"

# Lowercase DNS labels joined by dots. Client identities use the same alphabet, so the subject DN
# that nginx compares ("CN=<identity>") needs no escaping and has a single spelling.
_DNS_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DURATION = re.compile(r"(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?")
_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\s*", re.DOTALL)


class InvalidCA(ValueError):
    """The CA Secret cannot be used as it is; `reason` says why, in words fit for an Event."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, both PEM.

    The key is left out of repr() so that logging a KeyPair, or anything holding one, never prints it.
    """

    cert_pem: bytes
    key_pem: bytes = field(repr=False)


@dataclass(frozen=True)
class CertificateInfo:
    """What may be shown about a certificate in status, events and metrics. Never key material."""

    not_before: datetime
    not_after: datetime
    serial_number: str  # hex, lowercase
    sha256_fingerprint: str  # hex of SHA-256 over the DER encoding
    common_name: str
    dns_names: tuple[str, ...]


@dataclass(frozen=True)
class CAState:
    """The operator's CA, as stored in one Secret in the operator's namespace."""

    signer: KeyPair  # signs every certificate issued now
    pending: KeyPair | None  # the next CA: already trusted, not yet signing
    pending_activates_at: datetime | None
    trusted: tuple[bytes, ...]  # PEM certificates of every CA that servers and clients must trust

    def bundle_pem(self) -> bytes:
        """The trust bundle: what goes into every ca.crt."""
        return b"".join(self.trusted)


@dataclass(frozen=True)
class CAPlan:
    """What the CA Secret should hold now, and whether it must be written."""

    state: CAState
    changed: bool
    notes: tuple[str, ...]  # routine changes, for Normal Events: a new CA, a rotation step
    problems: tuple[str, ...] = ()  # what was wrong with the stored CA, for Warning Events


# ------------------------------------------------------------------------------------------ helpers


def _require_aware(now: datetime) -> None:
    # Certificate times are UTC; a naive datetime would be silently read as local time.
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _generate_key(algorithm: KeyAlgorithm) -> PrivateKey:
    if algorithm == "ECDSA-P256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "RSA-3072":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    raise ValueError(f"unsupported key algorithm {algorithm!r}")


def _private_key_pem(key: PrivateKey) -> bytes:
    # Unencrypted: the key lives in a Kubernetes Secret, and nginx could not ask for a passphrase.
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _certificate_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _load_private_key(pem: bytes) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except UnsupportedAlgorithm as error:
        raise ValueError(str(error)) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError(f"unsupported private key type {type(key).__name__}")
    return key


def _public_key(cert: x509.Certificate) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise ValueError(f"unsupported public key type {type(key).__name__}")
    return key


def _key_matches(cert: x509.Certificate, key: PrivateKey) -> bool:
    def spki(public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey) -> bytes:
        return public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    try:
        return spki(_public_key(cert)) == spki(key.public_key())
    except ValueError:
        return False


def _valid_at(cert: x509.Certificate, now: datetime) -> bool:
    return cert.not_valid_before_utc <= now < cert.not_valid_after_utc


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _fingerprint(cert: x509.Certificate) -> bytes:
    return cert.fingerprint(hashes.SHA256())


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _subject_key_identifier(cert: x509.Certificate) -> x509.SubjectKeyIdentifier:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        # Only a CA placed in the Secret by hand lacks it; derive it the way we would have.
        return x509.SubjectKeyIdentifier.from_public_key(_public_key(cert))


def _common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if names else ""
    return value if isinstance(value, str) else value.decode()


def _dns_names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(san.get_values_for_type(x509.DNSName))


def _check_dns_name(name: str) -> None:
    if len(name) > 253 or not _DNS_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a lowercase DNS name")


# --------------------------------------------------------------------------------------------- info


def certificate_info(cert_pem: bytes) -> CertificateInfo:
    """Public facts about the first certificate in `cert_pem`. Raises ValueError if there is none."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return CertificateInfo(
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        serial_number=format(cert.serial_number, "x"),
        sha256_fingerprint=_fingerprint(cert).hex(),
        common_name=_common_name(cert),
        dns_names=_dns_names(cert),
    )


def parse_duration(text: str) -> timedelta:
    """A duration as the API writes it: hours, minutes and seconds, each optional, in that order."""
    match = _DURATION.fullmatch(text)
    if not text or match is None:
        raise ValueError(f"invalid duration {text!r}: expected e.g. 24h, 90m, 1h30m or 45s")
    hours, minutes, seconds = (int(group) if group else 0 for group in match.groups())
    return timedelta(hours=hours, minutes=minutes, seconds=seconds)


# ----------------------------------------------------------------------------------------------- CA


def _new_ca(now: datetime, algorithm: KeyAlgorithm, lifetime: timedelta) -> KeyPair:
    key = _generate_key(algorithm)
    key_identifier = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    # Each CA gets its own name, so that during an overlap the trust bundle has no two CAs that a
    # verifier could confuse; the key identifier also ties the name to what leaves carry in their AKI.
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "secure-model-operator"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{CA_NAME_PREFIX} {key_identifier.digest.hex()[:16]}"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + lifetime)
        # pathlen 0: this CA signs leaves only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(key_identifier, critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert_pem=_certificate_pem(cert), key_pem=_private_key_pem(key))


def _read_ca_pair(data: Mapping[str, bytes], cert_key: str, private_key_key: str) -> KeyPair:
    if cert_key not in data or private_key_key not in data:
        raise InvalidCA(f"{cert_key} or {private_key_key} is missing")
    try:
        cert = x509.load_pem_x509_certificate(data[cert_key])
    except ValueError as error:
        raise InvalidCA(f"{cert_key} is not a PEM certificate: {error}") from None
    try:
        key = _load_private_key(data[private_key_key])
    except (ValueError, TypeError) as error:
        raise InvalidCA(f"{private_key_key} is not a usable private key: {error}") from None
    if not _is_ca(cert):
        raise InvalidCA(f"{cert_key} is not a CA certificate")
    if not _key_matches(cert, key):
        raise InvalidCA(f"{private_key_key} does not match {cert_key}")
    return KeyPair(cert_pem=bytes(data[cert_key]), key_pem=bytes(data[private_key_key]))


def _read_activation(raw: bytes) -> datetime:
    try:
        moment = datetime.fromisoformat(raw.decode())
    except (UnicodeDecodeError, ValueError):
        raise InvalidCA(f"{NEXT_ACTIVATES_AT_KEY} is not an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise InvalidCA(f"{NEXT_ACTIVATES_AT_KEY} has no time zone")
    return moment


def _read_bundle(raw: bytes) -> tuple[bytes, ...]:
    try:
        certs = x509.load_pem_x509_certificates(raw)
    except ValueError as error:
        raise InvalidCA(f"{CA_BUNDLE_KEY} is not a PEM certificate bundle: {error}") from None
    if not all(_is_ca(cert) for cert in certs):
        raise InvalidCA(f"{CA_BUNDLE_KEY} holds a certificate that is not a CA")
    return tuple(_certificate_pem(cert) for cert in certs)


def ca_from_secret_data(data: Mapping[str, bytes]) -> CAState:
    """Read the CA Secret's data as stored. Raises InvalidCA if any part of it is unusable."""
    signer = _read_ca_pair(data, CERT_KEY, PRIVATE_KEY_KEY)
    next_keys = (NEXT_CERT_KEY, NEXT_PRIVATE_KEY_KEY, NEXT_ACTIVATES_AT_KEY)
    pending: KeyPair | None = None
    activates_at: datetime | None = None
    if any(key in data for key in next_keys):
        if not all(key in data for key in next_keys):
            raise InvalidCA(f"the next CA is incomplete: {', '.join(next_keys)} go together")
        pending = _read_ca_pair(data, NEXT_CERT_KEY, NEXT_PRIVATE_KEY_KEY)
        activates_at = _read_activation(data[NEXT_ACTIVATES_AT_KEY])
    if CA_BUNDLE_KEY not in data:
        raise InvalidCA(f"{CA_BUNDLE_KEY} is missing")
    return CAState(signer, pending, activates_at, _read_bundle(data[CA_BUNDLE_KEY]))


def ca_to_secret_data(state: CAState) -> dict[str, bytes]:
    """The CA Secret's data for `state`; ca_from_secret_data reads it back unchanged."""
    data = {
        CERT_KEY: state.signer.cert_pem,
        PRIVATE_KEY_KEY: state.signer.key_pem,
        CA_BUNDLE_KEY: state.bundle_pem(),
    }
    if state.pending is not None and state.pending_activates_at is not None:
        data[NEXT_CERT_KEY] = state.pending.cert_pem
        data[NEXT_PRIVATE_KEY_KEY] = state.pending.key_pem
        data[NEXT_ACTIVATES_AT_KEY] = _timestamp(state.pending_activates_at).encode()
    return data


def _salvage_trusted(data: Mapping[str, bytes], now: datetime) -> tuple[bytes, ...]:
    """CA certificates from a broken Secret that are still valid: leaves they signed keep working."""
    kept: list[bytes] = []
    for key in (CA_BUNDLE_KEY, CERT_KEY, NEXT_CERT_KEY):
        for block in _PEM_CERTIFICATE.findall(bytes(data.get(key, b""))):
            try:
                cert = x509.load_pem_x509_certificate(block)
            except ValueError:
                continue
            if _is_ca(cert) and _valid_at(cert, now):
                kept.append(_certificate_pem(cert))
    return tuple(kept)


def _with_trust(state: CAState, now: datetime) -> CAState:
    """Trust the signer and the pending CA, plus every other CA that has not expired; each once."""
    certs = [x509.load_pem_x509_certificate(pem) for pem in state.trusted]
    required = [
        x509.load_pem_x509_certificate(pair.cert_pem) for pair in (state.signer, state.pending) if pair
    ]
    trusted: list[bytes] = []
    seen: set[bytes] = set()
    for cert in [*certs, *required]:
        fingerprint = _fingerprint(cert)
        if fingerprint in seen or now >= cert.not_valid_after_utc:
            continue
        seen.add(fingerprint)
        trusted.append(_certificate_pem(cert))
    return CAState(state.signer, state.pending, state.pending_activates_at, tuple(trusted))


def _fresh(kept: tuple[bytes, ...], now: datetime, algorithm: KeyAlgorithm, lifetime: timedelta) -> CAState:
    return _with_trust(CAState(_new_ca(now, algorithm, lifetime), None, None, kept), now)


def _promote(state: CAState, pending: KeyPair) -> CAState:
    return CAState(pending, None, None, state.trusted)


def _validity_problem(cert: x509.Certificate, now: datetime) -> str | None:
    if now >= cert.not_valid_after_utc:
        return f"expired at {_timestamp(cert.not_valid_after_utc)}"
    if now < cert.not_valid_before_utc:
        return f"not valid until {_timestamp(cert.not_valid_before_utc)}"
    return None


def _replace_unusable_signer(
    state: CAState, now: datetime, algorithm: KeyAlgorithm, lifetime: timedelta
) -> tuple[CAState, str | None]:
    signer = x509.load_pem_x509_certificate(state.signer.cert_pem)
    problem = _validity_problem(signer, now)
    if problem is None:
        return state, None
    if state.pending is not None and _valid_at(x509.load_pem_x509_certificate(state.pending.cert_pem), now):
        # The next CA is already trusted everywhere: activating it breaks less than a new CA would.
        return _promote(state, state.pending), f"the CA signer {problem}; activated the next CA"
    return _fresh(state.trusted, now, algorithm, lifetime), f"the CA signer {problem}; generated a new CA"


def _discard_unusable_pending(state: CAState, now: datetime) -> tuple[CAState, str | None]:
    if state.pending is None:
        return state, None
    problem = _validity_problem(x509.load_pem_x509_certificate(state.pending.cert_pem), now)
    if problem is None:
        return state, None
    return CAState(state.signer, None, None, state.trusted), f"the next CA {problem}; discarded it"


def _activate_pending(state: CAState, now: datetime) -> tuple[CAState, str | None]:
    if state.pending is None or state.pending_activates_at is None or now < state.pending_activates_at:
        return state, None
    pending = x509.load_pem_x509_certificate(state.pending.cert_pem)
    return _promote(state, state.pending), f"activated the next CA ({pending.subject.rfc4514_string()})"


def _start_rotation(
    state: CAState, now: datetime, algorithm: KeyAlgorithm, lifetime: timedelta
) -> tuple[CAState, str | None]:
    if state.pending is not None:
        return state, None
    signer = x509.load_pem_x509_certificate(state.signer.cert_pem)
    signer_lifetime = signer.not_valid_after_utc - signer.not_valid_before_utc
    renewal_window = signer_lifetime / 3
    if now < signer.not_valid_after_utc - renewal_window:
        return state, None
    # The overlap gives every Secret time to carry the new bundle before anything the new CA signs is
    # presented, and leaves time to move to the new CA before the old one expires: half of what is
    # left, which is half the renewal window when the rotation starts on time.
    overlap = (signer.not_valid_after_utc - now) / 2
    activates_at = (now + overlap).replace(microsecond=0)
    pending = _new_ca(now, algorithm, lifetime)
    rotated = CAState(state.signer, pending, activates_at, (*state.trusted, pending.cert_pem))
    note = (
        f"the CA expires at {_timestamp(signer.not_valid_after_utc)}; created the next CA, trusted now "
        f"and signing from {_timestamp(activates_at)}"
    )
    return rotated, note


def _fingerprints(raw: bytes) -> list[tuple[str, bytes]]:
    """(SHA-256 fingerprint, PEM) of every readable certificate in `raw`."""
    found = []
    for block in _PEM_CERTIFICATE.findall(raw):
        try:
            cert = x509.load_pem_x509_certificate(block)
        except ValueError:
            continue
        found.append((_fingerprint(cert).hex(), _certificate_pem(cert)))
    return found


@dataclass(frozen=True)
class LedgerCheck:
    """The CA Secret's data with every CA certificate the operator did not make taken out."""

    data: dict[str, bytes]
    untrusted: tuple[str, ...]  # fingerprints left out


def keep_known_cas(data: Mapping[str, bytes], known: frozenset[str] | None) -> LedgerCheck:
    """Leave out of the CA Secret every CA certificate whose fingerprint is not in `known`, the ledger of
    CAs the operator generated: a certificate appended to the bundle, or a signer swapped in, is
    reported and never trusted. Without a ledger yet (an operator upgraded from before it), the signer
    and the next CA, which come with their private keys, are taken as the operator's, and nothing else.
    """
    signers = {key: _fingerprints(bytes(data.get(key, b""))) for key in (CERT_KEY, NEXT_CERT_KEY)}
    if known is None:
        known = frozenset(fingerprint for found in signers.values() for fingerprint, _ in found[:1])
    kept = dict(data)
    untrusted: list[str] = []
    for cert_key, private_key_key, extra in (
        (CERT_KEY, PRIVATE_KEY_KEY, ()),
        (NEXT_CERT_KEY, NEXT_PRIVATE_KEY_KEY, (NEXT_ACTIVATES_AT_KEY,)),
    ):
        found = signers[cert_key]
        if not found:
            continue
        # A signer's field holds one certificate; anything after it is never the operator's.
        untrusted += [fingerprint for fingerprint, _ in found[1:]]
        if found[0][0] in known:
            kept[cert_key] = found[0][1]
            continue
        untrusted.append(found[0][0])
        for key in (cert_key, private_key_key, *extra):
            kept.pop(key, None)
    if CA_BUNDLE_KEY in data:
        bundle = _fingerprints(bytes(data[CA_BUNDLE_KEY]))
        untrusted += [fingerprint for fingerprint, _ in bundle if fingerprint not in known]
        kept[CA_BUNDLE_KEY] = b"".join(pem for fingerprint, pem in bundle if fingerprint in known)
        if not kept[CA_BUNDLE_KEY] and CERT_KEY in kept:
            kept[CA_BUNDLE_KEY] = bytes(kept[CERT_KEY])  # the signer is trusted, whatever the bundle said
    return LedgerCheck(kept, tuple(sorted(set(untrusted))))


def ledger_of(state: CAState) -> frozenset[str]:
    """The fingerprints of every CA the operator trusts now: all of them its own."""
    return frozenset(_fingerprint(x509.load_pem_x509_certificate(pem)).hex() for pem in state.trusted)


def plan_ca(
    current: Mapping[str, bytes] | None, now: datetime, algorithm: KeyAlgorithm, lifetime: timedelta
) -> CAPlan:
    """The CA Secret's next state, given what it holds now (None: no Secret yet).

    `algorithm` and `lifetime` apply to CAs generated by this call; an existing CA keeps its own until
    it is rotated.
    """
    _require_aware(now)
    if lifetime <= timedelta(0):
        raise ValueError("the CA lifetime must be positive")
    if not current:
        state = _fresh((), now, algorithm, lifetime)
        return CAPlan(state, changed=True, notes=("generated a new CA",))
    try:
        stored = ca_from_secret_data(current)
    except InvalidCA as error:
        state = _fresh(_salvage_trusted(current, now), now, algorithm, lifetime)
        return CAPlan(
            state,
            changed=True,
            notes=(),
            problems=(f"CA secret was unreadable ({error.reason}); generated a new CA",),
        )
    state, signer_problem = _replace_unusable_signer(stored, now, algorithm, lifetime)
    state, pending_problem = _discard_unusable_pending(state, now)
    state, activation_note = _activate_pending(state, now)
    state, rotation_note = _start_rotation(state, now, algorithm, lifetime)
    state = _with_trust(state, now)
    stored_data = {key: bytes(current[key]) for key in _CA_SECRET_KEYS if key in current}
    return CAPlan(
        state,
        changed=ca_to_secret_data(state) != stored_data,
        notes=tuple(note for note in (activation_note, rotation_note) if note),
        problems=tuple(problem for problem in (signer_problem, pending_problem) if problem),
    )


# ------------------------------------------------------------------------------------------- leaves


def _issue(
    ca: CAState,
    subject: x509.Name,
    dns_names: Sequence[str],
    usage: x509.ObjectIdentifier,
    now: datetime,
    lifetime: timedelta,
    algorithm: KeyAlgorithm,
) -> KeyPair:
    _require_aware(now)
    if lifetime <= timedelta(0):
        raise ValueError("the certificate lifetime must be positive")
    signer_cert = x509.load_pem_x509_certificate(ca.signer.cert_pem)
    signer_key = _load_private_key(ca.signer.key_pem)
    problem = _validity_problem(signer_cert, now)
    if problem is not None:
        raise ValueError(f"the CA signer {problem}: plan the CA before issuing")
    key = _generate_key(algorithm)
    now = now.replace(microsecond=0)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(signer_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        # A leaf never outlives its CA: past that, no verifier would accept it anyway.
        .not_valid_after(min(now + lifetime, signer_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                # RSA key exchange needs it; for ECDSA keys it is meaningless and strict verifiers reject it.
                key_encipherment=isinstance(key, rsa.RSAPrivateKey),
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                _subject_key_identifier(signer_cert)
            ),
            critical=False,
        )
    )
    if dns_names:
        names = [x509.DNSName(name) for name in dns_names]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(signer_key, hashes.SHA256())
    return KeyPair(cert_pem=_certificate_pem(cert), key_pem=_private_key_pem(key))


def issue_server_certificate(
    ca: CAState, dns_names: Sequence[str], now: datetime, lifetime: timedelta, algorithm: KeyAlgorithm
) -> KeyPair:
    """A server certificate for the sidecar, valid for `dns_names`.

    The first name also becomes the subject's CN, for humans reading the certificate; it must fit in
    64 characters, so put the short Service name first.
    """
    if not dns_names:
        raise ValueError("a server certificate needs at least one DNS name")
    for name in dns_names:
        _check_dns_name(name)
    if len(dns_names[0]) > MAX_COMMON_NAME_LENGTH:
        raise ValueError(f"the first DNS name {dns_names[0]!r} is longer than {MAX_COMMON_NAME_LENGTH}")
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])])
    return _issue(ca, subject, dns_names, ExtendedKeyUsageOID.SERVER_AUTH, now, lifetime, algorithm)


def issue_client_certificate(
    ca: CAState, common_name: str, now: datetime, lifetime: timedelta, algorithm: KeyAlgorithm
) -> KeyPair:
    """A client certificate whose subject is exactly CN=<common_name>.

    Nothing else goes into the subject, so the sidecar's allow-list compares a single spelling.
    """
    _check_dns_name(common_name)
    if len(common_name) > MAX_COMMON_NAME_LENGTH:
        raise ValueError(f"client identity {common_name!r} is longer than {MAX_COMMON_NAME_LENGTH}")
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    return _issue(ca, subject, (), ExtendedKeyUsageOID.CLIENT_AUTH, now, lifetime, algorithm)


def is_scheduled(reason: str) -> bool:
    """First issuance or renewal on time, as opposed to a certificate that had to be replaced early."""
    return reason == "missing" or reason.startswith("due for renewal")


def renewal_reason(
    pair: KeyPair | None,
    ca: CAState,
    now: datetime,
    renew_before: timedelta,
    *,
    dns_names: Sequence[str] = (),
    common_name: str | None = None,
) -> str | None:
    """Why `pair` must be replaced now, or None to keep it.

    `dns_names` and `common_name`, when given, are what the certificate should carry now.
    """
    _require_aware(now)
    if pair is None:
        return "missing"
    try:
        cert = x509.load_pem_x509_certificate(pair.cert_pem)
        key = _load_private_key(pair.key_pem)
    except (ValueError, TypeError):
        return "unreadable"
    if not _key_matches(cert, key):
        return "key does not match"
    problem = _validity_problem(cert, now)
    if problem is not None:
        return problem
    trusted = [x509.load_pem_x509_certificate(pem) for pem in ca.trusted]
    if not any(_issued_by(cert, issuer) for issuer in trusted):
        return "not issued by a trusted CA"
    if dns_names and set(_dns_names(cert)) != set(dns_names):
        return "names changed"
    if common_name is not None and _common_name(cert) != common_name:
        return "names changed"
    signer = x509.load_pem_x509_certificate(ca.signer.cert_pem)
    # A certificate already cut off at the signer's expiry would come back the same: wait until the
    # next CA signs, when renewing gains something.
    renewing_helps = cert.not_valid_after_utc < signer.not_valid_after_utc
    if now >= cert.not_valid_after_utc - renew_before and renewing_helps:
        return f"due for renewal (expires {_timestamp(cert.not_valid_after_utc)})"
    return None
