"""From verdicts and the live workload to the SMD's status, its conditions and the Events worth sending."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from securemodels.api.v1alpha1 import SecureModelDeploymentStatus
from securemodels.desired import status
from securemodels.desired.controls import image_digest, mtls, network
from securemodels.desired.model import Blocker, ControlResult, ControlStatus, Facts, Manifest
from unit.builders import IMAGE, NOW, certificate, context, observe, tampered

CONTROL_NAMES = [
    "image-digest",
    "network-isolation",
    "mtls",
    "rbac",
    "storage-encryption",
    "data-residency",
    "pod-security",
]
CONDITIONS = {
    "image-digest": "ImagePinned",
    "network-isolation": "NetworkIsolated",
    "mtls": "MTLSReady",
    "rbac": "LeastPrivilege",
    "storage-encryption": "StorageEncrypted",
    "data-residency": "ResidencyEnforced",
    "pod-security": "PodHardened",
}
# metav1.Condition's validation of reason: tools such as kstatus and Argo CD expect it.
CONDITION_REASON = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
READY_SUMMARY = status.Summary("Ready", "Available", "2/2 replicas available")


def results(**verdicts: ControlStatus) -> list[ControlResult]:
    """A verdict per control, Pass unless named (with underscores for dashes)."""
    chosen = {name.replace("_", "-"): verdict for name, verdict in verdicts.items()}
    return [
        ControlResult(name, chosen.get(name, "Pass"), f"{chosen.get(name, 'Pass')}Reason", f"{name} says so")
        for name in CONTROL_NAMES
    ]


def rolled_out(wanted: int = 1, **status_fields: Any) -> Manifest:
    return {
        "metadata": {"name": "fraud", "generation": 2},
        "spec": {"template": {"spec": {"containers": [{"name": "model", "image": IMAGE}]}}},
        "status": {
            "observedGeneration": 2,
            "replicas": wanted,
            "updatedReplicas": wanted,
            "availableReplicas": wanted,
            **status_fields,
        },
    }


def conditions(built: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["type"]: item for item in built["conditions"]}


def test_judge_runs_every_control_in_order() -> None:
    ctx = context()
    judged = status.judge(ctx, observe(ctx))

    assert [result.name for result in judged] == CONTROL_NAMES
    assert all(result.status == "Pass" for result in judged)


def test_every_control_has_its_condition() -> None:
    assert status.CONDITION_OF == CONDITIONS


def test_judge_of_nothing_fails_every_control_that_needs_objects() -> None:
    judged = {
        result.name: result.status
        for result in status.judge(context(), replace(observe(context()), deployment=None))
    }

    assert judged == {
        **dict.fromkeys(CONTROL_NAMES, "Fail"),
        "network-isolation": "Pass",
        "rbac": "Pass",
        "data-residency": "Pass",
    }


SUMMARIES: list[tuple[str, dict[str, Any], tuple[str, str]]] = [
    (
        "blocked beats everything",
        {
            "blockers": [Blocker("StorageClassNotFound", "x"), Blocker("ReferenceNotFound", "y")],
            "failing": True,
            "missing_ns": True,
        },
        ("Blocked", "StorageClassNotFound"),
    ),
    (
        "failing control beats delivery",
        {"failing": True, "missing_ns": True, "no_nodes": True},
        ("Degraded", "ControlFailing"),
    ),
    (
        "missing client namespace beats region",
        {"missing_ns": True, "no_nodes": True},
        ("Degraded", "ClientNamespaceMissing"),
    ),
    ("no node in the region beats rollout", {"no_nodes": True}, ("Degraded", "NoNodeInRegion")),
    ("no deployment yet", {"deployment": None}, ("Progressing", "Creating")),
    ("rolling out", {"deployment": rolled_out(2, availableReplicas=1)}, ("Progressing", "RollingOut")),
    ("old generation", {"deployment": rolled_out(2, observedGeneration=1)}, ("Progressing", "RollingOut")),
    ("old pods still running", {"deployment": rolled_out(2, replicas=3)}, ("Progressing", "RollingOut")),
    (
        "stuck",
        {
            "deployment": rolled_out(
                2,
                availableReplicas=1,
                conditions=[
                    {
                        "type": "Progressing",
                        "status": "False",
                        "reason": "ProgressDeadlineExceeded",
                        "message": "too slow",
                    }
                ],
            )
        },
        ("Degraded", "RolloutStuck"),
    ),
    ("ready", {}, ("Ready", "Available")),
    ("weakened is still ready", {"weakened": True}, ("Ready", "Available")),
]


@pytest.mark.parametrize(("situation", "expected"), [c[1:] for c in SUMMARIES], ids=[c[0] for c in SUMMARIES])
def test_summarize_priorities(situation: dict[str, Any], expected: tuple[str, str]) -> None:
    facts = Facts(
        missing_client_namespaces=("ml-gw",) if situation.get("missing_ns") else (),
        region_has_nodes=not situation.get("no_nodes"),
    )
    ctx = context(facts=facts, model={"replicas": 2}, residency={"regions": ["eu-west-1"]})
    verdicts = results(
        mtls="Fail" if situation.get("failing") else ("Weakened" if situation.get("weakened") else "Pass")
    )
    summary = status.summarize(
        ctx, verdicts, situation.get("blockers", []), situation.get("deployment", rolled_out(2))
    )

    assert (summary.phase, summary.reason) == expected


def test_summary_messages_say_what_is_wrong() -> None:
    ctx = context(facts=Facts(missing_client_namespaces=("ml-gw", "ml-jobs")))
    blocked = status.summarize(ctx, results(), [Blocker("A", "first"), Blocker("B", "second")], None)
    failing = status.summarize(ctx, results(mtls="Fail", rbac="Fail"), [], None)
    missing = status.summarize(ctx, results(), [], None)
    stuck = status.summarize(
        context(),
        results(),
        [],
        rolled_out(
            conditions=[{"type": "Progressing", "reason": "ProgressDeadlineExceeded", "message": "too slow"}]
        ),
    )

    assert blocked.message == "first; second"
    assert failing.message == "mtls: mtls says so; rbac: rbac says so"
    assert "namespace ml-gw, ml-jobs does not exist" in missing.message
    assert stuck.message == "too slow"


def test_no_node_in_region_only_matters_with_residency() -> None:
    summary = status.summarize(context(facts=Facts(region_has_nodes=False)), results(), [], rolled_out())

    assert summary.phase == "Ready"


def build(
    verdicts: list[ControlResult] | None = None,
    summary: status.Summary = READY_SUMMARY,
    previous: dict[str, Any] | None = None,
    **changes: Any,
) -> dict[str, Any]:
    ctx = context(**changes)
    return status.build_status(ctx, verdicts or results(), summary, previous, rolled_out(), certificate())


def test_status_has_ready_compliant_and_one_condition_per_control() -> None:
    built = build()

    assert [item["type"] for item in built["conditions"]] == ["Ready", "Compliant", *CONDITIONS.values()]
    assert all(item["status"] == "True" for item in built["conditions"])
    assert all(item["observedGeneration"] == 3 for item in built["conditions"])
    assert all(item["lastTransitionTime"] == "2030-01-01T12:00:00Z" for item in built["conditions"])
    assert (built["observedGeneration"], built["phase"], built["compliant"]) == (3, "Ready", True)


def test_status_fits_the_status_schema() -> None:
    built = build(results(mtls="Weakened", rbac="Fail"), status.Summary("Degraded", "ControlFailing", "x"))

    parsed = SecureModelDeploymentStatus.model_validate(built)

    assert parsed.model_dump(by_alias=True, exclude_none=True) == built


def test_status_lists_each_control_verdict() -> None:
    built = build(results(rbac="Fail"))

    assert built["controls"][3] == {
        "name": "rbac",
        "status": "Fail",
        "reason": "FailReason",
        "message": "rbac says so",
    }
    assert [item["name"] for item in built["controls"]] == CONTROL_NAMES


def test_status_shows_the_running_image_shortened_and_the_certificate_without_keys() -> None:
    built = build()

    assert built["image"] == image_digest.short_image(IMAGE)
    assert built["certificate"] == {
        "notAfter": (NOW + timedelta(hours=16)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "serialNumber": "1f",
        "sha256Fingerprint": certificate().sha256_fingerprint,
    }


def test_status_falls_back_to_the_spec_image_and_omits_a_missing_certificate() -> None:
    built = status.build_status(context(), results(), READY_SUMMARY, None, None, None)

    assert built["image"] == image_digest.short_image(IMAGE)
    assert "certificate" not in built


@pytest.mark.parametrize(
    ("verdicts", "reason", "named"),
    [
        (results(rbac="Fail", mtls="Weakened"), "ControlsFailing", "rbac"),
        (results(mtls="Weakened"), "ControlsWeakened", "mtls"),
    ],
    ids=["failing", "weakened"],
)
def test_compliant_is_false_for_fail_and_weakened(
    verdicts: list[ControlResult], reason: str, named: str
) -> None:
    built = build(verdicts)
    compliant = conditions(built)["Compliant"]

    assert built["compliant"] is False
    assert (compliant["status"], compliant["reason"]) == ("False", reason)
    assert named in compliant["message"]


def test_a_weakened_control_has_a_false_condition() -> None:
    mtls_condition = conditions(build(results(mtls="Weakened")))["MTLSReady"]

    assert (mtls_condition["status"], mtls_condition["reason"]) == ("False", "WeakenedReason")


def test_ready_condition_follows_the_summary() -> None:
    ready = conditions(build(summary=status.Summary("Blocked", "StorageClassNotFound", "no class")))["Ready"]

    assert (ready["status"], ready["reason"], ready["message"]) == (
        "False",
        "StorageClassNotFound",
        "no class",
    )


def test_transition_time_is_kept_while_the_status_holds() -> None:
    earlier = build()
    later = status.build_status(
        context(now=NOW + timedelta(hours=1)),
        results(),
        status.Summary("Ready", "Available", "other words"),
        earlier,
        rolled_out(),
        certificate(),
    )

    assert all(item["lastTransitionTime"] == "2030-01-01T12:00:00Z" for item in later["conditions"])


def test_transition_time_moves_when_the_status_flips() -> None:
    earlier = build()
    later = status.build_status(
        context(now=NOW + timedelta(hours=1)),
        results(rbac="Fail"),
        READY_SUMMARY,
        earlier,
        rolled_out(),
        certificate(),
    )
    moved = {
        item["type"] for item in later["conditions"] if item["lastTransitionTime"] != "2030-01-01T12:00:00Z"
    }

    assert moved == {"Compliant", "LeastPrivilege"}


WEAKENED_SPECS: list[tuple[str, dict[str, Any]]] = [
    (
        "ingress from anywhere",
        {"network": {"ingress": [{"from": [{"namespaceSelector": {}}]}], "allowIngressFromAnywhere": True}},
    ),
    (
        "both directions",
        {
            "network": {
                "ingress": [{"from": [{"cidr": "0.0.0.0/0"}]}],
                "egress": [{"to": [{"cidr": "0.0.0.0/0"}], "ports": [{"port": 443}]}],
                "allowIngressFromAnywhere": True,
                "allowEgressToAnywhere": True,
            }
        },
    ),
    ("TLS 1.2", {"mtls": {"minTLSVersion": "1.2"}}),
]


@pytest.mark.parametrize("overrides", [c[1] for c in WEAKENED_SPECS], ids=[c[0] for c in WEAKENED_SPECS])
def test_weakened_specs_report_not_compliant_with_valid_reasons(overrides: dict[str, Any]) -> None:
    ctx = context(**overrides)
    observed = observe(ctx)
    judged = status.judge(ctx, observed)
    built = status.build_status(
        ctx, judged, READY_SUMMARY, None, observed.deployment, observed.server_certificate
    )

    assert built["compliant"] is False
    assert conditions(built)["Compliant"]["reason"] == "ControlsWeakened"
    assert [
        item["reason"] for item in built["conditions"] if not CONDITION_REASON.match(item["reason"])
    ] == []


def test_weakened_verdicts_name_their_weakenings() -> None:
    ctx = context(**WEAKENED_SPECS[1][1], mtls={"minTLSVersion": "1.2"})
    weakened = {
        result.name: result.weakenings
        for result in status.judge(ctx, observe(ctx))
        if result.status == "Weakened"
    }

    assert weakened == {
        network.NAME: (network.INGRESS_FROM_ANYWHERE, network.EGRESS_TO_ANYWHERE),
        mtls.NAME: (mtls.TLS_12,),
    }


def test_failing_checks_outrank_weakenings_in_compliance() -> None:
    ctx = context(mtls={"minTLSVersion": "1.2"})
    observed = observe(ctx)
    broken = replace(
        observed,
        deployment=tampered(
            observed.deployment, lambda item: item["spec"]["template"]["spec"].update(hostNetwork=True)
        ),
    )
    built = status.build_status(ctx, status.judge(ctx, broken), READY_SUMMARY, None, broken.deployment, None)

    assert conditions(built)["Compliant"]["reason"] == "ControlsFailing"
    assert "pod-security" in conditions(built)["Compliant"]["message"]


def events(previous: dict[str, Any] | None, current: dict[str, Any]) -> list[tuple[str, str]]:
    return [(event.type, event.reason) for event in status.transitions(previous, current)]


def test_steady_state_sends_no_events() -> None:
    current = build()

    assert events(current, build(previous=current)) == []


def test_first_status_announces_the_phase_but_not_passing_controls() -> None:
    (event,) = status.transitions(None, build())

    assert (event.type, event.reason) == ("Normal", "Available")
    assert event.message == "Ready: 2/2 replicas available"


def test_first_status_warns_about_failing_and_weakened_controls() -> None:
    assert events(None, build(results(rbac="Fail", mtls="Weakened"))) == [
        ("Normal", "Available"),
        ("Warning", "ControlWeakened"),
        ("Warning", "ControlFail"),
    ]


def test_a_new_passing_control_is_not_news() -> None:
    previous = build()
    previous["controls"] = [item for item in previous["controls"] if item["name"] != "pod-security"]

    assert events(previous, build(previous=previous)) == []


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        ("Pass", "Fail", ("Warning", "ControlFail")),
        ("Fail", "Pass", ("Normal", "ControlPass")),
        ("Pass", "Weakened", ("Warning", "ControlWeakened")),
    ],
)
def test_control_changes_send_one_event(
    before: ControlStatus, after: ControlStatus, expected: tuple[str, str]
) -> None:
    previous = build(results(rbac=before))
    current = build(results(rbac=after), previous=previous)

    assert events(previous, current) == [expected]


@pytest.mark.parametrize(
    ("phase", "kind"),
    [("Ready", "Normal"), ("Progressing", "Normal"), ("Degraded", "Warning"), ("Blocked", "Warning")],
)
def test_phase_changes_send_one_event(phase: str, kind: str) -> None:
    previous = build()
    current = build(summary=status.Summary(phase, "Why", "because"), previous=previous)
    expected = [] if phase == "Ready" else [(kind, "Why")]

    assert events(previous, current) == expected
