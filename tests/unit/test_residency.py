"""Control data-residency: a required node affinity to the declared regions, and nothing that ORs it away."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

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
