"""Real TLS handshakes against real nginx running the rendered sidecar configuration.

The mtls control claims: only declared clients holding certificates from the operator's CA reach the
model, over TLS 1.3 unless the SMD opts into 1.2, and certificate and CA rotations do not break them.
Each test here makes that claim fail if the configuration or the certificates are wrong.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mtls.sidecar import (
    ALGORITHM,
    IDENTITY,
    MODEL_HEALTH_PATH,
    MODEL_LIVENESS_PATH,
    SERVER_NAMES,
    Certificates,
    Client,
    ModelServer,
    Reply,
    StartSidecar,
    nginx_environment,
    plain_get,
)
from securemodels import pki
from securemodels.desired.nginx import TLS12_CIPHERS
from securemodels.pki import CAState, KeyPair


def assert_refused(reply: Reply, model: ModelServer) -> None:
    """Refused by nginx: a TLS alert, or 400 from nginx's own certificate check. The model saw nothing."""
    assert reply.error is not None or reply.status == 400, reply
    assert model.seen == []


def wait_for_fingerprint(client: Client, port: int, fingerprint: str) -> Reply:
    """After a reload, old workers finish their connections: poll until the new certificate is served."""
    deadline = time.monotonic() + 10
    while True:
        reply = client.get(port)
        if reply.server_fingerprint == fingerprint or time.monotonic() > deadline:
            return reply
        time.sleep(0.05)


def signed_by(ca: CAState, subject: x509.Name, certificates: Certificates) -> KeyPair:
    """A client certificate with any subject, signed with the CA's key: what pki.py refuses to issue."""
    signer = x509.load_pem_x509_certificate(ca.signer.cert_pem)
    signer_key = serialization.load_pem_private_key(ca.signer.key_pem, password=None)
    template = x509.load_pem_x509_certificate(certificates.client.cert_pem)
    key = serialization.load_pem_private_key(certificates.client.key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(signer_key, ec.EllipticCurvePrivateKey)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(signer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(template.not_valid_before_utc)
        .not_valid_after(template.not_valid_after_utc)
    )
    for extension in template.extensions:
        builder = builder.add_extension(extension.value, extension.critical)
    cert = builder.sign(signer_key, hashes.SHA256())
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), certificates.client.key_pem)


# ------------------------------------------------------------------------------------ who gets in


def test_declared_client_reaches_the_model_with_its_identity(
    start_sidecar: StartSidecar, certificates: Certificates, model: ModelServer, tmp_path: Path
) -> None:
    sidecar = start_sidecar()
    client = Client(tmp_path, certificates.ca.bundle_pem(), certificates.client)

    reply = client.get(sidecar.tls_port)

    assert reply.status == 200, reply
    assert reply.tls_version == "TLSv1.3"
    assert reply.json() == {"path": "/v1/predict", "identity": [IDENTITY], "underscored_identity": None}
    assert reply.server_fingerprint == pki.certificate_info(certificates.server.cert_pem).sha256_fingerprint
    assert len(model.seen) == 1


def test_access_log_names_the_client(
    start_sidecar: StartSidecar, certificates: Certificates, model: ModelServer, tmp_path: Path
) -> None:
    sidecar = start_sidecar()
    assert (
        Client(tmp_path, certificates.ca.bundle_pem(), certificates.client).get(sidecar.tls_port).status
        == 200
    )

    deadline = time.monotonic() + 5
    while not sidecar.access_log() and time.monotonic() < deadline:
        time.sleep(0.05)  # nginx logs after the response has gone out

    [entry] = sidecar.access_log()
    assert entry["client"] == IDENTITY
    assert entry["client_verify"] == "SUCCESS"
    assert entry["client_dn"] == f"CN={IDENTITY}"
    assert entry["status"] == 200
    assert entry["tls"] == "TLSv1.3"


