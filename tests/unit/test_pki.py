"""The operator's CA and leaf certificates, driven by an injected clock."""

from __future__ import annotations

import hashlib
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID

from securemodels import pki
from securemodels.pki import CAState, KeyAlgorithm, KeyPair

T0 = datetime(2030, 1, 1, tzinfo=UTC)
CA_LIFETIME = timedelta(days=90)
LEAF_LIFETIME = timedelta(hours=24)
ECDSA: KeyAlgorithm = "ECDSA-P256"
ALGORITHMS: tuple[KeyAlgorithm, ...] = ("ECDSA-P256", "RSA-3072")
Extension = TypeVar("Extension", bound=x509.ExtensionType)
SERVER_NAMES = ("fraud", "fraud.ml-prod.svc", "fraud.ml-prod.svc.cluster.local")


@pytest.fixture(scope="module")
def cas() -> dict[KeyAlgorithm, CAState]:
    """One CA per algorithm, generated at T0; RSA keys take long enough to share them."""
    return {algorithm: pki.plan_ca(None, T0, algorithm, CA_LIFETIME).state for algorithm in ALGORITHMS}


@pytest.fixture(scope="module")
def ca(cas: dict[KeyAlgorithm, CAState]) -> CAState:
    return cas[ECDSA]


def cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def extension(certificate: x509.Certificate, kind: type[Extension]) -> x509.Extension[Extension]:
    return certificate.extensions.get_extension_for_class(kind)


def bundle(state: CAState) -> verification.Store:
    return verification.Store(x509.load_pem_x509_certificates(state.bundle_pem()))


def verify_server(state: CAState, pair: KeyPair, name: str, at: datetime) -> None:
    verifier = (
        verification.PolicyBuilder().store(bundle(state)).time(at).build_server_verifier(x509.DNSName(name))
    )
    verifier.verify(cert(pair.cert_pem), [])


def verify_client(state: CAState, pair: KeyPair, at: datetime) -> None:
    # Web PKI policy wants a SAN on every leaf; our client certificates carry the identity in the CN only.
    leaf_policy = verification.ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.SubjectAlternativeName, verification.Criticality.AGNOSTIC, None
    )
    verifier = (
        verification.PolicyBuilder()
        .store(bundle(state))
        .time(at)
        .extension_policies(
            ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(), ee_policy=leaf_policy
        )
        .build_client_verifier()
    )
    verifier.verify(cert(pair.cert_pem), [])


def server_pair(state: CAState, at: datetime, lifetime: timedelta = LEAF_LIFETIME) -> KeyPair:
    return pki.issue_server_certificate(state, SERVER_NAMES, at, lifetime, ECDSA)


def client_pair(state: CAState, at: datetime, name: str = "gateway.ml-gw") -> KeyPair:
    return pki.issue_client_certificate(state, name, at, LEAF_LIFETIME, ECDSA)


def secret_of(state: CAState) -> dict[str, bytes]:
    return pki.ca_to_secret_data(state)


# ---------------------------------------------------------------------------------------------- CA


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_new_ca_is_a_self_signed_leaf_only_ca(
    cas: dict[KeyAlgorithm, CAState], algorithm: KeyAlgorithm
) -> None:
    state = cas[algorithm]
    ca_cert = cert(state.signer.cert_pem)
    constraints = extension(ca_cert, x509.BasicConstraints)
    usage = extension(ca_cert, x509.KeyUsage)

    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    assert not usage.value.digital_signature
    assert extension(ca_cert, x509.SubjectKeyIdentifier).value.digest
    ca_cert.verify_directly_issued_by(ca_cert)
    assert ca_cert.not_valid_before_utc == T0 - pki.CLOCK_SKEW
    assert ca_cert.not_valid_after_utc == T0 + CA_LIFETIME
    assert state.pending is None and state.pending_activates_at is None
    assert state.trusted == (state.signer.cert_pem,)


