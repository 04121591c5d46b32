"""mTLS on the real control plane: certificates delivered, rotated under an injected clock, the CA
repaired, and key material kept out of status, Events, logs and metrics."""

from __future__ import annotations

import base64
import json
import logging
import re
from datetime import datetime, timedelta
from typing import Any

import pytest

from support.kube import Kubectl, wait_for
from support.manifests import smd
from support.operator import FakeClock, RunningOperator
from support.paths import OPERATOR_NAMESPACE

pytestmark = pytest.mark.integration
ANNOTATION = "securemodels.io/certificate-sha256"


def wait_ready(kubectl: Kubectl, name: str, namespace: str) -> dict[str, Any]:
    def ready_status() -> dict[str, Any] | None:
        found = kubectl.status(name, namespace)
        return found if found.get("phase") == "Ready" else None

    return wait_for(
        ready_status,
        timeout=60,
        what=f"{name} Ready",
    )


def secret_data(kubectl: Kubectl, name: str, namespace: str) -> dict[str, bytes]:
    found = kubectl.get("secret", name, namespace)
    return {key: base64.b64decode(value) for key, value in (found or {}).get("data", {}).items()}


def template_fingerprint(kubectl: Kubectl, name: str, namespace: str) -> str:
    deployment = kubectl.get("deployment", name, namespace)
    return str(deployment["spec"]["template"]["metadata"]["annotations"][ANNOTATION])


@pytest.fixture
def client_namespace(kubectl: Kubectl, namespace: str) -> str:
    name = f"{namespace}-gw"
    kubectl("create", "namespace", name)
    return name


