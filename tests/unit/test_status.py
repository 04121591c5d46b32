"""From verdicts and the live workload to the SMD's status, its conditions and the Events worth sending."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest

from securemodels.api.v1alpha1 import Condition, Phase, SecureModelDeploymentStatus
from securemodels.desired import judging, status
from securemodels.desired.controls import image_digest, mtls, network
from securemodels.desired.controls.registry import CONTROLS
from securemodels.desired.model import Blocker, ControlResult, ControlStatus, Facts, Manifest
from unit.builders import IMAGE, NOW, altered, certificate, context, live, observe, pod_spec, removed

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


def conditions(built: SecureModelDeploymentStatus) -> dict[str, Condition]:
    return {item.type: item for item in built.conditions}


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


def test_pods_the_api_server_refuses_degrade_with_its_message() -> None:
    refused = rolled_out(
        availableReplicas=0,
        updatedReplicas=0,
        conditions=[
            {
                "type": "ReplicaFailure",
                "status": "True",
                "reason": "FailedCreate",
                "message": "maximum memory usage per Container is 1Gi, but limit is 2Gi",
            }
        ],
    )

    summary = status.summarize(context(), results(), (), refused)

    assert (summary.phase, summary.reason) == ("Degraded", "PodsRefused")
    assert "maximum memory usage per Container is 1Gi" in summary.message


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


EMPTY = SecureModelDeploymentStatus()


def build(
    verdicts: list[ControlResult] | None = None,
    summary: status.Summary = READY_SUMMARY,
    previous: SecureModelDeploymentStatus = EMPTY,
    **changes: Any,
) -> SecureModelDeploymentStatus:
    ctx = context(**changes)
    return status.build_status(ctx, verdicts or results(), summary, previous, rolled_out(), certificate())


def later(
    previous: SecureModelDeploymentStatus,
    verdicts: list[ControlResult] | None = None,
    summary: status.Summary = READY_SUMMARY,
) -> SecureModelDeploymentStatus:
    """The status an hour after `previous`."""
    ctx = context(now=NOW + timedelta(hours=1))
    return status.build_status(ctx, verdicts or results(), summary, previous, rolled_out(), certificate())


def test_judging_nothing_fails_every_control_that_needs_the_deployment() -> None:
    ctx = context()
    judged = {
        result.name: result.status for result in judging.judge(ctx, removed(observe(ctx), "Deployment"))
    }

    assert judged == {
        **dict.fromkeys(CONTROL_NAMES, "Fail"),
        "network-isolation": "Pass",
        "rbac": "Pass",
        "data-residency": "Pass",
        "weights-verification": "Pass",  # no weights declared: nothing to verify
    }


def test_status_has_ready_compliant_and_one_condition_per_control() -> None:
    built = build()

    assert [item.type for item in built.conditions] == ["Ready", "Compliant", *CONDITIONS.values()]
    assert all(item.status == "True" for item in built.conditions)
    assert all(item.observed_generation == 3 for item in built.conditions)
    assert all(item.last_transition_time == "2030-01-01T12:00:00Z" for item in built.conditions)
    assert (built.observed_generation, built.phase, built.compliant) == (3, "Ready", True)


def test_status_round_trips_through_what_is_stored() -> None:
    built = build(results(mtls="Weakened", rbac="Fail"), status.Summary("Degraded", "ControlFailing", "x"))
    stored = built.as_object()

    assert status.parse_status(stored) == built
    assert SecureModelDeploymentStatus.model_validate(stored).as_object() == stored
    assert stored["conditions"][0]["lastTransitionTime"] == "2030-01-01T12:00:00Z"
    assert stored["certificate"]["sha256Fingerprint"] == certificate().sha256_fingerprint


def test_what_is_stored_leaves_absent_fields_out() -> None:
    stored = status.build_status(context(), results(), READY_SUMMARY, EMPTY, None, None).as_object()

    assert "certificate" not in stored
    assert None not in stored.values()


GARBAGE: list[tuple[str, Any]] = [
    ("nothing", None),
    ("an empty map", {}),
    ("an unknown field", {"phase": "Ready", "frozen": True}),
    ("an unknown phase", {"phase": "Suspended"}),
    ("conditions not a list", {"conditions": "Ready"}),
    ("a condition without its time", {"conditions": [{"type": "Ready", "status": "True", "reason": "R"}]}),
    ("a control with an unknown verdict", {"controls": [{"name": "mtls", "status": "Maybe", "reason": "R"}]}),
    ("a generation that is not a number", {"observedGeneration": "three"}),
]


@pytest.mark.parametrize("stored", [c[1] for c in GARBAGE], ids=[c[0] for c in GARBAGE])
def test_a_status_the_operator_did_not_write_is_read_as_empty(stored: Any) -> None:
    assert status.parse_status(stored) == EMPTY


def test_status_lists_each_control_verdict() -> None:
    built = build(results(rbac="Fail"))

    assert built.controls[3].model_dump(by_alias=True) == {
        "name": "rbac",
        "status": "Fail",
        "reason": "FailReason",
        "message": "rbac says so",
    }
    assert [item.name for item in built.controls] == CONTROL_NAMES


def test_status_shows_the_running_image_shortened_and_the_certificate_without_keys() -> None:
    built = build()

    assert built.image == image_digest.short_image(IMAGE)
    assert built.certificate is not None
    assert built.certificate.model_dump(by_alias=True) == {
        "notAfter": (NOW + timedelta(hours=16)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "serialNumber": "1f",
        "sha256Fingerprint": certificate().sha256_fingerprint,
    }


def test_status_shows_the_image_the_live_deployment_runs() -> None:
    other = IMAGE.replace("4f3c2b1a09f8e7d6", "0123456789abcdef")
    deployment = rolled_out()
    deployment["spec"]["template"]["spec"]["containers"][0]["image"] = other
    built = status.build_status(context(), results(), READY_SUMMARY, EMPTY, deployment, None)

    assert built.image == image_digest.short_image(other)


def test_status_falls_back_to_the_spec_image_and_omits_a_missing_certificate() -> None:
    built = status.build_status(context(), results(), READY_SUMMARY, EMPTY, None, None)

    assert built.image == image_digest.short_image(IMAGE)
    assert built.certificate is None


@pytest.mark.parametrize(
    ("verdicts", "reason", "named"),
    [
        (results(rbac="Fail", mtls="Weakened"), "ControlsFailing", "failing: rbac"),
        (results(mtls="Weakened"), "ControlsWeakened", "weakened on purpose by the spec: mtls"),
    ],
    ids=["failing", "weakened"],
)
def test_compliant_is_false_for_fail_and_weakened(
    verdicts: list[ControlResult], reason: str, named: str
) -> None:
    built = build(verdicts)
    compliant = conditions(built)["Compliant"]

    assert built.compliant is False
    assert (compliant.status, compliant.reason, compliant.message) == ("False", reason, named)


def test_compliant_counts_the_controls_that_pass() -> None:
    assert conditions(build())["Compliant"].message == "all 7 controls pass"


def test_a_weakened_control_has_a_false_condition() -> None:
    mtls_condition = conditions(build(results(mtls="Weakened")))["MTLSReady"]

    assert (mtls_condition.status, mtls_condition.reason) == ("False", "WeakenedReason")


def test_ready_condition_follows_the_summary() -> None:
    ready = conditions(build(summary=status.Summary("Degraded", "RolloutStuck", "too slow")))["Ready"]

    assert (ready.status, ready.reason, ready.message) == ("False", "RolloutStuck", "too slow")


def test_transition_time_is_kept_while_the_status_holds() -> None:
    again = later(build(), summary=status.Summary("Ready", "Available", "other words"))

    assert all(item.last_transition_time == "2030-01-01T12:00:00Z" for item in again.conditions)
    assert conditions(again)["Ready"].message == "other words"


def test_transition_time_moves_when_the_status_flips() -> None:
    again = later(build(), results(rbac="Fail"))
    moved = {item.type for item in again.conditions if item.last_transition_time != "2030-01-01T12:00:00Z"}

    assert moved == {"Compliant", "LeastPrivilege"}
    assert conditions(again)["LeastPrivilege"].last_transition_time == "2030-01-01T13:00:00Z"


def test_transition_time_moves_for_a_new_condition() -> None:
    previous = build().model_copy(update={"conditions": build().conditions[:2]})
    again = later(previous)

    assert conditions(again)["Ready"].last_transition_time == "2030-01-01T12:00:00Z"
    assert conditions(again)["PodHardened"].last_transition_time == "2030-01-01T13:00:00Z"


LONG = "x" * (status.MAX_MESSAGE + 100)


def test_long_messages_are_cut_to_the_limit() -> None:
    verdicts = [*results()[:-1], ControlResult("pod-security", "Fail", "PodNotHardened", LONG)]
    built = build(verdicts, status.Summary("Degraded", "ControlFailing", LONG))

    for message in (
        conditions(built)["Ready"].message,
        conditions(built)["PodHardened"].message,
        built.controls[-1].message,
    ):
        assert len(message) == status.MAX_MESSAGE
        assert message.endswith("...")


def test_a_message_at_the_limit_is_kept_whole() -> None:
    exact = "y" * status.MAX_MESSAGE
    built = build(summary=status.Summary("Degraded", "ControlFailing", exact))

    assert conditions(built)["Ready"].message == exact


def test_condition_states_true_or_false() -> None:
    made = status.condition(EMPTY, "Ready", False, "Why", "because", 4, NOW)

    assert made == Condition(
        type="Ready",
        status="False",
        reason="Why",
        message="because",
        last_transition_time="2030-01-01T12:00:00Z",
        observed_generation=4,
    )


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
    judged = judging.judge(ctx, observed)
    built = status.build_status(
        ctx, judged, READY_SUMMARY, EMPTY, live(observed, "Deployment"), observed.server_certificate
    )

    assert built.compliant is False
    assert conditions(built)["Compliant"].reason == "ControlsWeakened"
    assert [item.reason for item in built.conditions if not CONDITION_REASON.match(item.reason)] == []


def test_weakened_verdicts_name_their_weakenings() -> None:
    ctx = context(**WEAKENED_SPECS[1][1], mtls={"minTLSVersion": "1.2"})
    weakened = {
        result.name: result.weakenings
        for result in judging.judge(ctx, observe(ctx))
        if result.status == "Weakened"
    }

    assert weakened == {
        network.NAME: (network.INGRESS_FROM_ANYWHERE, network.EGRESS_TO_ANYWHERE),
        mtls.NAME: (mtls.TLS_12,),
    }


def test_failing_checks_outrank_weakenings_in_compliance() -> None:
    ctx = context(mtls={"minTLSVersion": "1.2"})
    broken = altered(observe(ctx), "Deployment", lambda item: pod_spec(item).update(hostNetwork=True))
    built = status.build_status(
        ctx, judging.judge(ctx, broken), READY_SUMMARY, EMPTY, live(broken, "Deployment"), None
    )

    assert conditions(built)["Compliant"].reason == "ControlsFailing"
    assert "pod-security" in conditions(built)["Compliant"].message


def test_every_reason_the_controls_give_is_a_valid_condition_reason() -> None:
    reasons = [reason.value for control in CONTROLS for reason in control.Reason]

    assert [reason for reason in reasons if not CONDITION_REASON.match(reason)] == []


# ----------------------------------------------------------------------------------------- blocked


BLOCKED = status.Summary("Blocked", "StorageClassNotFound", "spec.storage.storageClassName x does not exist")


def test_a_blocked_smd_reports_the_verdicts_judged_now_not_earlier_ones() -> None:
    """Blocked writes nothing, but what runs is judged as it is: an earlier Pass is no alibi."""
    previous = build()
    blocked = later(previous, results(network_isolation="Fail"), BLOCKED)

    assert previous.compliant is True
    assert blocked.phase == "Blocked"
    assert blocked.compliant is False
    network = next(item for item in blocked.controls if item.name == "network-isolation")
    assert network.status == "Fail"
    ready = blocked.conditions[0]
    assert (ready.type, ready.status, ready.reason) == ("Ready", "False", "StorageClassNotFound")
    assert ready.last_transition_time == "2030-01-01T13:00:00Z"


def test_staying_blocked_keeps_the_transition_time() -> None:
    first = build(summary=BLOCKED)
    again = later(first, summary=status.Summary("Blocked", "ReferenceNotFound", "y"))

    assert again.conditions[0].last_transition_time == first.conditions[0].last_transition_time
    assert again.conditions[0].reason == "ReferenceNotFound"


def test_an_invalid_spec_claims_no_verdicts() -> None:
    invalid = status.invalid_spec_status(build(), "spec.model.port: too big", 5, NOW)

    assert (invalid.phase, invalid.observed_generation, invalid.controls, invalid.compliant) == (
        "Blocked",
        5,
        [],
        None,
    )
    (ready,) = invalid.conditions
    assert (ready.type, ready.status, ready.reason, ready.message) == (
        "Ready",
        "False",
        status.INVALID_SPEC,
        "spec.model.port: too big",
    )


# ------------------------------------------------------------------------------------------- events


def events(
    previous: SecureModelDeploymentStatus, current: SecureModelDeploymentStatus
) -> list[tuple[str, str]]:
    return [(event.type, event.reason) for event in status.transitions(previous, current)]


def test_steady_state_sends_no_events() -> None:
    current = build()

    assert events(current, later(current)) == []


def test_steady_failure_sends_no_events() -> None:
    current = build(results(rbac="Fail"), status.Summary("Degraded", "ControlFailing", "x"))

    assert (
        events(
            current, later(current, results(rbac="Fail"), status.Summary("Degraded", "ControlFailing", "x"))
        )
        == []
    )


def test_first_status_announces_the_phase_but_not_passing_controls() -> None:
    (event,) = status.transitions(EMPTY, build())

    assert (event.type, event.reason) == ("Normal", "Available")
    assert event.message == "Ready: 2/2 replicas available"


def test_first_status_warns_about_failing_and_weakened_controls() -> None:
    assert events(EMPTY, build(results(rbac="Fail", mtls="Weakened"))) == [
        ("Normal", "Available"),
        ("Warning", "ControlWeakened"),
        ("Warning", "ControlFail"),
    ]


def test_a_new_passing_control_is_not_news() -> None:
    current = build()
    previous = current.model_copy(
        update={"controls": [item for item in current.controls if item.name != "pod-security"]}
    )

    assert events(previous, later(previous)) == []


def test_a_control_that_fails_and_recovers_sends_one_event_each_way() -> None:
    passing = build()
    failing = later(passing, results(rbac="Fail"))
    recovered = later(failing)

    assert status.transitions(passing, failing)[0].message == "rbac: rbac says so"
    assert events(passing, failing) == [("Warning", "ControlFail")]
    assert events(failing, recovered) == [("Normal", "ControlPass")]
    assert events(recovered, later(recovered)) == []


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        ("Pass", "Fail", ("Warning", "ControlFail")),
        ("Fail", "Pass", ("Normal", "ControlPass")),
        ("Pass", "Weakened", ("Warning", "ControlWeakened")),
        ("Weakened", "Fail", ("Warning", "ControlFail")),
    ],
)
def test_control_changes_send_one_event(
    before: ControlStatus, after: ControlStatus, expected: tuple[str, str]
) -> None:
    previous = build(results(rbac=before))

    assert events(previous, later(previous, results(rbac=after))) == [expected]


@pytest.mark.parametrize(
    ("phase", "kind"),
    [("Ready", "Normal"), ("Progressing", "Normal"), ("Degraded", "Warning"), ("Blocked", "Warning")],
)
def test_phase_changes_send_one_event(phase: Phase, kind: str) -> None:
    previous = build()
    current = later(previous, summary=status.Summary(phase, "Why", "because"))
    expected = [] if phase == "Ready" else [(kind, "Why")]

    assert events(previous, current) == expected


def test_blocking_sends_one_warning() -> None:
    previous = build()
    blocked = build(summary=BLOCKED, previous=previous)

    assert events(previous, blocked) == [("Warning", "StorageClassNotFound")]
    assert status.transitions(previous, blocked)[0].message == f"Blocked: {BLOCKED.message}"


def test_blocked_without_control_events_says_why_once_whatever_its_controls_do() -> None:
    previous = build()
    blocked = build(verdicts=results(mtls="Fail", rbac="Fail"), summary=BLOCKED, previous=previous)

    found = status.transitions(previous, blocked, controls=False)

    assert [(event.type, event.reason) for event in found] == [("Warning", "StorageClassNotFound")]
    assert len(status.transitions(previous, blocked)) == 3  # with them: the phase and each control


def test_staying_blocked_for_the_same_reason_sends_nothing() -> None:
    first = build(summary=BLOCKED)
    again = later(first, summary=BLOCKED)

    assert events(first, again) == []


def test_staying_blocked_for_another_reason_sends_one_event() -> None:
    first = build(summary=BLOCKED)
    again = build(summary=status.Summary("Blocked", "NameTaken", "Deployment x"), previous=first)

    assert events(first, again) == [("Warning", "NameTaken")]


def test_being_unblocked_announces_the_new_phase() -> None:
    blocked = build(summary=BLOCKED)

    assert events(blocked, later(blocked)) == [("Normal", "Available")]
