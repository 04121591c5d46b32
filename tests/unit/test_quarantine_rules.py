"""Quarantine: what the pure layers make of spec.quarantine (network policy, sidecar flag, verdicts,
status and Events)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from securemodels.api.v1alpha1 import SecureModelDeploymentStatus
from securemodels.desired import status
from securemodels.desired.controls import mtls, network
from securemodels.desired.model import Manifest
from securemodels.desired.nginx import QUARANTINE_FILE
from unit.builders import NOW, altered, certificate, context, find, observe
from unit.test_status import results, rolled_out

INCIDENT: dict[str, Any] = {"quarantine": {"reason": "INC-4711: prompt exfiltration suspected"}}
OPEN: dict[str, Any] = {
    "network": {
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "fraud"}}}]}],
        "egress": [{"to": [{"cidr": "0.0.0.0/1"}, {"cidr": "128.0.0.0/1"}], "ports": [{"port": 443}]}],
        "allowEgressToAnywhere": True,
    },
    "model": {"metricsPort": 9090},
}


def test_the_policy_admits_nothing_in_or_out_not_even_dns() -> None:
    spec = network.policy_spec(context(**OPEN, **INCIDENT))

    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in spec and "egress" not in spec
    assert spec["podSelector"] == network.policy_spec(context(**OPEN))["podSelector"]


def test_a_quarantined_model_has_no_weakening_whatever_the_spec_opted_in_to() -> None:
    assert network.weakenings(context(**OPEN)) != ()
    assert network.weakenings(context(**OPEN, **INCIDENT)) == ()


def test_the_deny_all_policy_passes_and_says_so() -> None:
    ctx = context(**OPEN, **INCIDENT)
    result = network.check(ctx, observe(ctx))

    assert (result.status, result.reason) == ("Pass", "Quarantined")


def test_a_policy_that_still_allows_traffic_fails_during_the_quarantine() -> None:
    ctx = context(**OPEN, **INCIDENT)

    def reopen(policy: Manifest) -> None:
        policy["spec"]["ingress"] = [{"ports": [{"port": 8443, "protocol": "TCP"}]}]

    result = network.check(ctx, altered(observe(ctx), "NetworkPolicy", reopen))

    assert result.status == "Fail"
    assert "still allows traffic during the quarantine" in result.message


def test_the_sidecar_config_map_carries_the_flag_nginx_looks_for() -> None:
    quarantined = mtls.sidecar_config_map(context(**INCIDENT))["data"]
    normal = mtls.sidecar_config_map(context())["data"]

    assert quarantined[QUARANTINE_FILE] == INCIDENT["quarantine"]["reason"]
    assert QUARANTINE_FILE not in normal
    # The same nginx.conf, so the pods' config hash does not move and nothing restarts.
    assert quarantined["nginx.conf"] == normal["nginx.conf"]


def test_nginx_refuses_every_request_while_the_flag_file_exists() -> None:
    conf = mtls.nginx_conf(context())

    assert f"if (-f {mtls.CONFIG_DIR}/{QUARANTINE_FILE}) {{\n            return 403;" in conf


def test_mtls_fails_when_the_flag_is_taken_out_during_the_quarantine() -> None:
    ctx = context(**INCIDENT)

    def drop_flag(config_map: Manifest) -> None:
        del config_map["data"][QUARANTINE_FILE]

    assert mtls.check(ctx, observe(ctx)).status == "Pass"
    result = mtls.check(ctx, altered(observe(ctx), "ConfigMap", drop_flag, ctx.names.sidecar_config.name))
    assert result.status == "Fail"
    assert "does not tell the sidecar to refuse clients" in result.message


def _status(phase_summary: status.Summary, previous: Any = None, **spec: Any) -> Any:
    ctx = context(now=NOW + timedelta(hours=1) if previous else NOW, **spec)
    return status.build_status(
        ctx,
        results(),
        phase_summary,
        previous or SecureModelDeploymentStatus(),
        rolled_out(),
        certificate(),
    )


def test_quarantine_is_a_phase_with_the_reason_and_one_warning_each_way() -> None:
    ready = _status(status.Summary("Ready", "Available", "1/1 replicas available"))
    summary = status.quarantined(context(**INCIDENT))
    frozen = _status(summary, ready, **INCIDENT)
    lifted = _status(status.Summary("Ready", "Available", "1/1 replicas available"), frozen)

    assert frozen.phase == "Quarantined"
    assert INCIDENT["quarantine"]["reason"] in summary.message
    assert [(e.type, e.reason) for e in status.transitions(ready, frozen)] == [("Warning", "Quarantined")]
    assert status.transitions(frozen, _status(summary, frozen, **INCIDENT)) == []
    assert [(e.type, e.reason) for e in status.transitions(frozen, lifted)] == [
        ("Normal", "QuarantineLifted")
    ]


def test_the_built_objects_of_a_quarantined_model_keep_its_deployment_as_it_would_be() -> None:
    """The builder still describes the whole model (the reconciler writes only the policy and the
    ConfigMap during a quarantine): lifting it restores exactly what was there."""
    normal = find(observe(context()).objects.values(), "Deployment")
    frozen = find(observe(context(**INCIDENT)).objects.values(), "Deployment")

    assert normal["spec"] == frozen["spec"]