def test_client_cannot_claim_another_identity_in_a_header(
    start_sidecar: StartSidecar, certificates: Certificates, model: ModelServer, tmp_path: Path
) -> None:
    sidecar = start_sidecar()
    client = Client(tmp_path, certificates.ca.bundle_pem(), certificates.client)

    reply = client.get(
        sidecar.tls_port,
        headers={"X-Client-Identity": "admin.kube-system", "X_Client_Identity": "admin.kube-system"},
    )

    assert reply.status == 200, reply
    assert reply.json()["identity"] == [IDENTITY]
    assert reply.json()["underscored_identity"] is None


def test_no_client_certificate_is_refused(
    start_sidecar: StartSidecar, certificates: Certificates, model: ModelServer, tmp_path: Path
) -> None:
    sidecar = start_sidecar()
    assert_refused(Client(tmp_path, certificates.ca.bundle_pem()).get(sidecar.tls_port), model)


def test_certificate_from_another_ca_is_refused(
    start_sidecar: StartSidecar, certificates: Certificates, model: ModelServer, tmp_path: Path
) -> None:
    sidecar = start_sidecar()
    foreign_ca = pki.plan_ca(None, certificates.now - timedelta(days=1), ALGORITHM, timedelta(days=30)).state
    impostor = pki.issue_client_certificate(
        foreign_ca, IDENTITY, certificates.now, timedelta(days=1), ALGORITHM
    )

    reply = Client(tmp_path, certificates.ca.bundle_pem(), impostor).get(sidecar.tls_port)

    assert_refused(reply, model)


def test_expired_client_certificate_is_refused(
    start_sidecar: StartSidecar, certificates: Certificates, model: ModelServer, tmp_path: Path
) -> None:
    sidecar = start_sidecar()
    ten_days_ago = certificates.now - timedelta(days=10)
    expired = pki.issue_client_certificate(
        certificates.ca, IDENTITY, ten_days_ago, timedelta(days=1), ALGORITHM
    )

    reply = Client(tmp_path, certificates.ca.bundle_pem(), expired).get(sidecar.tls_port)

    assert_refused(reply, model)


def test_server_certificate_is_not_a_client_certificate(
    start_sidecar: StartSidecar, certificates: Certificates, model: ModelServer, tmp_path: Path
) -> None:
    sidecar = start_sidecar()
    reply = Client(tmp_path, certificates.ca.bundle_pem(), certificates.server).get(sidecar.tls_port)
    assert_refused(reply, model)


def test_undeclared_identity_is_forbidden(
    start_sidecar: StartSidecar, certificates: Certificates, model: ModelServer, tmp_path: Path
) -> None:
    sidecar = start_sidecar()
    stranger = pki.issue_client_certificate(
        certificates.ca, "scraper.ml-gw", certificates.now, timedelta(days=1), ALGORITHM
    )

    reply = Client(tmp_path, certificates.ca.bundle_pem(), stranger).get(sidecar.tls_port)

    assert reply.status == 403, reply
    assert model.seen == []


def test_without_declared_clients_everyone_is_forbidden(
    start_sidecar: StartSidecar, certificates: Certificates, model: ModelServer, tmp_path: Path
) -> None:
    sidecar = start_sidecar(identities=())
    reply = Client(tmp_path, certificates.ca.bundle_pem(), certificates.client).get(sidecar.tls_port)
    assert reply.status == 403, reply
    assert model.seen == []


@pytest.mark.parametrize(
    "subject",
    [
        [(NameOID.COMMON_NAME, IDENTITY.upper())],
        [(NameOID.COMMON_NAME, IDENTITY), (NameOID.ORGANIZATION_NAME, "system:masters")],
        [(NameOID.ORGANIZATION_NAME, "x"), (NameOID.COMMON_NAME, IDENTITY)],
        [(NameOID.COMMON_NAME, IDENTITY + "x")],
        [(NameOID.COMMON_NAME, "x" + IDENTITY)],
    ],
    ids=["other case", "extra attribute after", "extra attribute before", "longer", "prefixed"],
)
def test_subject_must_be_exactly_the_declared_identity(
    start_sidecar: StartSidecar,
    certificates: Certificates,
    model: ModelServer,
    tmp_path: Path,
    subject: list[tuple[x509.ObjectIdentifier, str]],
) -> None:
    sidecar = start_sidecar()
    name = x509.Name([x509.NameAttribute(oid, value) for oid, value in subject])
    lookalike = signed_by(certificates.ca, name, certificates)

    reply = Client(tmp_path, certificates.ca.bundle_pem(), lookalike).get(sidecar.tls_port)

    assert reply.status == 403, reply
    assert model.seen == []


