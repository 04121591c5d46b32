"""Trust: getting a CA of one's own trusted by the models, or one's own certificate accepted.

Whoever can write the operator's CA Secret tries to slip their CA into what every model trusts: by
appending it to the bundle (once, then again), or by swapping in their own signer. Whoever can write in a
client's namespace tries the same with the trust bundle delivered there. The operator must report each
attempt, never hand the foreign CA to a sidecar or client, and never sign with it.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from security.attacks import (
    WITHIN_A_RESYNC,
    Authority,
    Model,
    attacker_ca,
    compliance,
    delete_namespaces,
    events,
    issuer_of,
    launch,
    new_namespace,
    patch,
    secret_bytes,
    smd_events,
    wait_compliant,
)
from support.kube import Kubectl, wait_for
from support.operator import RESYNC_SECONDS, RunningOperator
from support.paths import OPERATOR_NAMESPACE

pytestmark = pytest.mark.integration

CA_SECRET = "securemodels-ca"
CLIENT = "gateway"


@dataclass(frozen=True)
class Served:
    """A compliant model with one client, and where its trust bundles are."""

    model: Model
    clients: str  # the client's namespace

    def bundles(self, kubectl: Kubectl) -> dict[str, bytes]:
        """Every trust bundle the operator hands out for this model, and the server certificate."""
        server = kubectl.get("secret", f"{self.model.name}-tls", self.model.namespace)
        client = kubectl.get(
            "secret", f"{self.model.name}.{self.model.namespace}.client-{CLIENT}", self.clients
        )
        bundle = kubectl.get("configmap", f"{self.model.name}.{self.model.namespace}.ca-bundle", self.clients)
        return {
            "the model's ca.crt": secret_bytes(server, "ca.crt"),
            "the client's ca.crt": secret_bytes(client, "ca.crt"),
            "the client namespace's CA bundle": ((bundle or {}).get("data") or {}).get("ca.crt", "").encode(),
            "the model's tls.crt": secret_bytes(server, "tls.crt"),
        }


@pytest.fixture(scope="module")
def served(kubectl: Kubectl, operator: RunningOperator) -> Iterator[Served]:
    clients = new_namespace(kubectl, "tr-clients")
    (model,) = launch(kubectl, "tr", [{"mtls": {"clients": [{"name": CLIENT, "namespace": clients}]}}])
    wait_compliant(kubectl, [model])
    yield Served(model, clients)
    delete_namespaces(kubectl, [model.namespace, clients])


def _ca_secret(kubectl: Kubectl) -> dict[str, Any]:
    found = kubectl.get("secret", CA_SECRET, OPERATOR_NAMESPACE)
    assert found is not None
    return dict(found)


def _append(kubectl: Kubectl, authority: Authority) -> None:
    bundle = secret_bytes(_ca_secret(kubectl), "ca.crt") + authority.certificate_pem
    patch(
        kubectl,
        "secret",
        CA_SECRET,
        OPERATOR_NAMESPACE,
        {"data": {"ca.crt": base64.b64encode(bundle).decode()}},
    )


def _reports(kubectl: Kubectl, authority: Authority) -> list[Any]:
    """Warning Events on the CA Secret that name the certificate."""
    return [
        item
        for item in events(kubectl, OPERATOR_NAMESPACE, CA_SECRET, "Secret")
        if item["type"] == "Warning" and authority.fingerprint[:16] in item["message"]
    ]


def _never_handed_out(kubectl: Kubectl, served: Served, authority: Authority, seconds: float) -> None:
    """Watch every bundle and the server certificate for `seconds`: the foreign CA is in none of them."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for where, content in served.bundles(kubectl).items():
            assert authority.certificate_pem not in content, f"the attacker's CA is in {where}"
            if where == "the model's tls.crt" and content:
                assert issuer_of(content) != authority.common_name, (
                    "the attacker's CA signed the model's certificate"
                )
        time.sleep(0.2)