@pytest.mark.parametrize(
    ("algorithm", "key_type", "key_size"),
    [("ECDSA-P256", ec.EllipticCurvePrivateKey, 256), ("RSA-3072", rsa.RSAPrivateKey, 3072)],
)
def test_ca_key_is_the_requested_algorithm_in_unencrypted_pkcs8(
    cas: dict[KeyAlgorithm, CAState], algorithm: KeyAlgorithm, key_type: type, key_size: int
) -> None:
    key_pem = cas[algorithm].signer.key_pem
    key = serialization.load_pem_private_key(key_pem, password=None)

    assert key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert isinstance(key, key_type)
    assert isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) and key.key_size == key_size
    if isinstance(key, ec.EllipticCurvePrivateKey):
        assert isinstance(key.curve, ec.SECP256R1)


def test_each_ca_gets_its_own_name(ca: CAState) -> None:
    other = pki.plan_ca(None, T0, ECDSA, CA_LIFETIME).state
    assert cert(ca.signer.cert_pem).subject != cert(other.signer.cert_pem).subject


def test_secret_data_round_trips(ca: CAState) -> None:
    data = secret_of(ca)

    assert set(data) == {"tls.crt", "tls.key", "ca.crt"}
    assert pki.ca_from_secret_data(data) == ca


def test_secret_data_of_a_rotation_round_trips(ca: CAState) -> None:
    rotating = pki.plan_ca(secret_of(ca), T0 + CA_LIFETIME * 2 / 3, ECDSA, CA_LIFETIME).state
    data = secret_of(rotating)

    assert set(data) == {"tls.crt", "tls.key", "ca.crt", "next.crt", "next.key", "next.activates-at"}
    assert data["next.activates-at"].endswith(b"Z")
    assert pki.ca_from_secret_data(data) == rotating


def test_plan_without_a_secret_generates_a_ca() -> None:
    no_secret: tuple[dict[str, bytes] | None, ...] = (None, {})
    for current in no_secret:
        plan = pki.plan_ca(current, T0, ECDSA, CA_LIFETIME)
        assert plan.changed
        assert plan.notes == ("generated a new CA",)
        assert cert(plan.state.signer.cert_pem).not_valid_after_utc == T0 + CA_LIFETIME


def test_plan_keeps_a_healthy_ca_without_writing(ca: CAState) -> None:
    plan = pki.plan_ca(secret_of(ca), T0 + timedelta(days=1), ECDSA, CA_LIFETIME)

    assert not plan.changed
    assert plan.notes == ()
    assert plan.state == ca


def test_plan_ignores_secret_keys_it_does_not_own(ca: CAState) -> None:
    plan = pki.plan_ca({**secret_of(ca), "note": b"added by hand"}, T0, ECDSA, CA_LIFETIME)
    assert not plan.changed


def test_plan_repairs_a_bundle_that_lost_the_signer(ca: CAState) -> None:
    other = pki.plan_ca(None, T0, ECDSA, CA_LIFETIME).state
    plan = pki.plan_ca({**secret_of(ca), "ca.crt": other.signer.cert_pem}, T0, ECDSA, CA_LIFETIME)

    assert plan.changed
    assert plan.state.signer == ca.signer
    assert plan.state.trusted == (other.signer.cert_pem, ca.signer.cert_pem)


def _garbage_secrets(ca: CAState) -> dict[str, tuple[dict[str, bytes], str]]:
    other = pki.plan_ca(None, T0, ECDSA, CA_LIFETIME).state
    leaf = server_pair(ca, T0)
    good = secret_of(ca)
    rotating = secret_of(pki.plan_ca(good, T0 + CA_LIFETIME * 2 / 3, ECDSA, CA_LIFETIME).state)
    return {
        "junk certificate": ({**good, "tls.crt": b"junk"}, "tls.crt is not a PEM certificate"),
        "missing key": ({k: v for k, v in good.items() if k != "tls.key"}, "tls.key is missing"),
        "junk key": ({**good, "tls.key": b"-----BEGIN PRIVATE KEY-----\n"}, "tls.key is not a usable"),
        "key of another CA": ({**good, "tls.key": other.signer.key_pem}, "tls.key does not match tls.crt"),
        "a leaf as CA": ({**good, "tls.crt": leaf.cert_pem, "tls.key": leaf.key_pem}, "not a CA certificate"),
        "missing bundle": ({k: v for k, v in good.items() if k != "ca.crt"}, "ca.crt is missing"),
        "junk bundle": ({**good, "ca.crt": b"\x00\xff"}, "ca.crt is not a PEM certificate bundle"),
        "leaf in bundle": ({**good, "ca.crt": good["ca.crt"] + leaf.cert_pem}, "not a CA"),
        "incomplete next CA": (
            {k: v for k, v in rotating.items() if k != "next.key"},
            "the next CA is incomplete",
        ),
        "bad activation time": ({**rotating, "next.activates-at": b"soon"}, "not an RFC 3339 time"),
        "naive activation time": ({**rotating, "next.activates-at": b"2030-03-01T00:00:00"}, "no time zone"),
    }


