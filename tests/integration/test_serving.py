"""spec.serving on the real API server and operator: bad values refused at admission with the field named,
good ones rendered into the sidecar, and a log turned off reported as a weakening."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from support.kube import Kubectl, wait_for
from support.manifests import smd
from support.operator import RunningOperator
from unit.test_api_validation import CASES, Case

pytestmark = pytest.mark.integration

SERVING_CASES = [case for case in CASES if case.rule.message.startswith("spec.serving")]
# Bounds the schema itself enforces (types, ranges, patterns), beside the CEL rules above.
SCHEMA_REFUSALS: list[tuple[str, dict[str, Any], str]] = [
    ("rate of zero", {"rateLimit": {"requestsPerSecond": 0}}, "spec.serving.rateLimit.requestsPerSecond"),
    (
        "rate too high",
        {"rateLimit": {"requestsPerSecond": 10001}},
        "spec.serving.rateLimit.requestsPerSecond",
    ),
    ("negative burst", {"rateLimit": {"requestsPerSecond": 5, "burst": -1}}, "spec.serving.rateLimit.burst"),
    ("rate without requests", {"rateLimit": {"burst": 5}}, "spec.serving.rateLimit.requestsPerSecond"),
    ("unknown protocol", {"protocol": "HTTP2"}, "spec.serving.protocol"),
    ("log setting not a boolean", {"accessLog": "off"}, "spec.serving.accessLog"),
    ("size in decimal units", {"maxRequestBodySize": "64MB"}, "spec.serving.maxRequestBodySize"),
    ("timeout in days", {"responseTimeout": "1d"}, "spec.serving.responseTimeout"),
    ("health port out of range", {"healthPort": 70000}, "spec.serving.healthPort"),
]


def dry_run(kubectl: Kubectl, manifest: dict[str, Any]) -> tuple[int, str]:
    result = kubectl.run("apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(manifest))
    return result.returncode, result.stderr


@pytest.mark.parametrize("case", SERVING_CASES, ids=[case.name for case in SERVING_CASES])
def test_the_api_server_runs_every_serving_rule(kubectl: Kubectl, namespace: str, case: Case) -> None:
    refused, message = dry_run(kubectl, smd("door", namespace, **case.broken))
    accepted, accepted_message = dry_run(kubectl, smd("door", namespace, **case.kept))

    assert refused != 0
    assert case.rule.message in message
    assert accepted == 0, accepted_message


@pytest.mark.parametrize(
    ("serving", "field"), [item[1:] for item in SCHEMA_REFUSALS], ids=[item[0] for item in SCHEMA_REFUSALS]
)
def test_out_of_bounds_serving_values_are_refused_naming_the_field(
    kubectl: Kubectl, namespace: str, serving: dict[str, Any], field: str
) -> None:
    refused, message = dry_run(kubectl, smd("door", namespace, serving=serving))

    assert refused != 0
    assert field in message


def test_defaults_are_filled_in_by_the_api_server(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(smd("defaults", namespace))

    stored = kubectl.get("smd", "defaults", namespace)

    assert stored is not None
    assert stored["spec"]["serving"] == {
        "protocol": "HTTP",
        "maxRequestBodySize": "64Mi",
        "responseTimeout": "5m",
        "accessLog": True,
    }


def test_serving_reaches_the_sidecar_and_a_silent_log_is_a_reported_weakening(
    kubectl: Kubectl, namespace: str, operator: RunningOperator
) -> None:
    serving = {
        "protocol": "GRPC",
        "healthPort": 8000,
        "maxRequestBodySize": "1Gi",
        "rateLimit": {"requestsPerSecond": 50, "burst": 100},
        "accessLog": False,
    }
    kubectl.apply(smd("triton", namespace, model={"port": 8001}, serving=serving))

    wait_for(
        lambda: kubectl.status("triton", namespace).get("phase") == "Ready", timeout=60, what="triton Ready"
    )

    conf = kubectl.get("configmap", "triton-sidecar", namespace)["data"]["nginx.conf"]
    assert "listen 8443 ssl http2;" in conf
    assert "grpc_pass grpc://securemodels_model;" in conf
    assert f"client_max_body_size {1 << 30};" in conf
    assert "limit_req zone=securemodels_clients burst=100 nodelay;" in conf
    assert "access_log /dev/stdout" not in conf
    found = kubectl.get("smd", "triton", namespace)
    mtls = kubectl.control(found, "mtls")
    assert mtls is not None
    assert (mtls["status"], mtls["reason"]) == ("Weakened", "AccessLogOff")
    assert "spec.serving.accessLog" in mtls["message"]
    weakened = operator.metric(
        "securemodels_control_weakened",
        namespace=namespace,
        name="triton",
        control="mtls",
        weakening="AccessLogOff",
    )
    assert weakened == 1.0
