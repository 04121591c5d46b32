"""Control `data-residency`: the model runs only on nodes in the declared regions.

Regulations such as GDPR tie where personal data is processed; a required node affinity on the
well-known region label makes the scheduler refuse every node elsewhere. spec.scheduling's node affinity
narrows it and cannot widen it: the region requirement is part of every required term. Judged on the
Deployment's template and on where each running pod actually is: the region label of its node.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from securemodels.api.v1alpha1 import NodeAffinity, NodeSelectorRequirement
from securemodels.desired.controls.base import verdict
from securemodels.desired.model import Blocker, Context, ControlResult, Observed

NAME = "data-residency"
CONDITION = "ResidencyEnforced"
REGION_LABEL = "topology.kubernetes.io/region"


class Reason(StrEnum):
    NOT_REQUESTED = "NotRequested"
    ENFORCED = "RegionsEnforced"
    AFFINITY_MISSING = "AffinityMissing"
    DEPLOYMENT_MISSING = "DeploymentMissing"


def _region_requirement(regions: list[str]) -> dict[str, Any]:
    return {"key": REGION_LABEL, "operator": "In", "values": regions}


def _term(requirements: list[NodeSelectorRequirement], *first: dict[str, Any]) -> dict[str, Any]:
    return {"matchExpressions": [*first, *(item.as_manifest() for item in requirements)]}


def affinity(context: Context) -> dict[str, Any] | None:
    """The pods' node affinity: spec.scheduling's terms, with the residency's region requirement in every
    required term. Kubernetes ORs the terms, so a term without it would let the pods run anywhere; with
    it, a term can only narrow the regions, never reach past them."""
    residency = context.spec.residency
    declared = context.spec.scheduling.node_affinity or NodeAffinity()
    region = [_region_requirement(list(residency.regions))] if residency is not None else []
    required = declared.required_during_scheduling_ignored_during_execution
    if required is not None:
        terms = [_term(term.match_expressions, *region) for term in required.node_selector_terms]
    else:
        terms = [{"matchExpressions": region}] if region else []
    node_affinity: dict[str, Any] = {}
    if terms:
        node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {"nodeSelectorTerms": terms}
    if declared.preferred_during_scheduling_ignored_during_execution:
        node_affinity["preferredDuringSchedulingIgnoredDuringExecution"] = [
            {"weight": item.weight, "preference": _term(item.preference.match_expressions)}
            for item in declared.preferred_during_scheduling_ignored_during_execution
        ]
    return {"nodeAffinity": node_affinity} if node_affinity else None


def preflight(context: Context, observed: Observed) -> Blocker | None:
    return None


def _affinity_required(pod_spec: dict[str, Any], regions: list[str]) -> bool:
    required = (
        (pod_spec.get("affinity") or {})
        .get("nodeAffinity", {})
        .get("requiredDuringSchedulingIgnoredDuringExecution", {})
    )
    # Node selector terms are ORed: one term without the region requirement lets pods run anywhere.
    wanted = _region_requirement(regions)
    terms = required.get("nodeSelectorTerms") or []
    return bool(terms) and all(wanted in (term.get("matchExpressions") or []) for term in terms)


def check(context: Context, observed: Observed) -> ControlResult:
    residency = context.spec.residency
    problems = list(observed.findings.get(NAME, ()))
    if residency is None:
        return verdict(
            NAME,
            problems,
            Reason.AFFINITY_MISSING,
            Reason.NOT_REQUESTED,
            "spec.residency is not set: any region",
        )
    deployment = observed.get(context.names.deployment)
    if deployment is None:
        return ControlResult(NAME, "Fail", Reason.DEPLOYMENT_MISSING, "the model's Deployment does not exist")
    regions = list(residency.regions)
    if not _affinity_required(deployment["spec"]["template"]["spec"], regions):
        problems.append(f"the Deployment's pods are not required to run in {', '.join(regions)}")
    for pod in observed.pods:
        node = (pod.get("spec") or {}).get("nodeName")
        if node is None:
            continue  # not scheduled: it runs nowhere yet
        region = context.facts.node_regions.get(node)
        if region not in regions:
            problems.append(
                f"pod {pod['metadata']['name']} runs on node {node} in region {region or 'unknown'}"
            )
    return verdict(
        NAME, problems, Reason.AFFINITY_MISSING, Reason.ENFORCED, f"pods run only in {', '.join(regions)}"
    )