GARBAGE_CASES = [
    "junk certificate",
    "missing key",
    "junk key",
    "key of another CA",
    "a leaf as CA",
    "missing bundle",
    "junk bundle",
    "leaf in bundle",
    "incomplete next CA",
    "bad activation time",
    "naive activation time",
]


@pytest.mark.parametrize("case", GARBAGE_CASES)
def test_unreadable_secret_is_replaced_by_a_new_ca(ca: CAState, case: str) -> None:
    data, reason = _garbage_secrets(ca)[case]

    with pytest.raises(pki.InvalidCA, match=reason):
        pki.ca_from_secret_data(data)
    plan = pki.plan_ca(data, T0 + timedelta(days=1), ECDSA, CA_LIFETIME)

    assert plan.changed
    assert plan.state.signer.cert_pem != ca.signer.cert_pem
    assert plan.notes == ()
    assert len(plan.problems) == 1
    assert plan.problems[0].startswith("CA secret was unreadable (") and reason in plan.problems[0]
    assert plan.problems[0].endswith("; generated a new CA")
    assert plan.state.signer.cert_pem in plan.state.trusted


def test_new_ca_after_garbage_keeps_trusting_valid_cas_so_issued_leaves_keep_working(ca: CAState) -> None:
    leaf = client_pair(ca, T0)
    other = pki.plan_ca(None, T0, ECDSA, CA_LIFETIME).state
    broken = {**secret_of(ca), "tls.key": other.signer.key_pem}

    plan = pki.plan_ca(broken, T0 + timedelta(hours=1), ECDSA, CA_LIFETIME)

    assert ca.signer.cert_pem in plan.state.trusted
    verify_client(plan.state, leaf, T0 + timedelta(hours=2))
    assert pki.renewal_reason(leaf, plan.state, T0 + timedelta(hours=2), timedelta(hours=8)) is None


def test_new_ca_after_garbage_drops_expired_cas(ca: CAState) -> None:
    broken = {**secret_of(ca), "tls.key": b"junk"}
    plan = pki.plan_ca(broken, T0 + CA_LIFETIME, ECDSA, CA_LIFETIME)
    assert plan.state.trusted == (plan.state.signer.cert_pem,)


@pytest.mark.parametrize(
    ("now", "problem"),
    [(T0 + CA_LIFETIME, "expired at"), (T0 - timedelta(days=1), "not valid until")],
    ids=["expired", "not yet valid"],
)
def test_unusable_signer_is_replaced_at_once(ca: CAState, now: datetime, problem: str) -> None:
    plan = pki.plan_ca(secret_of(ca), now, ECDSA, CA_LIFETIME)
    new_signer = cert(plan.state.signer.cert_pem)

    assert plan.changed
    assert plan.problems[0].startswith("the CA signer " + problem)
    assert plan.problems[0].endswith("generated a new CA")
    assert new_signer.not_valid_before_utc <= now < new_signer.not_valid_after_utc
    assert (ca.signer.cert_pem in plan.state.trusted) == (problem == "not valid until")


# ------------------------------------------------------------------------------------- CA rotation


def test_renewal_window_adds_the_next_ca_to_the_bundle_before_it_signs(ca: CAState) -> None:
    window_opens = T0 + CA_LIFETIME * 2 / 3 + timedelta(hours=1)
    plan = pki.plan_ca(secret_of(ca), window_opens, ECDSA, CA_LIFETIME)
    state = plan.state

    assert plan.changed
    assert state.signer == ca.signer
    assert state.pending is not None and state.pending_activates_at is not None
    assert state.trusted == (ca.signer.cert_pem, state.pending.cert_pem)
    halfway = window_opens + (T0 + CA_LIFETIME - window_opens) / 2
    assert state.pending_activates_at == halfway
    assert "created the next CA" in plan.notes[0]
    leaf = server_pair(state, window_opens)
    cert(leaf.cert_pem).verify_directly_issued_by(cert(ca.signer.cert_pem))


