"""spec.model.resources with accelerators: what is accepted, what the container gets, and pods that
admission gave a GPU toleration still counted as the operator's."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from securemodels.api import v1alpha1
from securemodels.desired import judging, workload
from securemodels.desired.controls import pod_security
from unit.builders import SERVER, container, context, observe, pod_spec, spec, with_pod

GPU_LIMITS = {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": 1}
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def with_resources(**resources: Any) -> dict[str, Any]:
    return {"model": {"resources": resources}}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", Decimal(0)),
        ("500m", Decimal("0.5")),
        ("2", Decimal(2)),
        ("1.5", Decimal("1.5")),
        ("1k", Decimal(1000)),
        ("1Ki", Decimal(1024)),
        ("512Mi", Decimal(512 * 2**20)),
        ("1.5Gi", Decimal(3 * 2**29)),
        ("2T", Decimal(2 * 10**12)),
        ("1Ti", Decimal(2**40)),
    ],
)
def test_quantities_are_read_as_kubernetes_reads_them(text: str, value: Decimal) -> None:
    assert v1alpha1.quantity(text) == value


@pytest.mark.parametrize("text", ["", "-1", "1e3", "1 Gi", "1gi", "Gi", "0x10"])
def test_text_that_is_no_quantity_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="invalid quantity"):
        v1alpha1.quantity(text)


@pytest.mark.parametrize(
    ("name", "extended"),
    [
        ("nvidia.com/gpu", True),
        ("nvidia.com/mig-1g.10gb", True),
        ("amd.com/gpu", True),
        ("aws.amazon.com/neuroncore", True),
        ("gpu.intel.com/i915", True),
        ("cpu", False),
        ("memory", False),
        ("ephemeral-storage", False),
        ("hugepages-2Mi", False),
        ("kubernetes.io/gpu", False),
        ("example.kubernetes.io/gpu", False),
        ("requests.nvidia.com/gpu", False),
        ("NVIDIA.com/gpu", False),
        ("nvidia.com/", False),
        ("nvidia.com/-gpu", False),
        ("/gpu", False),
        ("nvidia.com/" + "g" * 64, False),
        ("a" * 121 + ".com/gpu", False),
        ("a" * 120 + ".com/gpu", True),
    ],
)
def test_extended_resource_names_follow_kubernetes(name: str, extended: bool) -> None:
    assert v1alpha1.is_extended_resource(name) is extended


def test_quantities_may_be_written_as_integers_as_in_kubernetes() -> None:
    parsed = spec(**with_resources(requests={"cpu": 2, "memory": "8Gi"}, limits=GPU_LIMITS)).model.resources

    assert parsed.requests == {"cpu": "2", "memory": "8Gi"}
    assert parsed.limits == {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"}


@pytest.mark.parametrize("value", [True, 1.5, -1, "-1", "one", [1]], ids=repr)
def test_other_values_are_refused_where_they_stand(value: object) -> None:
    with pytest.raises(ValidationError) as caught:
        spec(**with_resources(limits={**GPU_LIMITS, "nvidia.com/gpu": value}))

    assert "spec.model.resources.limits.nvidia.com/gpu" in v1alpha1.describe(caught.value)


def test_at_most_eight_resources_a_side() -> None:
    many = {f"vendor{index}.example/device": 1 for index in range(7)}
    with pytest.raises(ValidationError) as caught:
        spec(**with_resources(limits={**GPU_LIMITS, **many}))

    assert "spec.model.resources.limits" in v1alpha1.describe(caught.value)


def test_the_container_requests_what_it_limits_for_an_extended_resource() -> None:
    """Kubernetes fills a missing request from its limit on a Pod, not on a Deployment's template: the
    template says it itself, or every pod would differ from the template its stamp covers."""
    ctx = context(**with_resources(requests={"cpu": "4", "memory": "16Gi"}, limits=GPU_LIMITS))

    assert container(workload.deployment(ctx, SERVER), "model")["resources"] == {
        "requests": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
        "limits": {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"},
    }


def test_a_mig_slice_is_requested_like_a_gpu() -> None:
    mig = {"nvidia.com/mig-1g.10gb": "2"}
    ctx = context(
        **with_resources(requests={"cpu": "1", "memory": "4Gi", **mig}, limits={**GPU_LIMITS, **mig})
    )
    resources = container(workload.deployment(ctx, SERVER), "model")["resources"]

    assert resources["requests"]["nvidia.com/mig-1g.10gb"] == resources["limits"]["nvidia.com/mig-1g.10gb"]


def test_without_accelerators_the_container_gets_cpu_and_memory_only() -> None:
    resources = container(workload.deployment(context(), SERVER), "model")["resources"]

    assert resources == {
        "requests": {"cpu": "250m", "memory": "512Mi"},
        "limits": {"cpu": "2", "memory": "2Gi"},
    }


# ------------------------------------------------------------------ tolerations added at admission


def gpu_context(**scheduling: Any) -> Any:
    return context(**with_resources(limits=GPU_LIMITS), scheduling=scheduling)


def admitted_with(toleration: dict[str, Any]) -> Any:
    """What ExtendedResourceToleration does to each pod that requests nvidia.com/gpu."""
    return lambda pod: pod["spec"]["tolerations"].append(dict(toleration))


def test_a_pod_given_its_gpu_toleration_by_admission_runs_the_operators_template() -> None:
    ctx = gpu_context()
    observed = with_pod(observe(ctx), admitted_with(GPU_TOLERATION))
    verdicts = {item.name: item for item in judging.judge(ctx, observed)}

    assert verdicts[pod_security.NAME].status == "Pass", verdicts[pod_security.NAME].message
    assert verdicts["data-residency"].status == "Pass"


def test_a_pod_whose_template_declares_the_toleration_passes_every_control() -> None:
    ctx = gpu_context(tolerations=[GPU_TOLERATION])
    template = pod_spec(workload.deployment(ctx, SERVER))

    assert GPU_TOLERATION in template["tolerations"]
    assert {item.status for item in judging.judge(ctx, observe(ctx))} == {"Pass"}


@pytest.mark.parametrize(
    "toleration",
    [
        {"key": "nvidia.com/gpu", "operator": "Exists"},
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute"},
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"},
        {"key": "amd.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 1},
    ],
    ids=["every effect", "NoExecute", "by value", "another resource", "control plane", "with seconds"],
)
def test_any_other_added_toleration_is_a_pod_the_operator_did_not_template(
    toleration: dict[str, Any],
) -> None:
    """Only the exact toleration admission adds for a resource the pod requests is set aside: any
    other lets the pod onto nodes its template kept it from."""
    ctx = gpu_context()
    observed = with_pod(observe(ctx), admitted_with(toleration))
    verdicts = {item.name: item for item in judging.judge(ctx, observed)}

    assert verdicts[pod_security.NAME].status == "Fail"
    assert "does not run a pod spec the operator wrote" in verdicts[pod_security.NAME].message


def test_a_cpu_pod_given_a_gpu_toleration_did_not_come_from_the_template() -> None:
    ctx = context()
    observed = with_pod(observe(ctx), admitted_with(GPU_TOLERATION))

    assert {item.name: item.status for item in judging.judge(ctx, observed)}[pod_security.NAME] == "Fail"
