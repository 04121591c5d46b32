"""Control data-residency: a required node affinity to the declared regions, and nothing that ORs it away."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from pydantic import ValidationError

from securemodels.api import v1alpha1
from securemodels.desired import judging
from securemodels.desired.controls import residency
from securemodels.desired.model import Context, Facts, Manifest, Observed
from unit.builders import (
    NODE,
    POD_NAME,
    Mutation,
    altered,
    build,
    context,
    live,
    observe,
    pod_of,
    pod_spec,
    removed,
    spec,
    with_pod,
    with_pods,
)

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


def declared(**facts: Any) -> Context:
    if facts:
        return context(facts=Facts(**facts), **REGIONS)
    return context(**REGIONS)


def test_no_affinity_without_residency() -> None:
    ctx = context()

    assert residency.affinity(ctx) is None
    assert "affinity" not in pod_spec(build(ctx).by_ref()[ctx.names.deployment])


def test_required_affinity_to_the_declared_regions() -> None:
    assert residency.affinity(declared()) == {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [IN_REGIONS]}]
            }
        }
    }


def test_deployment_carries_the_affinity() -> None:
    ctx = declared()

    assert terms(build(ctx).by_ref()[ctx.names.deployment]) == [{"matchExpressions": [IN_REGIONS]}]


def test_check_passes_without_residency_wherever_the_pods_run() -> None:
    ctx = context(facts=Facts(node_regions={NODE: "us-east-1"}))
    result = residency.check(ctx, observe(ctx))

    assert (result.name, result.status, result.reason) == ("data-residency", "Pass", "NotRequested")


def test_check_passes_the_built_deployment_with_its_pod_in_a_region() -> None:
    ctx = declared(node_regions={NODE: "eu-central-1"})
    result = residency.check(ctx, observe(ctx))

    assert (result.status, result.reason) == ("Pass", "RegionsEnforced")
    assert result.message == "pods run only in eu-west-1, eu-central-1"


def test_check_passes_a_narrower_term() -> None:
    ctx = declared()
    narrower = altered(
        observe(ctx),
        "Deployment",
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
    ("operator changed", lambda item: terms(item)[0]["matchExpressions"][0].update(operator="NotIn")),
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
def test_check_fails_when_the_template_lets_pods_run_elsewhere(mutation: Mutation) -> None:
    ctx = declared()
    result = residency.check(ctx, altered(observe(ctx), "Deployment", mutation))

    assert (result.status, result.reason) == ("Fail", "AffinityMissing")
    assert "the Deployment's pods are not required to run in eu-west-1, eu-central-1" in result.message


@pytest.mark.parametrize(
    ("node_regions", "problem"),
    [
        ({NODE: "us-east-1"}, f"pod {POD_NAME} runs on node {NODE} in region us-east-1"),
        ({NODE: ""}, f"pod {POD_NAME} runs on node {NODE} in region unknown"),
        ({}, f"pod {POD_NAME} runs on node {NODE} in region unknown"),
    ],
    ids=["another region", "an unlabelled node", "a node not known"],
)
def test_check_fails_on_a_pod_on_a_node_outside_the_regions(
    node_regions: dict[str, str], problem: str
) -> None:
    ctx = declared(node_regions=node_regions)
    result = residency.check(ctx, observe(ctx))

    assert (result.status, result.reason) == ("Fail", "AffinityMissing")
    assert problem in result.message


def test_an_unscheduled_pod_runs_nowhere_yet() -> None:
    ctx = declared(node_regions={})
    observed = with_pod(observe(ctx), lambda pod: pod["spec"].pop("nodeName"))

    assert residency.check(ctx, observed).status == "Pass"


def test_every_pod_is_judged_by_its_own_node() -> None:
    ctx = declared(node_regions={NODE: "eu-west-1", "node-b": "us-east-1"})
    observed = observe(ctx)
    deployment = live(observed, "Deployment")
    elsewhere = pod_of(deployment, observed.replica_sets[0], name="second", node="node-b")
    result = residency.check(ctx, with_pods(observed, elsewhere))

    assert result.message == "pod second runs on node node-b in region us-east-1"


def test_check_fails_without_a_deployment() -> None:
    result = residency.check(declared(), removed(observe(declared()), "Deployment"))

    assert (result.status, result.reason) == ("Fail", "DeploymentMissing")


def test_judging_fails_residency_for_a_pod_with_a_toleration_added() -> None:
    ctx = declared()
    observed = with_pod(observe(ctx), lambda pod: pod["spec"]["tolerations"].append({"operator": "Exists"}))
    (result,) = [item for item in judging.judge(ctx, observed) if item.name == residency.NAME]

    assert result.status == "Fail"
    assert f"pod {POD_NAME}: spec.tolerations (added) differs from the operator's template" in result.message


def test_findings_fail_the_control_even_without_residency() -> None:
    ctx = context()
    observed = replace(observe(ctx), findings={residency.NAME: ("pod x: spec.nodeSelector (added) differs",)})
    result = residency.check(ctx, observed)

    assert (result.status, result.message) == ("Fail", "pod x: spec.nodeSelector (added) differs")


def test_the_template_is_read_from_the_live_deployment() -> None:
    ctx = declared()

    assert terms(live(observe(ctx), "Deployment")) == [{"matchExpressions": [IN_REGIONS]}]


def test_preflight_has_nothing_to_block() -> None:
    assert residency.preflight(declared(), Observed()) is None


# ---------------------------------------------------------------------------- spec.scheduling.nodeAffinity

H100 = {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-H100-80GB-HBM3"]}
US_NODE = {"key": "kubernetes.io/hostname", "operator": "In", "values": ["gpu-us-east-1"]}
ANY_GPU = {"key": "nvidia.com/gpu.present", "operator": "Exists"}


def requiring(*terms: list[dict[str, Any]], **more: Any) -> dict[str, Any]:
    affinity: dict[str, Any] = {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": term} for term in terms]
        }
    }
    return {"scheduling": {"nodeAffinity": {**affinity, **more}}}


def test_every_required_term_carries_the_residency_first() -> None:
    ctx = context(**REGIONS, **requiring([H100], [ANY_GPU, H100]))

    assert terms(build(ctx).by_ref()[ctx.names.deployment]) == [
        {"matchExpressions": [IN_REGIONS, H100]},
        {"matchExpressions": [IN_REGIONS, ANY_GPU, H100]},
    ]


def test_an_extra_term_cannot_widen_the_residency() -> None:
    """Kubernetes ORs the terms: a term naming a node in another region, as an attacker or a careless
    user would add to reach past the residency, still carries the region requirement, so no node
    outside the regions matches it; and the built Deployment passes the check that would fail a term
    without it."""
    ctx = context(**REGIONS, **requiring([H100], [US_NODE]))
    built = build(ctx).by_ref()[ctx.names.deployment]

    assert all(term["matchExpressions"][0] == IN_REGIONS for term in terms(built))
    assert terms(built)[1] == {"matchExpressions": [IN_REGIONS, US_NODE]}
    assert residency.check(ctx, observe(ctx)).status == "Pass"
    without_region = altered(
        observe(ctx), "Deployment", lambda item: terms(item)[1]["matchExpressions"].pop(0)
    )
    assert residency.check(ctx, without_region).status == "Fail"


def test_without_residency_the_declared_terms_apply_as_written() -> None:
    ctx = context(**requiring([H100], [US_NODE]))

    assert residency.affinity(ctx) == {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [H100]}, {"matchExpressions": [US_NODE]}]
            }
        }
    }


def test_preferences_are_kept_beside_the_required_residency() -> None:
    preferred = [{"weight": 80, "preference": {"matchExpressions": [H100]}}]
    ctx = context(
        **REGIONS, scheduling={"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": preferred}}
    )

    assert residency.affinity(ctx) == {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [IN_REGIONS]}]
            },
            "preferredDuringSchedulingIgnoredDuringExecution": preferred,
        }
    }


def test_a_preference_alone_requires_nothing() -> None:
    preferred = [{"weight": 1, "preference": {"matchExpressions": [ANY_GPU]}}]
    ctx = context(scheduling={"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": preferred}})

    assert residency.affinity(ctx) == {
        "nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": preferred}
    }


@pytest.mark.parametrize(
    "node_affinity",
    [
        {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}},
        {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": []}]}},
        {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 1, "preference": {"matchExpressions": []}}
            ]
        },
        {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 0, "preference": {"matchExpressions": [ANY_GPU]}}
            ]
        },
        {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchFields": [US_NODE]}]
            }
        },
    ],
    ids=["no term", "an empty term", "an empty preference", "weight zero", "matchFields"],
)
def test_empty_terms_and_node_fields_are_refused(node_affinity: dict[str, Any]) -> None:
    """An empty term matches no node in Kubernetes; with the region added it would match every node
    of the regions, the opposite of what it said: it is refused, as are node fields, which name nodes
    rather than describe them."""
    with pytest.raises(ValidationError) as caught:
        spec(**REGIONS, scheduling={"nodeAffinity": node_affinity})

    assert "scheduling.nodeAffinity" in v1alpha1.describe(caught.value)