def test_certificates_and_bundles_are_delivered_owned_and_labelled(
    kubectl: Kubectl, namespace: str, client_namespace: str, operator: RunningOperator
) -> None:
    kubectl.apply(smd("tls", namespace, mtls={"clients": [{"name": "gw", "namespace": client_namespace}]}))

    found = wait_ready(kubectl, "tls", namespace)

    smd_uid = kubectl.get("smd", "tls", namespace)["metadata"]["uid"]
    for kind, name in (("secret", "tls-tls"), ("configmap", "tls-sidecar")):
        item = kubectl.get(kind, name, namespace)
        assert [ref["uid"] for ref in item["metadata"]["ownerReferences"]] == [smd_uid]
        assert item["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "secure-model-operator"
    for kind, name in (("secret", f"tls.{namespace}.client-gw"), ("configmap", f"tls.{namespace}.ca-bundle")):
        labels = kubectl.get(kind, name, client_namespace)["metadata"]["labels"]
        assert labels["securemodels.io/owner-uid"] == smd_uid
        assert labels["securemodels.io/owner-namespace"] == namespace
        assert labels["securemodels.io/owner-name"] == "tls"
    server = secret_data(kubectl, "tls-tls", namespace)
    client = secret_data(kubectl, f"tls.{namespace}.client-gw", client_namespace)
    assert server["ca.crt"] == client["ca.crt"]
    assert b"BEGIN CERTIFICATE" in client["tls.crt"]
    assert found["certificate"]["sha256Fingerprint"] == template_fingerprint(kubectl, "tls", namespace)
    mtls_ready = kubectl.condition(kubectl.get("smd", "tls", namespace), "MTLSReady")
    assert mtls_ready is not None and mtls_ready["status"] == "True"
    expiry = operator.metric(
        "securemodels_certificate_expiry_timestamp_seconds", namespace=namespace, name="tls"
    )
    not_after = datetime.fromisoformat(found["certificate"]["notAfter"].replace("Z", "+00:00"))
    assert expiry == not_after.timestamp()


def test_removing_a_client_removes_its_secret_and_bundle(
    kubectl: Kubectl, namespace: str, client_namespace: str, operator: RunningOperator
) -> None:
    clients = [
        {"name": "gw", "namespace": client_namespace},
        {"name": "batch", "namespace": client_namespace},
    ]
    kubectl.apply(smd("two", namespace, mtls={"clients": clients}))
    wait_ready(kubectl, "two", namespace)
    assert kubectl.get("secret", f"two.{namespace}.client-batch", client_namespace) is not None

    kubectl.apply(smd("two", namespace, mtls={"clients": clients[:1]}))

    wait_for(
        lambda: kubectl.get("secret", f"two.{namespace}.client-batch", client_namespace) is None, what="gone"
    )
    assert kubectl.get("secret", f"two.{namespace}.client-gw", client_namespace) is not None
    assert kubectl.get("configmap", f"two.{namespace}.ca-bundle", client_namespace) is not None

    kubectl.apply(smd("two", namespace, mtls={"clients": []}))

    wait_for(
        lambda: kubectl.get("configmap", f"two.{namespace}.ca-bundle", client_namespace) is None, what="gone"
    )
    assert kubectl.get("secret", f"two.{namespace}.client-gw", client_namespace) is None


def test_a_missing_client_namespace_is_named_while_other_clients_get_certificates(
    kubectl: Kubectl, namespace: str, client_namespace: str, operator: RunningOperator
) -> None:
    clients = [
        {"name": "gw", "namespace": client_namespace},
        {"name": "ghost", "namespace": "no-such-namespace"},
    ]
    kubectl.apply(smd("partial", namespace, mtls={"clients": clients}))

    wait_for(
        lambda: kubectl.status("partial", namespace).get("phase") == "Degraded", timeout=60, what="Degraded"
    )

    ready = kubectl.condition(kubectl.get("smd", "partial", namespace), "Ready")
    assert ready is not None
    assert ready["reason"] == "ClientNamespaceMissing"
    assert "no-such-namespace" in ready["message"]
    assert wait_for(lambda: kubectl.get("secret", f"partial.{namespace}.client-gw", client_namespace))


def test_renewal_under_an_injected_clock_rolls_the_pods(
    kubectl: Kubectl, namespace: str, client_namespace: str, operator: RunningOperator, clock: FakeClock
) -> None:
    kubectl.apply(
        smd(
            "rotating",
            namespace,
            mtls={"certificateDuration": "3h", "clients": [{"name": "gw", "namespace": client_namespace}]},
        )
    )
    before = wait_ready(kubectl, "rotating", namespace)["certificate"]
    old_client = secret_data(kubectl, f"rotating.{namespace}.client-gw", client_namespace)["tls.crt"]
    generation = kubectl.get("deployment", "rotating", namespace)["metadata"]["generation"]

    clock.advance(timedelta(hours=2, minutes=5))  # inside the last third of a 3h certificate

    after = wait_for(
        lambda: (
            (found := kubectl.status("rotating", namespace).get("certificate", {})).get("serialNumber")
            != before["serialNumber"]
            and found
        ),
        what="a renewed certificate",
    )
    assert after["sha256Fingerprint"] == wait_for(
        lambda: (
            (fp := template_fingerprint(kubectl, "rotating", namespace)) == after["sha256Fingerprint"] and fp
        ),
        what="the pod template to carry the new fingerprint",
    )
    assert kubectl.get("deployment", "rotating", namespace)["metadata"]["generation"] > generation
    assert secret_data(kubectl, f"rotating.{namespace}.client-gw", client_namespace)["tls.crt"] != old_client
    events = [item for item in kubectl.items("event", namespace) if item["reason"] == "CertificateIssued"]
    assert any("due for renewal" in item["message"] for item in events)


def ca_events(kubectl: Kubectl) -> list[dict[str, Any]]:
    return [
        item
        for item in kubectl.items("event", OPERATOR_NAMESPACE)
        if item["involvedObject"]["name"] == "securemodels-ca" and item["reason"] == "CAReplaced"
    ]


def test_a_ca_certificate_edited_into_garbage_is_replaced_with_overlap(
    kubectl: Kubectl, namespace: str, operator: RunningOperator
) -> None:
    kubectl.apply(smd("overlap", namespace))
    before = wait_ready(kubectl, "overlap", namespace)["certificate"]
    bundle_before = secret_data(kubectl, "overlap-tls", namespace)["ca.crt"]
    warnings_before = len(ca_events(kubectl))

    garbage = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nnot a certificate\n").decode()
    kubectl(
        "patch",
        "secret",
        "securemodels-ca",
        "-n",
        OPERATOR_NAMESPACE,
        "-p",
        json.dumps({"data": {"tls.crt": garbage}}),
    )

    # The bundle still names the old CA, so certificates it signed stay valid while a new CA joins.
    wait_for(lambda: len(ca_events(kubectl)) > warnings_before, what="a CAReplaced Warning")

    def new_bundle() -> bytes | None:
        found = secret_data(kubectl, "overlap-tls", namespace)["ca.crt"]
        return found if found != bundle_before else None

    bundle = wait_for(new_bundle, what="the new CA in the model's bundle")
    assert bundle.count(b"BEGIN CERTIFICATE") == 2
    assert bundle_before in bundle
    assert b"not a certificate" not in secret_data(kubectl, "securemodels-ca", OPERATOR_NAMESPACE)["tls.crt"]
    assert kubectl.status("overlap", namespace)["certificate"]["serialNumber"] == before["serialNumber"]
    wait_ready(kubectl, "overlap", namespace)


def test_a_ca_secret_wiped_into_garbage_gets_a_new_ca_and_every_certificate_reissued(
    kubectl: Kubectl, namespace: str, operator: RunningOperator
) -> None:
    kubectl.apply(smd("trusting", namespace))
    before = wait_ready(kubectl, "trusting", namespace)["certificate"]
    warnings_before = len(ca_events(kubectl))

    garbage = base64.b64encode(b"garbage").decode()
    wiped = {"data": {"tls.crt": garbage, "tls.key": garbage, "ca.crt": garbage}}
    kubectl("patch", "secret", "securemodels-ca", "-n", OPERATOR_NAMESPACE, "-p", json.dumps(wiped))

    wait_for(
        lambda: (
            kubectl.status("trusting", namespace).get("certificate", {}).get("serialNumber")
            != before["serialNumber"]
        ),
        what="a certificate from the new CA",
    )
    assert len(ca_events(kubectl)) > warnings_before
    replaced = [item for item in kubectl.items("event", namespace) if item["reason"] == "CertificateReplaced"]
    assert any(
        item["type"] == "Warning" and "not issued by a trusted CA" in item["message"] for item in replaced
    )
    wait_ready(kubectl, "trusting", namespace)


def test_private_keys_never_appear_in_status_events_logs_or_metrics(
    kubectl: Kubectl,
    namespace: str,
    client_namespace: str,
    operator: RunningOperator,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    kubectl.apply(
        smd(
            "secretive",
            namespace,
            mtls={"certificateDuration": "3h", "clients": [{"name": "gw", "namespace": client_namespace}]},
        )
    )
    first = wait_ready(kubectl, "secretive", namespace)["certificate"]
    clock.advance(timedelta(hours=2, minutes=5))  # a renewal too, so keys are issued while we listen
    wait_for(
        lambda: (
            kubectl.status("secretive", namespace).get("certificate", {}).get("serialNumber")
            != first["serialNumber"]
        )
    )

    keys = [
        secret_data(kubectl, "secretive-tls", namespace)["tls.key"],
        secret_data(kubectl, f"secretive.{namespace}.client-gw", client_namespace)["tls.key"],
        secret_data(kubectl, "securemodels-ca", OPERATOR_NAMESPACE)["tls.key"],
    ]
    # The base64 body of each PEM key, in 40-character slices: any of them leaking is a failure.
    fragments = [
        line
        for key in keys
        for line in re.findall(r"[A-Za-z0-9+/=]{40}", b"".join(key.splitlines()[1:-1]).decode())
    ]
    assert fragments
    places = {
        "status": json.dumps(kubectl.get("smd", None, None, "-A")),
        "events": json.dumps(kubectl.get("events", None, None, "-A")),
        "logs": "\n".join(record.getMessage() for record in caplog.records),
        "metrics": operator.http("/metrics")[1],
    }
    assert "CertificateIssued" in places["events"]
    assert "issued the server certificate" in places["logs"]
    for place, text in places.items():
        assert "PRIVATE KEY" not in text, place
        assert not [fragment for fragment in fragments if fragment in text], place
