"""From the controls' verdicts and the live workload to the SMD's status, and the Events worth sending.

A chain of small pure checks produces conditions (cert-manager's policy-chain idea). Conditions follow the
Kubernetes API conventions (type, status, reason, message, lastTransitionTime, observedGeneration), so
`kubectl wait --for=condition=Ready`, kstatus and Argo CD understand them without custom code. The status
is built as the API's pydantic status model, so the operator can only write what the CRD declares.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from securemodels.api.v1alpha1 import (
    CertificateStatus,
    Condition,
    ControlState,
    Phase,
    SecureModelDeploymentStatus,
    WeightsStatus,
)
from securemodels.desired.controls import image_digest, residency
from securemodels.desired.controls.registry import CONDITION_OF
from securemodels.desired.model import Blocker, Context, ControlResult, Manifest, rfc3339
from securemodels.pki import CertificateInfo

READY = "Ready"
COMPLIANT = "Compliant"
INVALID_SPEC = "InvalidSpec"
QUARANTINED = "Quarantined"
QUARANTINE_LIFTED = "QuarantineLifted"
# Condition messages are for people; the API server would accept more, but a status stays readable.
MAX_MESSAGE = 4096


def parse_status(stored: Mapping[str, Any] | None) -> SecureModelDeploymentStatus:
    """The stored status, or an empty one when it is not what the operator writes (edited by hand, or
    stored under another version of the CRD): it is then rebuilt, never trusted."""
    try:
        return SecureModelDeploymentStatus.model_validate(dict(stored or {}))
    except ValidationError:
        return SecureModelDeploymentStatus()


@dataclass(frozen=True)
class Summary:
    phase: Phase
    reason: str
    message: str


def _rollout(context: Context, deployment: Manifest | None) -> Summary:
    if deployment is None:
        return Summary("Progressing", "Creating", "the Deployment is being created")
    status = deployment.get("status") or {}
    wanted = context.spec.model.replicas
    for condition in status.get("conditions") or []:
        if condition.get("type") == "ReplicaFailure" and condition.get("status") == "True":
            # The API server refused the pods (a LimitRange, a quota, admission): its words say why.
            return Summary(
                "Degraded", "PodsRefused", condition.get("message", "the API server refused the pods")
            )
        if condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded":
            return Summary(
                "Degraded", "RolloutStuck", condition.get("message", "rollout exceeded its deadline")
            )
    generation = deployment["metadata"].get("generation", 0)
    current = (
        status.get("observedGeneration", 0) >= generation
        and status.get("updatedReplicas", 0) >= wanted
        and status.get("availableReplicas", 0) >= wanted
        and status.get("replicas", 0) <= wanted
    )
    if not current:
        return Summary(
            "Progressing",
            "RollingOut",
            f"{status.get('availableReplicas', 0)}/{wanted} replicas available, "
            f"{status.get('updatedReplicas', 0)} up to date",
        )
    return Summary("Ready", "Available", f"{wanted}/{wanted} replicas available")


def quarantined(context: Context) -> Summary:
    reason = context.spec.quarantine.reason if context.spec.quarantine is not None else ""
    return Summary(
        "Quarantined",
        QUARANTINED,
        f"spec.quarantine: {reason}. Network cut both ways, every client refused, pods kept as they are",
    )


def summarize(
    context: Context,
    results: Sequence[ControlResult],
    blockers: Sequence[Blocker],
    deployment: Manifest | None,
) -> Summary:
    """The first applicable rule wins: blocked, failing control, delivery problems, rollout."""
    if blockers:
        return Summary("Blocked", blockers[0].reason, "; ".join(blocker.message for blocker in blockers))
    failing = [result for result in results if result.status == "Fail"]
    if failing:
        return Summary(
            "Degraded",
            "ControlFailing",
            "; ".join(f"{result.name}: {result.message}" for result in failing),
        )
    facts = context.facts
    if facts.missing_client_namespaces:
        names = ", ".join(facts.missing_client_namespaces)
        return Summary(
            "Degraded",
            "ClientNamespaceMissing",
            f"spec.mtls.clients: namespace {names} does not exist; the other clients have their certificates",
        )
    if facts.unmanaged_client_namespaces:
        names = ", ".join(facts.unmanaged_client_namespaces)
        return Summary(
            "Degraded",
            "ClientNamespaceNotManaged",
            f"spec.mtls.clients: namespace {names} is outside the operator's watchNamespaces; the other "
            "clients have their certificates",
        )
    if facts.region_has_nodes is False and context.spec.residency is not None:
        return Summary(
            "Degraded",
            "NoNodeInRegion",
            f"no node is labelled {residency.REGION_LABEL} in {', '.join(context.spec.residency.regions)}",
        )
    return _rollout(context, deployment)


def _shorten(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."


def condition(
    previous: SecureModelDeploymentStatus,
    kind: str,
    ok: bool,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
) -> Condition:
    """A condition; its lastTransitionTime moves only when its status does."""
    status = "True" if ok else "False"
    before = next((item for item in previous.conditions if item.type == kind), None)
    unchanged = before is not None and before.status == status
    return Condition(
        type=kind,
        status=status,
        reason=reason,
        message=_shorten(message),
        last_transition_time=before.last_transition_time if unchanged and before else rfc3339(now),
        observed_generation=generation,
    )


def invalid_spec_status(
    previous: SecureModelDeploymentStatus, message: str, generation: int, now: datetime
) -> SecureModelDeploymentStatus:
    """For a stored object that does not match the API: nothing was judged, so no verdicts are claimed."""
    ready = condition(previous, READY, False, INVALID_SPEC, message, generation, now)
    return SecureModelDeploymentStatus(observed_generation=generation, phase="Blocked", conditions=[ready])


def _compliance(results: Sequence[ControlResult]) -> tuple[bool, str, str]:
    failing = [result.name for result in results if result.status == "Fail"]
    weakened = [result.name for result in results if result.status == "Weakened"]
    if failing:
        return False, "ControlsFailing", "failing: " + ", ".join(failing)
    if weakened:
        return False, "ControlsWeakened", "weakened on purpose by the spec: " + ", ".join(weakened)
    return True, "AllControlsPass", f"all {len(results)} controls pass"


def build_status(
    context: Context,
    results: Sequence[ControlResult],
    summary: Summary,
    previous: SecureModelDeploymentStatus,
    deployment: Manifest | None,
    certificate: CertificateInfo | None,
    weights: WeightsStatus | None = None,
) -> SecureModelDeploymentStatus:
    compliant, compliance_reason, compliance_message = _compliance(results)
    generation, now = context.owner.generation, context.now
    conditions = [
        condition(
            previous, READY, summary.phase == "Ready", summary.reason, summary.message, generation, now
        ),
        condition(previous, COMPLIANT, compliant, compliance_reason, compliance_message, generation, now),
        *(
            condition(
                previous,
                CONDITION_OF[result.name],
                result.status == "Pass",
                result.reason,
                result.message,
                generation,
                now,
            )
            for result in results
        ),
    ]
    return SecureModelDeploymentStatus(
        observed_generation=generation,
        phase=summary.phase,
        compliant=compliant,
        image=image_digest.short_image(_running_image(deployment) or context.spec.model.image),
        conditions=conditions,
        controls=[
            ControlState(
                name=result.name, status=result.status, reason=result.reason, message=_shorten(result.message)
            )
            for result in results
        ],
        certificate=CertificateStatus(
            not_after=rfc3339(certificate.not_after),
            serial_number=certificate.serial_number,
            sha256_fingerprint=certificate.sha256_fingerprint,
        )
        if certificate is not None
        else None,
        weights=weights,
    )


def _running_image(deployment: Manifest | None) -> str | None:
    if deployment is None:
        return None
    for container in deployment["spec"]["template"]["spec"].get("containers") or []:
        if container.get("name") == image_digest.MODEL_CONTAINER:
            return str(container.get("image"))
    return None


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


def transitions(
    previous: SecureModelDeploymentStatus, current: SecureModelDeploymentStatus, *, controls: bool = True
) -> list[Event]:
    """Events only for changes, so a steady state sends none. Without `controls`, only the phase's:
    a Blocked SMD says why in one Event, not once more for each control its blocker leaves failing."""
    events = []
    ready = next((item for item in current.conditions if item.type == READY), None)
    before_ready = next((item for item in previous.conditions if item.type == READY), None)
    changed_phase = previous.phase != current.phase
    # A Blocked SMD that stays Blocked for another reason is news too; for the same one it is not.
    changed_block = current.phase == "Blocked" and (
        before_ready is None or ready is None or before_ready.reason != ready.reason
    )
    if previous.phase == "Quarantined" and changed_phase:
        events.append(Event("Normal", QUARANTINE_LIFTED, f"spec.quarantine removed; {current.phase}"))
    elif ready is not None and (changed_phase or changed_block):
        kind = "Normal" if current.phase in ("Ready", "Progressing") else "Warning"
        events.append(Event(kind, ready.reason, f"{current.phase}: {ready.message}"))
    if not controls:
        return events
    old_controls = {item.name: item for item in previous.controls}
    for control in current.controls:
        old = old_controls.get(control.name)
        if old is not None and old.status == control.status:
            continue
        if old is None and control.status == "Pass":
            continue  # a new SMD passing is not news
        kind = "Normal" if control.status == "Pass" else "Warning"
        events.append(Event(kind, f"Control{control.status}", f"{control.name}: {control.message}"))
    return events