def test_just_before_the_renewal_window_nothing_changes(ca: CAState) -> None:
    signer = cert(ca.signer.cert_pem)
    lifetime = signer.not_valid_after_utc - signer.not_valid_before_utc
    before = signer.not_valid_after_utc - lifetime / 3 - timedelta(seconds=1)
    assert not pki.plan_ca(secret_of(ca), before, ECDSA, CA_LIFETIME).changed


def test_pending_ca_waits_for_its_activation_time(ca: CAState) -> None:
    rotating = pki.plan_ca(secret_of(ca), T0 + CA_LIFETIME * 2 / 3, ECDSA, CA_LIFETIME).state
    assert rotating.pending_activates_at is not None

    plan = pki.plan_ca(
        secret_of(rotating), rotating.pending_activates_at - timedelta(seconds=1), ECDSA, CA_LIFETIME
    )

    assert not plan.changed
    assert plan.state == rotating


def test_pending_ca_activates_after_the_overlap_and_the_old_one_stays_trusted(ca: CAState) -> None:
    rotating = pki.plan_ca(secret_of(ca), T0 + CA_LIFETIME * 2 / 3, ECDSA, CA_LIFETIME).state
    assert rotating.pending is not None and rotating.pending_activates_at is not None
    now = rotating.pending_activates_at

    plan = pki.plan_ca(secret_of(rotating), now, ECDSA, CA_LIFETIME)

    assert plan.changed
    assert plan.notes[0].startswith("activated the next CA")
    assert plan.state.signer == rotating.pending
    assert plan.state.pending is None and plan.state.pending_activates_at is None
    assert plan.state.trusted == rotating.trusted
    old_client = client_pair(rotating, now - timedelta(hours=1))
    new_server = server_pair(plan.state, now)
    cert(new_server.cert_pem).verify_directly_issued_by(cert(rotating.pending.cert_pem))
    verify_client(plan.state, old_client, now)
    verify_server(plan.state, new_server, SERVER_NAMES[1], now)


def test_old_ca_leaves_the_bundle_when_it_expires(ca: CAState) -> None:
    rotating = pki.plan_ca(secret_of(ca), T0 + CA_LIFETIME * 2 / 3, ECDSA, CA_LIFETIME).state
    assert rotating.pending_activates_at is not None
    activated = pki.plan_ca(secret_of(rotating), rotating.pending_activates_at, ECDSA, CA_LIFETIME).state
    old_expiry = cert(ca.signer.cert_pem).not_valid_after_utc

    still = pki.plan_ca(secret_of(activated), old_expiry - timedelta(seconds=1), ECDSA, CA_LIFETIME)
    gone = pki.plan_ca(secret_of(activated), old_expiry, ECDSA, CA_LIFETIME)

    assert not still.changed
    assert gone.changed
    assert gone.state.trusted == (activated.signer.cert_pem,)
    assert gone.state.signer == activated.signer


def test_late_rotation_activates_halfway_through_what_is_left(ca: CAState) -> None:
    expiry = cert(ca.signer.cert_pem).not_valid_after_utc
    now = expiry - timedelta(days=2)

    state = pki.plan_ca(secret_of(ca), now, ECDSA, CA_LIFETIME).state

    assert state.pending_activates_at == now + timedelta(days=1)


def test_expired_signer_with_a_trusted_next_ca_activates_it_early(ca: CAState) -> None:
    rotating = pki.plan_ca(secret_of(ca), T0 + CA_LIFETIME - timedelta(hours=2), ECDSA, CA_LIFETIME).state
    assert rotating.pending is not None

    plan = pki.plan_ca(secret_of(rotating), T0 + CA_LIFETIME, ECDSA, CA_LIFETIME)

    assert plan.state.signer == rotating.pending
    assert plan.state.trusted == (rotating.pending.cert_pem,)
    assert plan.problems[0].startswith("the CA signer expired at")
    assert plan.problems[0].endswith("; activated the next CA")


