"""Control `data-residency`: the model runs only on nodes in the declared regions.

Regulations such as GDPR tie where personal data is processed; a required node affinity on the
well-known region label makes the scheduler refuse every node elsewhere.
"""

from __future__ import annotations

from typing import Any

from securemodels.desired.model import Context, ControlResult, Manifest

NAME = "data-residency"
CONDITION = "ResidencyEnforced"
REGION_LABEL = "topology.kubernetes.io/region"


def _region_requirement(regions: list[str]) -> dict[str, Any]:
    return {"key": REGION_LABEL, "operator": "In", "values": regions}


def affinity(context: Context) -> dict[str, Any] | None:
    residency = context.spec.residency
    if residency is None:
        return None
    term = {"matchExpressions": [_region_requirement(list(residency.regions))]}
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}


def check(context: Context, deployment: Manifest | None) -> ControlResult:
    residency = context.spec.residency
    if residency is None:
        return ControlResult(NAME, "Pass", "NotRequested", "spec.residency is not set: any region")
    if deployment is None:
        return ControlResult(NAME, "Fail", "DeploymentMissing", "the model's Deployment does not exist")
    regions = ", ".join(residency.regions)
    required = (
        (deployment["spec"]["template"]["spec"].get("affinity") or {})
        .get("nodeAffinity", {})
        .get("requiredDuringSchedulingIgnoredDuringExecution", {})
    )
    # Node selector terms are ORed: one term without the region requirement lets pods run anywhere.
    wanted = _region_requirement(list(residency.regions))
    terms = required.get("nodeSelectorTerms") or []
    if not terms or any(wanted not in (term.get("matchExpressions") or []) for term in terms):
        return ControlResult(NAME, "Fail", "AffinityMissing", f"pods are not required to run in {regions}")
    return ControlResult(NAME, "Pass", "RegionsEnforced", f"pods run only in {regions}")
