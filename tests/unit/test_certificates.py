"""Certificate planning: keep what is still good, issue the rest, and say when to look again."""

from __future__ import annotations

from datetime import timedelta

import pytest

from securemodels import pki
from securemodels.config import OperatorConfig
from securemodels.desired import certificates
from securemodels.desired.controls import mtls
from unit.builders import NOW, context

CA_LIFETIME = timedelta(days=365)
GATEWAY = "gateway.ml-gw"


@pytest.fixture(scope="module")
def ca() -> pki.CAState:
    return pki.plan_ca(None, NOW - timedelta(days=1), "ECDSA-P256", CA_LIFETIME).state


def server_info(plan: certificates.CertificatePlan) -> pki.CertificateInfo:
    assert plan.server.pair is not None
    return pki.certificate_info(plan.server.pair.cert_pem)


def test_lifetimes_default_to_renewing_a_third_before_expiry() -> None:
    assert certificates.lifetimes(context()) == (timedelta(hours=24), timedelta(hours=8))
    assert certificates.lifetimes(context(mtls={"certificateDuration": "90m"})) == (
        timedelta(minutes=90),
        timedelta(minutes=30),
    )


def test_lifetimes_honour_renew_before() -> None:
    assert certificates.lifetimes(context(mtls={"certificateDuration": "48h", "renewBefore": "2h30m"})) == (
        timedelta(hours=48),
        timedelta(hours=2, minutes=30),
    )


def test_first_plan_issues_the_server_and_every_client(ca: pki.CAState) -> None:
    ctx = context()
    plan = certificates.plan(ctx, ca, None, {GATEWAY: None})
    server = server_info(plan)
    client = pki.certificate_info(plan.clients[GATEWAY].cert_pem)

    assert plan.issued == (
        "issued the server certificate (missing)",
        f"issued the client certificate {GATEWAY} (missing)",
    )
    assert server.dns_names == tuple(mtls.dns_names(ctx))
    assert client.common_name == GATEWAY
    assert plan.server.bundle_pem == ca.bundle_pem()
    assert plan.server.fingerprint == server.sha256_fingerprint


def test_valid_certificates_are_kept(ca: pki.CAState) -> None:
    first = certificates.plan(context(), ca, None, {GATEWAY: None})
    later = context(now=NOW + timedelta(hours=10))
    again = certificates.plan(later, ca, first.server.pair, first.clients)

    assert again.issued == ()
    assert again.server == first.server
    assert again.clients == first.clients


def test_expiring_certificates_are_reissued(ca: pki.CAState) -> None:
    first = certificates.plan(context(), ca, None, {GATEWAY: None})
    later = context(now=NOW + timedelta(hours=17))
    again = certificates.plan(later, ca, first.server.pair, first.clients)

    assert [note.split(" (")[0] for note in again.issued] == [
        "issued the server certificate",
        f"issued the client certificate {GATEWAY}",
    ]
    assert all("due for renewal" in note for note in again.issued)
    assert again.server.fingerprint != first.server.fingerprint
    assert again.clients[GATEWAY] != first.clients[GATEWAY]


def test_only_the_certificates_that_are_due_are_reissued(ca: pki.CAState) -> None:
    first = certificates.plan(context(), ca, None, {GATEWAY: None})
    second = certificates.plan(
        context(now=NOW + timedelta(hours=12)),
        ca,
        first.server.pair,
        {**first.clients, "batch.ml-jobs": None},
    )
    third = certificates.plan(context(now=NOW + timedelta(hours=17)), ca, second.server.pair, second.clients)

    assert second.issued == ("issued the client certificate batch.ml-jobs (missing)",)
    assert [note.split(" (")[0] for note in third.issued] == [
        "issued the server certificate",
        f"issued the client certificate {GATEWAY}",
    ]
    assert third.clients["batch.ml-jobs"] == second.clients["batch.ml-jobs"]


def test_a_server_certificate_for_other_names_is_reissued(ca: pki.CAState) -> None:
    first = certificates.plan(context(), ca, None, {})
    same_names = certificates.plan(context(model={"replicas": 2}), ca, first.server.pair, {})
    renamed = certificates.plan(
        context(config=OperatorConfig(cluster_domain="corp")), ca, first.server.pair, {}
    )

    assert same_names.issued == ()
    assert renamed.replaced == ("issued the server certificate (names changed)",)


def test_next_renewal_is_the_earliest_due_date(ca: pki.CAState) -> None:
    first = certificates.plan(context(), ca, None, {})
    later = certificates.plan(context(now=NOW + timedelta(hours=6)), ca, first.server.pair, {GATEWAY: None})
    server_expiry = server_info(first).not_after

    assert first.next_renewal == server_expiry - timedelta(hours=8)
    assert later.next_renewal == first.next_renewal


def test_next_renewal_follows_renew_before(ca: pki.CAState) -> None:
    plan = certificates.plan(context(mtls={"renewBefore": "1h"}), ca, None, {})
    expiry = server_info(plan).not_after

    assert plan.next_renewal == expiry - timedelta(hours=1)


def test_a_certificate_from_another_ca_is_reissued(ca: pki.CAState) -> None:
    other = pki.plan_ca(None, NOW - timedelta(days=1), "ECDSA-P256", CA_LIFETIME).state
    foreign = certificates.plan(context(), other, None, {GATEWAY: None})
    plan = certificates.plan(context(), ca, foreign.server.pair, foreign.clients)

    assert plan.issued == ()
    assert plan.replaced == (
        "issued the server certificate (not issued by a trusted CA)",
        f"issued the client certificate {GATEWAY} (not issued by a trusted CA)",
    )