def test_rotations_never_sign_with_a_ca_that_yesterdays_bundle_did_not_trust(ca: CAState) -> None:
    """Day by day through two rotations: every leaf verifies against the bundle peers already had."""
    data = secret_of(ca)
    yesterday = ca
    signers = {ca.signer.cert_pem}
    for day in range(1, 151):
        now = T0 + timedelta(days=day)
        plan = pki.plan_ca(data, now, ECDSA, CA_LIFETIME)
        if plan.changed:
            data = pki.ca_to_secret_data(plan.state)
        signers.add(plan.state.signer.cert_pem)
        verify_client(yesterday, client_pair(plan.state, now), now)
        verify_server(yesterday, server_pair(plan.state, now), SERVER_NAMES[0], now)
        yesterday = plan.state
    assert len(signers) == 3


# ------------------------------------------------------------------------------------------ leaves


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_server_certificate(cas: dict[KeyAlgorithm, CAState], algorithm: KeyAlgorithm) -> None:
    state = cas[algorithm]
    pair = pki.issue_server_certificate(state, SERVER_NAMES, T0, LEAF_LIFETIME, algorithm)
    leaf = cert(pair.cert_pem)
    usage = extension(leaf, x509.KeyUsage).value

    assert isinstance(
        leaf.public_key(), rsa.RSAPublicKey if algorithm == "RSA-3072" else ec.EllipticCurvePublicKey
    )
    assert extension(leaf, x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName) == list(
        SERVER_NAMES
    )
    assert leaf.subject.rfc4514_string() == f"CN={SERVER_NAMES[0]}"
    assert list(extension(leaf, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert (
        extension(leaf, x509.BasicConstraints).critical
        and not extension(leaf, x509.BasicConstraints).value.ca
    )
    assert usage.digital_signature and usage.key_encipherment == (algorithm == "RSA-3072")
    ca_key_id = extension(cert(state.signer.cert_pem), x509.SubjectKeyIdentifier).value.digest
    assert extension(leaf, x509.AuthorityKeyIdentifier).value.key_identifier == ca_key_id
    assert leaf.not_valid_before_utc == T0 - pki.CLOCK_SKEW
    assert leaf.not_valid_after_utc == T0 + LEAF_LIFETIME
    for name in SERVER_NAMES:
        verify_server(state, pair, name, T0)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_client_certificate(cas: dict[KeyAlgorithm, CAState], algorithm: KeyAlgorithm) -> None:
    state = cas[algorithm]
    pair = pki.issue_client_certificate(state, "gateway.ml-gw", T0, LEAF_LIFETIME, algorithm)
    leaf = cert(pair.cert_pem)

    assert leaf.subject.rfc4514_string() == "CN=gateway.ml-gw"
    assert list(extension(leaf, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    with pytest.raises(x509.ExtensionNotFound):
        extension(leaf, x509.SubjectAlternativeName)
    assert extension(leaf, x509.KeyUsage).value.key_encipherment == (algorithm == "RSA-3072")
    verify_client(state, pair, T0)


def test_purposes_do_not_mix(ca: CAState) -> None:
    with pytest.raises(verification.VerificationError, match="EKU"):
        verify_client(ca, server_pair(ca, T0), T0)
    with pytest.raises(verification.VerificationError):
        verify_server(ca, client_pair(ca, T0), "gateway.ml-gw", T0)


def test_leaves_never_outlive_the_ca(ca: CAState) -> None:
    ca_expiry = cert(ca.signer.cert_pem).not_valid_after_utc
    now = ca_expiry - timedelta(hours=1)

    server = cert(server_pair(ca, now).cert_pem)
    client = cert(client_pair(ca, now).cert_pem)

    assert server.not_valid_after_utc == ca_expiry
    assert client.not_valid_after_utc == ca_expiry


def test_serial_numbers_are_random(ca: CAState) -> None:
    serials = {cert(client_pair(ca, T0).cert_pem).serial_number for _ in range(5)}
    assert len(serials) == 5
    assert all(serial.bit_length() > 64 for serial in serials)


@pytest.mark.parametrize(
    "now", [T0 - timedelta(hours=1), T0 + CA_LIFETIME], ids=["before the CA is valid", "after it expired"]
)
def test_issuing_outside_the_ca_validity_is_refused(ca: CAState, now: datetime) -> None:
    with pytest.raises(ValueError, match="the CA signer"):
        server_pair(ca, now)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "Gateway.ml-gw",
        "gateway_ml-gw",
        "gateway..ml-gw",
        "-gateway",
        "gateway.",
        "gateway.ml-gw,O=admin",
        "a" * 65,
        "gate way",
    ],
)
def test_client_identity_must_be_a_short_lowercase_dns_name(ca: CAState, name: str) -> None:
    with pytest.raises(ValueError):
        pki.issue_client_certificate(ca, name, T0, LEAF_LIFETIME, ECDSA)


@pytest.mark.parametrize("names", [(), ("Fraud.svc",), ("fraud.svc", "*.svc"), ("a" * 63 + ".svc",)])
def test_server_names_must_be_dns_names_and_the_first_fit_a_common_name(
    ca: CAState, names: tuple[str, ...]
) -> None:
    with pytest.raises(ValueError):
        pki.issue_server_certificate(ca, names, T0, LEAF_LIFETIME, ECDSA)


def test_naive_clock_is_refused(ca: CAState) -> None:
    naive = datetime(2030, 1, 2)
    with pytest.raises(ValueError, match="timezone-aware"):
        pki.plan_ca(None, naive, ECDSA, CA_LIFETIME)
    with pytest.raises(ValueError, match="timezone-aware"):
        server_pair(ca, naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        pki.renewal_reason(None, ca, naive, timedelta(hours=8))


# ---------------------------------------------------------------------------------- renewal reasons

RENEW_BEFORE = timedelta(hours=8)


def _renewal_cases(ca: CAState) -> dict[str, tuple[KeyPair | None, datetime, str | None]]:
    server = server_pair(ca, T0)
    other = pki.issue_server_certificate(ca, SERVER_NAMES, T0, LEAF_LIFETIME, ECDSA)
    foreign = server_pair(pki.plan_ca(None, T0, ECDSA, CA_LIFETIME).state, T0)
    expiry = cert(server.cert_pem).not_valid_after_utc
    return {
        "fresh": (server, T0 + timedelta(hours=1), None),
        "missing": (None, T0, "missing"),
        "unreadable": (KeyPair(cert_pem=b"junk", key_pem=server.key_pem), T0, "unreadable"),
        "unreadable key": (KeyPair(cert_pem=server.cert_pem, key_pem=b"junk"), T0, "unreadable"),
        "key does not match": (KeyPair(server.cert_pem, other.key_pem), T0, "key does not match"),
        "expired": (server, expiry, "expired at "),
        "not yet valid": (server, T0 - timedelta(hours=1), "not valid until "),
        "foreign CA": (foreign, T0, "not issued by a trusted CA"),
        "just before the window": (server, expiry - RENEW_BEFORE - timedelta(seconds=1), None),
        "due": (server, expiry - RENEW_BEFORE, "due for renewal (expires "),
    }


RENEWAL_CASES = [
    "fresh",
    "missing",
    "unreadable",
    "unreadable key",
    "key does not match",
    "expired",
    "not yet valid",
    "foreign CA",
    "just before the window",
    "due",
]


@pytest.mark.parametrize("case", RENEWAL_CASES)
def test_renewal_reason(ca: CAState, case: str) -> None:
    pair, now, expected = _renewal_cases(ca)[case]
    reason = pki.renewal_reason(pair, ca, now, RENEW_BEFORE, dns_names=SERVER_NAMES)
    if expected is None:
        assert reason is None
    else:
        assert reason is not None and reason.startswith(expected)


@pytest.mark.parametrize(
    ("dns_names", "common_name", "expected"),
    [
        (SERVER_NAMES, None, None),
        (tuple(reversed(SERVER_NAMES)), None, None),
        (SERVER_NAMES[:2], None, "names changed"),
        ((*SERVER_NAMES, "fraud.example.com"), None, "names changed"),
        ((), SERVER_NAMES[0], None),
        ((), "other", "names changed"),
    ],
)
def test_renewal_reason_when_names_change(
    ca: CAState, dns_names: tuple[str, ...], common_name: str | None, expected: str | None
) -> None:
    pair = server_pair(ca, T0)
    assert (
        pki.renewal_reason(pair, ca, T0, RENEW_BEFORE, dns_names=dns_names, common_name=common_name)
        == expected
    )


def test_client_renewal_when_the_identity_changes(ca: CAState) -> None:
    pair = client_pair(ca, T0)
    assert pki.renewal_reason(pair, ca, T0, RENEW_BEFORE, common_name="gateway.ml-gw") is None
    assert pki.renewal_reason(pair, ca, T0, RENEW_BEFORE, common_name="gateway.other") == "names changed"


def test_leaf_cut_off_at_the_ca_expiry_waits_for_the_next_ca(ca: CAState) -> None:
    """Renewing would return the same expiry until the next CA signs: no pointless reissue loop."""
    ca_expiry = cert(ca.signer.cert_pem).not_valid_after_utc
    issued = ca_expiry - timedelta(hours=6)
    pair = server_pair(ca, issued)
    rotated = pki.plan_ca(secret_of(ca), issued, ECDSA, CA_LIFETIME).state
    assert rotated.pending is not None and rotated.pending_activates_at is not None
    activated = pki.plan_ca(secret_of(rotated), rotated.pending_activates_at, ECDSA, CA_LIFETIME).state

    assert pki.renewal_reason(pair, rotated, issued + timedelta(hours=1), RENEW_BEFORE) is None
    reason = pki.renewal_reason(pair, activated, rotated.pending_activates_at, RENEW_BEFORE)
    assert reason is not None and reason.startswith("due for renewal")


def test_leaf_of_a_retired_but_trusted_ca_is_kept_until_due(ca: CAState) -> None:
    rotating = pki.plan_ca(secret_of(ca), T0 + CA_LIFETIME * 2 / 3, ECDSA, CA_LIFETIME).state
    assert rotating.pending_activates_at is not None
    now = rotating.pending_activates_at
    pair = server_pair(rotating, now - timedelta(hours=1))
    activated = pki.plan_ca(secret_of(rotating), now, ECDSA, CA_LIFETIME).state

    assert pki.renewal_reason(pair, activated, now, RENEW_BEFORE) is None


# ------------------------------------------------------------------------------------------ others


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24h", timedelta(hours=24)),
        ("90m", timedelta(minutes=90)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("45s", timedelta(seconds=45)),
        ("2h0m5s", timedelta(hours=2, seconds=5)),
        ("0s", timedelta(0)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert pki.parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "1d", "h", "1.5h", "30m1h", " 1h", "1H", "-1h", "\u0661h", "1h "])
def test_parse_duration_refuses_other_forms(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        pki.parse_duration(text)


def test_certificate_info_shows_public_facts_only(ca: CAState) -> None:
    pair = server_pair(ca, T0)
    leaf = cert(pair.cert_pem)

    info = pki.certificate_info(pair.cert_pem + pair.key_pem)

    assert [f.name for f in fields(info)] == [
        "not_before",
        "not_after",
        "serial_number",
        "sha256_fingerprint",
        "common_name",
        "dns_names",
    ]
    assert info.not_before == T0 - pki.CLOCK_SKEW
    assert info.not_after == T0 + LEAF_LIFETIME
    assert info.serial_number == format(leaf.serial_number, "x")
    assert info.serial_number == info.serial_number.lower()
    assert (
        info.sha256_fingerprint == hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest()
    )
    assert info.common_name == SERVER_NAMES[0]
    assert info.dns_names == SERVER_NAMES
    key_body = pair.key_pem.decode().splitlines()[1]
    assert key_body not in repr(info) and "PRIVATE" not in repr(info)


def test_certificate_info_of_a_key_alone_is_refused(ca: CAState) -> None:
    with pytest.raises(ValueError):
        pki.certificate_info(ca.signer.key_pem)


def test_reprs_never_show_private_keys(ca: CAState) -> None:
    rotating = pki.plan_ca(secret_of(ca), T0 + CA_LIFETIME * 2 / 3, ECDSA, CA_LIFETIME)
    pair = server_pair(ca, T0)
    for shown in (repr(pair), repr(ca), repr(rotating)):
        assert "PRIVATE" not in shown
    assert repr(replace(pair, key_pem=b"secret")).count("secret") == 0
