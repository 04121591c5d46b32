"""Control data-residency: a required node affinity to the declared regions, and nothing that ORs it away."""

from __future__ import annotations

from typing import Any

import pytest

from securemodels.desired.controls import residency
from securemodels.desired.model import Manifest
from unit.builders import Mutation, context, observe, pod_spec, tampered

REGIONS: dict[str, Any] = {"residency": {"regions": ["eu-west-1", "eu-central-1"]}}
IN_REGIONS = {
    "key": "topology.kubernetes.io/region",
    "operator": "In",
    "values": ["eu-west-1", "eu-central-1"],
}


def terms(deployment: Manifest) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = pod_spec(deployment)["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    return result


def test_no_affinity_without_residency() -> None:
    ctx = context()

    assert residency.affinity(ctx) is None
    assert "affinity" not in pod_spec(observe(ctx).deployment or {})


def test_required_affinity_to_the_declared_regions() -> None:
    assert residency.affinity(context(**REGIONS)) == {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [IN_REGIONS]}]
            }
        }
    }


def test_deployment_carries_the_affinity() -> None:
    ctx = context(**REGIONS)

    assert terms(observe(ctx).deployment or {}) == [{"matchExpressions": [IN_REGIONS]}]


def test_check_passes_without_residency() -> None:
    result = residency.check(context(), None)

    assert (result.name, result.status, result.reason) == ("data-residency", "Pass", "NotRequested")


def test_check_passes_the_built_deployment() -> None:
    ctx = context(**REGIONS)
    result = residency.check(ctx, observe(ctx).deployment)

    assert (result.status, result.reason) == ("Pass", "RegionsEnforced")
    assert "eu-west-1, eu-central-1" in result.message


def test_check_passes_a_narrower_term() -> None:
    ctx = context(**REGIONS)
    narrower = tampered(
        observe(ctx).deployment,
        lambda item: terms(item)[0]["matchExpressions"].append({"key": "gpu", "operator": "Exists"}),
    )

    assert residency.check(ctx, narrower).status == "Pass"


TAMPERED: list[tuple[str, Mutation]] = [
    ("affinity removed", lambda item: pod_spec(item).pop("affinity")),
    ("terms emptied", lambda item: terms(item).clear()),
    (
        "extra ORed term",
        lambda item: terms(item).append({"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}),
    ),
    (
        "another region added",
        lambda item: terms(item)[0]["matchExpressions"][0]["values"].append("us-east-1"),
    ),
    (
        "made a preference",
        lambda item: pod_spec(item)["affinity"].update(
            nodeAffinity={
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 1, "preference": terms(item)[0]}
                ]
            }
        ),
    ),
]


@pytest.mark.parametrize("mutation", [c[1] for c in TAMPERED], ids=[c[0] for c in TAMPERED])
def test_check_fails_when_pods_may_run_elsewhere(mutation: Mutation) -> None:
    ctx = context(**REGIONS)
    result = residency.check(ctx, tampered(observe(ctx).deployment, mutation))

    assert (result.status, result.reason) == ("Fail", "AffinityMissing")
    assert "eu-west-1, eu-central-1" in result.message


def test_check_fails_without_a_deployment() -> None:
    assert residency.check(context(**REGIONS), None).reason == "DeploymentMissing"