# ------------------------------------------------------------------------------------ TLS versions


def test_tls_12_client_is_refused_by_default(
    start_sidecar: StartSidecar, certificates: Certificates, model: ModelServer, tmp_path: Path
) -> None:
    sidecar = start_sidecar()
    client = Client(
        tmp_path, certificates.ca.bundle_pem(), certificates.client, maximum_version=ssl.TLSVersion.TLSv1_2
    )

    reply = client.get(sidecar.tls_port)

    assert reply.error is not None and reply.status is None, reply
    assert model.seen == []


def test_tls_12_client_is_accepted_when_the_smd_allows_it(
    start_sidecar: StartSidecar, certificates: Certificates, model: ModelServer, tmp_path: Path
) -> None:
    sidecar = start_sidecar(min_tls_version="1.2")
    client = Client(
        tmp_path, certificates.ca.bundle_pem(), certificates.client, maximum_version=ssl.TLSVersion.TLSv1_2
    )

    reply = client.get(sidecar.tls_port)

    assert reply.status == 200, reply
    assert reply.tls_version == "TLSv1.2"
    assert reply.cipher in TLS12_CIPHERS
    assert reply.json()["identity"] == [IDENTITY]


def test_tls_12_without_an_aead_cipher_is_refused(
    start_sidecar: StartSidecar, certificates: Certificates, model: ModelServer, tmp_path: Path
) -> None:
    sidecar = start_sidecar(min_tls_version="1.2")
    client = Client(
        tmp_path,
        certificates.ca.bundle_pem(),
        certificates.client,
        maximum_version=ssl.TLSVersion.TLSv1_2,
        ciphers="ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA",
    )

    reply = client.get(sidecar.tls_port)

    assert reply.error is not None and reply.status is None, reply
    assert model.seen == []


def test_sessions_are_not_resumed(
    start_sidecar: StartSidecar, certificates: Certificates, model: ModelServer, tmp_path: Path
) -> None:
    sidecar = start_sidecar()
    client = Client(tmp_path, certificates.ca.bundle_pem(), certificates.client)

    first, second = client.get(sidecar.tls_port), client.get(sidecar.tls_port)

    assert first.status == second.status == 200
    assert not second.resumed


# --------------------------------------------------------------------------------------- rotation


def test_rotated_server_certificate_is_served_after_a_reload(
    start_sidecar: StartSidecar, certificates: Certificates, model: ModelServer, tmp_path: Path
) -> None:
    sidecar = start_sidecar()
    client = Client(tmp_path, certificates.ca.bundle_pem(), certificates.client)
    before = client.get(sidecar.tls_port)
    renewed = pki.issue_server_certificate(
        certificates.ca, SERVER_NAMES, certificates.now, timedelta(days=2), ALGORITHM
    )
    renewed_fingerprint = pki.certificate_info(renewed.cert_pem).sha256_fingerprint

    sidecar.install(renewed, certificates.ca.bundle_pem())
    sidecar.reload()
    after = wait_for_fingerprint(client, sidecar.tls_port, renewed_fingerprint)

    assert before.server_fingerprint == pki.certificate_info(certificates.server.cert_pem).sha256_fingerprint
    assert after.server_fingerprint == renewed_fingerprint
    assert after.status == 200, after
    assert after.json()["identity"] == [IDENTITY]


