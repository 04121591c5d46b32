"""The CA trusts only the CAs the operator made: the ledger of their fingerprints decides what is kept of
the CA Secret, whatever else was written into it."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest

from securemodels import pki
from securemodels.pki import CAState

T0 = datetime(2030, 1, 1, tzinfo=UTC)
LIFETIME = timedelta(days=90)
ECDSA: pki.KeyAlgorithm = "ECDSA-P256"
CERT, KEY, BUNDLE = pki.CERT_KEY, pki.PRIVATE_KEY_KEY, pki.CA_BUNDLE_KEY
NEXT_CERT, NEXT_KEY, NEXT_AT = pki.NEXT_CERT_KEY, pki.NEXT_PRIVATE_KEY_KEY, pki.NEXT_ACTIVATES_AT_KEY


def plan(data: Mapping[str, bytes] | None, at: datetime) -> CAState:
    return pki.plan_ca(data, at, ECDSA, LIFETIME).state


@pytest.fixture(scope="module")
def ca() -> CAState:
    return plan(None, T0)


@pytest.fixture(scope="module")
def intruder() -> CAState:
    """A CA someone else made, with its key."""
    return plan(None, T0)


@pytest.fixture(scope="module")
def rotating(ca: CAState) -> CAState:
    """The CA in its renewal window: the next CA is trusted, not yet signing."""
    state = plan(pki.ca_to_secret_data(ca), T0 + timedelta(days=61))
    assert state.pending is not None
    return state


@pytest.fixture(scope="module")
def rotated(rotating: CAState) -> CAState:
    """After the rotation: the next CA signs, the old one is still trusted until it expires."""
    state = plan(pki.ca_to_secret_data(rotating), T0 + timedelta(days=76))
    assert state.pending is None and len(state.trusted) == 2
    return state


def fingerprint(pem: bytes) -> str:
    return pki.certificate_info(pem).sha256_fingerprint


def test_the_ledger_holds_every_trusted_ca(rotating: CAState) -> None:
    assert pki.ledger_of(rotating) == {fingerprint(pem) for pem in rotating.trusted}
    assert fingerprint(rotating.signer.cert_pem) in pki.ledger_of(rotating)
    assert rotating.pending is not None
    assert fingerprint(rotating.pending.cert_pem) in pki.ledger_of(rotating)


def test_a_secret_the_ledger_knows_is_kept_as_it_is(rotating: CAState) -> None:
    data = pki.ca_to_secret_data(rotating)
    checked = pki.keep_known_cas(data, pki.ledger_of(rotating))

    assert (checked.data, checked.untrusted) == (data, ())


def test_a_ca_appended_to_the_bundle_is_removed_and_reported(ca: CAState, intruder: CAState) -> None:
    data = pki.ca_to_secret_data(ca)
    data[BUNDLE] += intruder.signer.cert_pem

    checked = pki.keep_known_cas(data, pki.ledger_of(ca))

    assert checked.untrusted == (fingerprint(intruder.signer.cert_pem),)
    assert checked.data == pki.ca_to_secret_data(ca)


def test_a_signer_swapped_in_is_dropped_and_a_new_ca_is_made(ca: CAState, intruder: CAState) -> None:
    data = {**pki.ca_to_secret_data(ca), CERT: intruder.signer.cert_pem, KEY: intruder.signer.key_pem}
    data[BUNDLE] += intruder.signer.cert_pem

    checked = pki.keep_known_cas(data, pki.ledger_of(ca))
    state = plan(checked.data, T0 + timedelta(days=1))

    assert checked.untrusted == (fingerprint(intruder.signer.cert_pem),)
    assert CERT not in checked.data and KEY not in checked.data
    assert checked.data[BUNDLE] == ca.signer.cert_pem
    assert state.signer.cert_pem not in (intruder.signer.cert_pem, ca.signer.cert_pem)
    assert fingerprint(intruder.signer.cert_pem) not in pki.ledger_of(state)


def test_a_next_ca_swapped_in_is_dropped_with_its_key_and_time(rotating: CAState, intruder: CAState) -> None:
    data = {
        **pki.ca_to_secret_data(rotating),
        NEXT_CERT: intruder.signer.cert_pem,
        NEXT_KEY: intruder.signer.key_pem,
    }

    checked = pki.keep_known_cas(data, pki.ledger_of(rotating))

    assert checked.untrusted == (fingerprint(intruder.signer.cert_pem),)
    assert {NEXT_CERT, NEXT_KEY, NEXT_AT} & set(checked.data) == set()
    assert checked.data[CERT] == rotating.signer.cert_pem


def test_a_bundle_of_strangers_falls_back_to_the_signer(ca: CAState, intruder: CAState) -> None:
    data = {**pki.ca_to_secret_data(ca), BUNDLE: intruder.signer.cert_pem}

    checked = pki.keep_known_cas(data, pki.ledger_of(ca))

    assert checked.data[BUNDLE] == ca.signer.cert_pem
    assert checked.untrusted == (fingerprint(intruder.signer.cert_pem),)


def test_an_unreadable_bundle_falls_back_to_the_signer(ca: CAState) -> None:
    data = {
        **pki.ca_to_secret_data(ca),
        BUNDLE: b"-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n",
    }

    checked = pki.keep_known_cas(data, pki.ledger_of(ca))

    assert checked.data[BUNDLE] == ca.signer.cert_pem
    assert checked.untrusted == ()


def test_without_a_ledger_the_signer_and_the_next_ca_are_adopted(rotating: CAState) -> None:
    data = pki.ca_to_secret_data(rotating)

    checked = pki.keep_known_cas(data, None)

    assert (checked.data, checked.untrusted) == (data, ())


def test_without_a_ledger_retired_cas_are_dropped(rotated: CAState) -> None:
    data = pki.ca_to_secret_data(rotated)
    retired = next(pem for pem in rotated.trusted if pem != rotated.signer.cert_pem)

    checked = pki.keep_known_cas(data, None)

    assert checked.untrusted == (fingerprint(retired),)
    assert checked.data[BUNDLE] == rotated.signer.cert_pem
    assert checked.data[CERT] == rotated.signer.cert_pem


def test_without_a_ledger_an_appended_ca_is_dropped(ca: CAState, intruder: CAState) -> None:
    data = pki.ca_to_secret_data(ca)
    data[BUNDLE] += intruder.signer.cert_pem

    assert pki.keep_known_cas(data, None).untrusted == (fingerprint(intruder.signer.cert_pem),)


def test_an_empty_ledger_trusts_nothing(ca: CAState) -> None:
    checked = pki.keep_known_cas(pki.ca_to_secret_data(ca), frozenset())

    assert checked.untrusted == (fingerprint(ca.signer.cert_pem),)
    assert checked.data == {BUNDLE: b""}


def test_an_empty_secret_has_nothing_to_check() -> None:
    assert pki.keep_known_cas({}, frozenset()) == pki.LedgerCheck({}, ())


def test_the_ledger_after_planning_holds_only_the_operators_cas(ca: CAState, intruder: CAState) -> None:
    data = pki.ca_to_secret_data(ca)
    data[BUNDLE] += intruder.signer.cert_pem

    state = plan(pki.keep_known_cas(data, pki.ledger_of(ca)).data, T0 + timedelta(days=1))

    assert pki.ledger_of(state) == pki.ledger_of(ca)


@pytest.mark.parametrize("broken", [BUNDLE, NEXT_AT], ids=["bundle removed", "next CA incomplete"])
def test_a_ca_hidden_behind_the_signer_is_never_trusted(ca: CAState, intruder: CAState, broken: str) -> None:
    """A second certificate in tls.crt, and the Secret made unreadable so that the CA is rebuilt from
    what it held: the stranger must neither be trusted nor enter the ledger."""
    data = pki.ca_to_secret_data(ca)
    data[CERT] = ca.signer.cert_pem + intruder.signer.cert_pem
    if broken == BUNDLE:
        del data[BUNDLE]
    else:
        data[NEXT_AT] = b"soon"

    checked = pki.keep_known_cas(data, pki.ledger_of(ca))
    state = plan(checked.data, T0 + timedelta(days=1))

    assert fingerprint(intruder.signer.cert_pem) not in pki.ledger_of(state)
    assert intruder.signer.cert_pem not in state.bundle_pem()
