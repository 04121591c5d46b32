"""From the controls' verdicts and the live workload to the SMD's status, and the Events worth sending.

A chain of small pure checks produces conditions (cert-manager's policy-chain idea). Conditions follow the
Kubernetes API conventions (type, status, reason, message, lastTransitionTime, observedGeneration), so
`kubectl wait --for=condition=Ready`, kstatus and Argo CD understand them without custom code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from securemodels.desired.controls import image_digest, mtls, network, pod_security, rbac, residency, storage
from securemodels.desired.model import Blocker, Context, ControlResult, Manifest, Observed, rfc3339
from securemodels.pki import CertificateInfo

READY = "Ready"
COMPLIANT = "Compliant"
CONTROLS = (image_digest, network, mtls, rbac, storage, residency, pod_security)
CONDITION_OF = {control.NAME: control.CONDITION for control in CONTROLS}


def judge(context: Context, observed: Observed) -> list[ControlResult]:
    """Every control, judged from what the API server returned."""
    deployment = observed.deployment
    return [
        image_digest.check(context, deployment),
        network.check(context, observed.network_policies),
        mtls.check(
            context, deployment, observed.service, observed.sidecar_config, observed.server_certificate
        ),
        rbac.check(
            context,
            observed.service_account,
            observed.roles,
            observed.role_bindings,
            observed.cluster_role_bindings,
        ),
        storage.check(context, deployment, observed.pvc),
        residency.check(context, deployment),
        pod_security.check(deployment, observed.pods),
    ]


@dataclass(frozen=True)
class Summary:
    phase: str
    reason: str
    message: str


def _rollout(context: Context, deployment: Manifest | None) -> Summary:
    if deployment is None:
        return Summary("Progressing", "Creating", "the Deployment is being created")
    status = deployment.get("status") or {}
    wanted = context.spec.model.replicas
    for condition in status.get("conditions") or []:
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


def condition(
    previous: dict[str, Any] | None,
    kind: str,
    ok: bool,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
) -> dict[str, Any]:
    """A condition; its lastTransitionTime moves only when its status does."""
    status = "True" if ok else "False"
    before = {item["type"]: item for item in (previous or {}).get("conditions") or []}.get(kind)
    unchanged = before is not None and before.get("status") == status
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": before["lastTransitionTime"] if unchanged and before else rfc3339(now),
        "observedGeneration": generation,
    }


def invalid_spec_status(
    previous: dict[str, Any] | None, message: str, generation: int, now: datetime
) -> dict[str, Any]:
    """For a stored spec that does not match the API: nothing was judged, so no verdicts are claimed."""
    ready = condition(previous, READY, False, "InvalidSpec", message, generation, now)
    return {"observedGeneration": generation, "phase": "Blocked", "conditions": [ready]}


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
    previous: dict[str, Any] | None,
    deployment: Manifest | None,
    certificate: CertificateInfo | None,
) -> dict[str, Any]:
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
    status: dict[str, Any] = {
        "observedGeneration": context.owner.generation,
        "phase": summary.phase,
        "compliant": compliant,
        "image": image_digest.short_image(_running_image(deployment) or context.spec.model.image),
        "conditions": conditions,
        "controls": [
            {"name": result.name, "status": result.status, "reason": result.reason, "message": result.message}
            for result in results
        ],
    }
    if certificate is not None:
        status["certificate"] = {
            "notAfter": rfc3339(certificate.not_after),
            "serialNumber": certificate.serial_number,
            "sha256Fingerprint": certificate.sha256_fingerprint,
        }
    return status


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


def transitions(previous: dict[str, Any] | None, current: dict[str, Any]) -> list[Event]:
    """Events only for changes, so a steady state sends none."""
    before = previous or {}
    events = []
    if before.get("phase") != current["phase"]:
        ready = next(item for item in current["conditions"] if item["type"] == READY)
        kind = "Normal" if current["phase"] in ("Ready", "Progressing") else "Warning"
        events.append(Event(kind, ready["reason"], f"{current['phase']}: {ready['message']}"))
    old_controls = {item["name"]: item for item in before.get("controls") or []}
    for control in current["controls"]:
        old = old_controls.get(control["name"])
        if old is not None and old["status"] == control["status"]:
            continue
        if old is None and control["status"] == "Pass":
            continue  # a new SMD passing is not news
        kind = "Normal" if control["status"] == "Pass" else "Warning"
        events.append(Event(kind, f"Control{control['status']}", f"{control['name']}: {control['message']}"))
    return events