def test_ca_rotation_keeps_old_clients_working(
    start_sidecar: StartSidecar, certificates: Certificates, model: ModelServer, tmp_path: Path
) -> None:
    """A CA's whole rotation, replayed with injected clocks that end at the real now that nginx checks."""
    real_now = certificates.now
    lifetime = timedelta(days=30)
    old = pki.plan_ca(None, real_now - timedelta(days=27), ALGORITHM, lifetime).state
    old_client = pki.issue_client_certificate(
        old, IDENTITY, real_now - timedelta(days=8), lifetime, ALGORITHM
    )

    # Six days ago the old CA entered its renewal window: the next CA became trusted, not signing.
    rotating = pki.plan_ca(
        pki.ca_to_secret_data(old), real_now - timedelta(days=6), ALGORITHM, lifetime
    ).state
    assert rotating.pending is not None and rotating.pending_activates_at is not None
    assert rotating.signer == old.signer
    assert rotating.pending_activates_at < real_now - timedelta(days=1)

    # A day ago it activated; the old CA is still trusted, since it has not expired.
    rotated_plan = pki.plan_ca(
        pki.ca_to_secret_data(rotating), real_now - timedelta(days=1), ALGORITHM, lifetime
    )
    rotated = rotated_plan.state
    assert rotated.signer == rotating.pending
    assert old.signer.cert_pem in rotated.trusted
    server = pki.issue_server_certificate(
        rotated, SERVER_NAMES, real_now - timedelta(days=1), lifetime, ALGORITHM
    )
    new_client = pki.issue_client_certificate(
        rotated, IDENTITY, real_now - timedelta(days=1), lifetime, ALGORITHM
    )
    sidecar = start_sidecar(server=server, bundle=rotated.bundle_pem())

    with_old_cert = Client(tmp_path / "old", rotated.bundle_pem(), old_client).get(sidecar.tls_port)
    with_new_cert = Client(tmp_path / "new", rotated.bundle_pem(), new_client).get(sidecar.tls_port)
    # A client still holding the bundle from before the rotation began does not know the new CA.
    with_stale_bundle = Client(tmp_path / "stale", old.bundle_pem(), old_client).get(sidecar.tls_port)

    assert with_old_cert.status == 200, with_old_cert
    assert with_old_cert.server_fingerprint == pki.certificate_info(server.cert_pem).sha256_fingerprint
    assert with_old_cert.json()["identity"] == [IDENTITY]
    assert with_new_cert.status == 200, with_new_cert
    assert with_stale_bundle.error is not None and "CERTIFICATE_VERIFY_FAILED" in with_stale_bundle.error


def test_pending_ca_bundle_lets_clients_trust_the_next_ca_before_it_signs(
    start_sidecar: StartSidecar, certificates: Certificates, model: ModelServer, tmp_path: Path
) -> None:
    """Clients given the bundle during the overlap accept the server's certificate once the next CA signs."""
    real_now = certificates.now
    lifetime = timedelta(days=30)
    old = pki.plan_ca(None, real_now - timedelta(days=27), ALGORITHM, lifetime).state
    rotating = pki.plan_ca(
        pki.ca_to_secret_data(old), real_now - timedelta(days=6), ALGORITHM, lifetime
    ).state
    client_during_overlap = pki.issue_client_certificate(
        rotating, IDENTITY, real_now - timedelta(days=5), lifetime, ALGORITHM
    )
    rotated = pki.plan_ca(
        pki.ca_to_secret_data(rotating), real_now - timedelta(days=1), ALGORITHM, lifetime
    ).state
    server = pki.issue_server_certificate(
        rotated, SERVER_NAMES, real_now - timedelta(days=1), lifetime, ALGORITHM
    )
    sidecar = start_sidecar(server=server, bundle=rotated.bundle_pem())

    reply = Client(tmp_path, rotating.bundle_pem(), client_during_overlap).get(sidecar.tls_port)

    assert reply.status == 200, reply


# ------------------------------------------------------------------------------------------ health