def test_a_ca_certificate_appended_to_the_ca_secret_is_reported_and_never_trusted(
    kubectl: Kubectl, served: Served
) -> None:
    authority = attacker_ca("appended-ca")
    ours = secret_bytes(_ca_secret(kubectl), "tls.crt")
    assert ours in served.bundles(kubectl)["the model's ca.crt"]  # what the bundle holds is the operator's CA

    _append(kubectl, authority)

    wait_for(lambda: _reports(kubectl, authority), timeout=WITHIN_A_RESYNC, what="the CA Secret's Event")
    _never_handed_out(kubectl, served, authority, 2 * RESYNC_SECONDS)
    assert authority.certificate_pem not in secret_bytes(_ca_secret(kubectl), "ca.crt"), (
        "it stays in the Secret"
    )
    assert ours in served.bundles(kubectl)["the model's ca.crt"]


def test_the_same_ca_certificate_appended_again_is_reported_again(kubectl: Kubectl, served: Served) -> None:
    authority = attacker_ca("persistent-ca")
    _append(kubectl, authority)
    wait_for(lambda: _reports(kubectl, authority), timeout=WITHIN_A_RESYNC, what="the first report")
    wait_for(
        lambda: authority.certificate_pem not in secret_bytes(_ca_secret(kubectl), "ca.crt"),
        timeout=WITHIN_A_RESYNC,
        what="the certificate removed",
    )

    _append(kubectl, authority)  # the attacker tries again, as often as it takes

    try:
        wait_for(
            lambda: len(_reports(kubectl, authority)) >= 2, timeout=WITHIN_A_RESYNC, what="a second report"
        )
    except AssertionError:
        removed = authority.certificate_pem not in secret_bytes(_ca_secret(kubectl), "ca.crt")
        raise AssertionError(
            f"the second attempt was not reported (removed from the Secret: {removed}); "
            f"reports: {[item['message'] for item in _reports(kubectl, authority)]}"
        ) from None
    _never_handed_out(kubectl, served, authority, RESYNC_SECONDS)


def test_a_signer_swapped_into_the_ca_secret_is_reported_and_never_signs(
    kubectl: Kubectl, served: Served, operator: RunningOperator
) -> None:
    authority = attacker_ca("swapped-signer")
    encoded = {
        key: base64.b64encode(value).decode()
        for key, value in (
            ("tls.crt", authority.certificate_pem),
            ("tls.key", authority.key_pem),
            ("ca.crt", authority.certificate_pem),
        )
    }

    patch(kubectl, "secret", CA_SECRET, OPERATOR_NAMESPACE, {"data": encoded})

    wait_for(lambda: _reports(kubectl, authority), timeout=WITHIN_A_RESYNC, what="the CA Secret's Event")
    _never_handed_out(kubectl, served, authority, 2 * RESYNC_SECONDS)
    assert issuer_of(secret_bytes(_ca_secret(kubectl), "tls.crt")) != authority.common_name
    wait_compliant(kubectl, [served.model], timeout=60)  # served again, by a CA of the operator's


def test_a_trust_bundle_rewritten_in_the_clients_namespace_is_reported_and_restored(
    kubectl: Kubectl, served: Served, operator: RunningOperator
) -> None:
    """A client that trusts the attacker's CA would talk to an impostor as if it were the model."""
    authority = attacker_ca("client-side-ca")
    name = f"{served.model.name}.{served.model.namespace}.client-{CLIENT}"
    wait_compliant(kubectl, [served.model], timeout=60)
    failures = len(smd_events(kubectl, served.model, "ControlFail"))

    patch(
        kubectl,
        "secret",
        name,
        served.clients,
        {"data": {"ca.crt": base64.b64encode(authority.certificate_pem).decode()}},
    )

    def reported() -> bool:
        verdict = kubectl.control(kubectl.get("smd", served.model.name, served.model.namespace), "mtls") or {}
        return verdict.get("status") == "Fail" and name in verdict.get("message", "")

    wait_for(
        reported,
        timeout=WITHIN_A_RESYNC + RESYNC_SECONDS,
        interval=0.1,
        what="mtls Fail naming the client Secret",
    )
    assert compliance(operator, served.model, "mtls") == 0.0
    wait_for(
        lambda: authority.certificate_pem not in served.bundles(kubectl)["the client's ca.crt"],
        timeout=WITHIN_A_RESYNC,
        what="the bundle restored",
    )
    assert len(smd_events(kubectl, served.model, "ControlFail")) > failures
    wait_compliant(kubectl, [served.model], timeout=WITHIN_A_RESYNC * 2)