def test_health_port(start_sidecar: StartSidecar, model: ModelServer) -> None:
    sidecar = start_sidecar()

    sidecar_status, sidecar_body = plain_get(sidecar.health_port, "/sidecar-healthz")
    model_status, model_body = plain_get(sidecar.health_port, "/healthz")
    other_statuses = [plain_get(sidecar.health_port, path)[0] for path in ("/", "/v1/predict", "/healthz/x")]

    assert (sidecar_status, sidecar_body) == (200, b"ok\n")
    assert model_status == 200
    assert json.loads(model_body) == {
        "path": MODEL_HEALTH_PATH,
        "identity": None,
        "underscored_identity": None,
    }
    assert other_statuses == [404, 404, 404]
    assert [request["path"] for request in model.seen] == [MODEL_HEALTH_PATH]


def test_liveness_reaches_the_models_own_path_and_readiness_stays_on_its_own(
    start_sidecar: StartSidecar, model: ModelServer
) -> None:
    sidecar = start_sidecar(liveness_path=MODEL_LIVENESS_PATH)

    live_status, live_body = plain_get(sidecar.health_port, "/livez")
    ready_status, ready_body = plain_get(sidecar.health_port, "/healthz")

    assert (live_status, json.loads(live_body)["path"]) == (200, MODEL_LIVENESS_PATH)
    assert (ready_status, json.loads(ready_body)["path"]) == (200, MODEL_HEALTH_PATH)
    assert [request["path"] for request in model.seen] == [MODEL_LIVENESS_PATH, MODEL_HEALTH_PATH]


def test_without_a_liveness_path_liveness_asks_the_readiness_path(
    start_sidecar: StartSidecar, model: ModelServer
) -> None:
    sidecar = start_sidecar()

    assert plain_get(sidecar.health_port, "/livez")[0] == 200
    assert [request["path"] for request in model.seen] == [MODEL_HEALTH_PATH]


# ------------------------------------------------------------------------------ read-only container


def test_large_requests_and_answers_pass_with_nginx_writing_only_to_the_temp_dir(
    start_sidecar: StartSidecar, certificates: Certificates, model: ModelServer, tmp_path: Path
) -> None:
    sidecar = start_sidecar()
    # Larger than nginx's in-memory buffers: they stream through, and what nginx keeps is in tmp_dir.
    payload = os.urandom(768 * 1024)
    client = Client(tmp_path, certificates.ca.bundle_pem(), certificates.client)

    reply = client.request(sidecar.tls_port, "POST", "/v1/predict", body=payload)

    assert reply.status == 200, reply
    assert reply.body == payload
    buffers = {entry.name for entry in Path(sidecar.paths.tmp_dir).iterdir()}
    assert {"client_body", "proxy", "nginx.pid"} <= buffers


@pytest.mark.parametrize(
    ("min_tls_version", "identities"),
    [("1.3", ()), ("1.2", tuple(f"client-{index}.namespace-{index}" for index in range(64)))],
    ids=["no clients", "64 clients with TLS 1.2"],
)
def test_nginx_accepts_the_rendered_configuration(
    start_sidecar: StartSidecar, min_tls_version: str, identities: tuple[str, ...]
) -> None:
    sidecar = start_sidecar(min_tls_version=min_tls_version, identities=identities, run=False)
    checked = sidecar.run("-t")
    assert checked.returncode == 0, checked.stderr
    assert "test is successful" in checked.stderr


def test_nginx_is_a_supported_version(nginx_binary: Path) -> None:
    """The sidecar image runs nginx 1.27; Debian's 1.22 is the oldest these tests are known to pass with."""
    reported = subprocess.run(
        [str(nginx_binary), "-v"], capture_output=True, text=True, check=True, env=nginx_environment()
    ).stderr
    print(reported.strip())  # shown with -rA: which nginx the handshakes were proven with
    version = tuple(int(part) for part in reported.split("nginx/")[1].split()[0].split("."))
    assert version >= (1, 22), reported
