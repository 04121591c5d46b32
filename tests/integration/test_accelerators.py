"""Models on accelerators, on the real control plane: the API server refuses what Kubernetes would
refuse later (and what it would accept but mean otherwise), the real scheduler places GPU models only on
the GPU nodes of their regions (hack/localcluster.py's fake GPU nodes carry the usual taint), CPU
models never there, and the new pod fields tampered on the live Deployment are reported and repaired."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from localcluster import GPU_NODES, GPU_PRODUCT_LABEL, NODES
from securemodels.api.v1alpha1 import KIND
from support.kube import Kubectl, wait_for
from support.manifests import smd
from support.operator import RESYNC_SECONDS, RunningOperator
from support.paths import EXAMPLES
from unit.test_api_validation import ACCELERATOR_CASES, Case

pytestmark = pytest.mark.integration

WITHIN_A_RESYNC = RESYNC_SECONDS * 3
H100 = "NVIDIA-H100-80GB-HBM3"
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
TEMPLATE = "/spec/template/spec"


def gpu_model(count: int = 1, resource: str = "nvidia.com/gpu", **model: Any) -> dict[str, Any]:
    return {
        "resources": {
            "requests": {"cpu": "2", "memory": "8Gi"},
            "limits": {"cpu": "4", "memory": "16Gi", resource: count},
        },
        **model,
    }


def requiring(*terms: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": list(term)} for term in terms]
        }
    }


PRODUCT_H100 = {"key": GPU_PRODUCT_LABEL, "operator": "In", "values": [H100]}
US_H100_NODE = {"key": "kubernetes.io/hostname", "operator": "In", "values": ["gpu-us-east-1-h100"]}


def pods(kubectl: Kubectl, name: str, namespace: str) -> list[dict[str, Any]]:
    return kubectl.items("pod", namespace, f"app.kubernetes.io/instance={name}")


def scheduled_nodes(kubectl: Kubectl, name: str, namespace: str, replicas: int) -> set[str]:
    """The nodes of the model's pods, once `replicas` of them are scheduled."""

    def probe() -> set[str] | None:
        nodes = [pod["spec"].get("nodeName") for pod in pods(kubectl, name, namespace)]
        placed = [node for node in nodes if node]
        return set(placed) if len(placed) >= replicas else None

    return wait_for(probe, timeout=60, what=f"{replicas} pods of {name} scheduled")


def phase(kubectl: Kubectl, name: str, namespace: str) -> str | None:
    return kubectl.status(name, namespace).get("phase")


def wait_ready(kubectl: Kubectl, name: str, namespace: str) -> dict[str, Any]:
    wait_for(lambda: phase(kubectl, name, namespace) == "Ready", timeout=90, what=f"{name} Ready")
    found: dict[str, Any] = kubectl.get("smd", name, namespace)
    return found


def wait_control(kubectl: Kubectl, name: str, namespace: str, control: str, status: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        found = kubectl.control(kubectl.get("smd", name, namespace), control)
        return found if found and found["status"] == status else None

    return wait_for(probe, timeout=WITHIN_A_RESYNC, interval=0.1, what=f"{control} {status}")


def gpu_nodes_in(*regions: str) -> set[str]:
    return {name for name, node in GPU_NODES.items() if node.region in regions}


# ----------------------------------------------------------------------------------------- admission


@pytest.fixture(scope="module")
def admission_namespace(kubectl: Kubectl) -> Iterator[str]:
    name = f"t-admission-{uuid.uuid4().hex[:5]}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false")


def dry_run(kubectl: Kubectl, namespace: str, spec: dict[str, Any]) -> tuple[int, str]:
    manifest = smd("check", namespace, **spec)
    result = kubectl.run("apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(manifest))
    return result.returncode, result.stderr


@pytest.mark.parametrize("case", ACCELERATOR_CASES, ids=[case.name for case in ACCELERATOR_CASES])
def test_the_api_server_refuses_what_the_operator_refuses_and_accepts_the_near_miss(
    kubectl: Kubectl, admission_namespace: str, case: Case
) -> None:
    """Every new rule, through the CRD's CEL on the real API server: the same spec the Python twin
    refuses (tests/unit/test_api_validation.py) is refused with the same message, naming its field, and
    the near miss is accepted."""
    status, error = dry_run(kubectl, admission_namespace, case.broken)

    assert status != 0
    assert case.rule.message in error
    assert "spec." in error
    assert dry_run(kubectl, admission_namespace, case.kept) == (0, "")


def test_an_unknown_scheduling_field_is_refused_by_name(kubectl: Kubectl, admission_namespace: str) -> None:
    status, error = dry_run(
        kubectl,
        admission_namespace,
        {
            "scheduling": {
                "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"matchFields": []}}
            }
        },
    )

    assert status != 0
    assert "matchFields" in error


EXAMPLE_SMDS = [
    (path.name, document)
    for path in sorted(EXAMPLES.glob("*.yaml"))
    for document in yaml.safe_load_all(path.read_text())
    if document and document.get("kind") == KIND
]


@pytest.mark.parametrize(
    "document",
    [doc for _, doc in EXAMPLE_SMDS],
    ids=[f"{name}:{doc['metadata']['name']}" for name, doc in EXAMPLE_SMDS],
)
def test_every_example_passes_the_crd_of_the_api_server(
    kubectl: Kubectl, admission_namespace: str, document: dict[str, Any]
) -> None:
    manifest = {**document, "metadata": {**document["metadata"], "namespace": admission_namespace}}

    result = kubectl.run("apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(manifest))

    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------------------- scheduling


def test_a_gpu_model_runs_only_on_gpu_nodes_of_its_regions_and_stays_compliant(
    kubectl: Kubectl, namespace: str, operator: RunningOperator
) -> None:
    """Two GPU models in eu-west-1: one tolerates the GPU taint itself, the other gets the toleration
    from the ExtendedResourceToleration admission plugin (on in the local API server, as in GKE). Both
    land on GPU nodes of eu-west-1 only, though us-east-1 has a free H100 node, and both are Compliant:
    the toleration admission added is not taken for a pod the operator did not template."""
    eu = {"residency": {"regions": ["eu-west-1"]}}
    kubectl.apply(
        smd(
            "declared",
            namespace,
            model={**gpu_model(), "replicas": 2},
            scheduling={"tolerations": [GPU_TOLERATION]},
            **eu,
        )
    )
    kubectl.apply(smd("admitted", namespace, model={**gpu_model(), "replicas": 2}, **eu))

    for name in ("declared", "admitted"):
        found = wait_ready(kubectl, name, namespace)
        assert scheduled_nodes(kubectl, name, namespace, 2) <= gpu_nodes_in("eu-west-1")
        assert found["status"]["compliant"] is True, found["status"]["controls"]
    (pod, *_) = pods(kubectl, "admitted", namespace)
    assert GPU_TOLERATION in pod["spec"]["tolerations"]
    assert pod["spec"]["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] == "1"


def test_a_cpu_model_never_lands_on_a_gpu_node(
    kubectl: Kubectl, namespace: str, operator: RunningOperator
) -> None:
    kubectl.apply(smd("cpu", namespace, model={"replicas": 6}))

    wait_ready(kubectl, "cpu", namespace)

    assert scheduled_nodes(kubectl, "cpu", namespace, 6) <= set(NODES)


def test_a_mig_slice_is_scheduled_where_the_slices_are(
    kubectl: Kubectl, namespace: str, operator: RunningOperator
) -> None:
    kubectl.apply(
        smd(
            "slice",
            namespace,
            model=gpu_model(resource="nvidia.com/mig-1g.10gb"),
            scheduling={"tolerations": [GPU_TOLERATION]},
        )
    )

    wait_ready(kubectl, "slice", namespace)

    assert scheduled_nodes(kubectl, "slice", namespace, 1) == {"gpu-eu-central-1-mig"}


def test_node_affinity_narrows_to_one_gpu_product(
    kubectl: Kubectl, namespace: str, operator: RunningOperator
) -> None:
    kubectl.apply(
        smd(
            "h100",
            namespace,
            model={**gpu_model(), "replicas": 2},
            residency={"regions": ["eu-west-1"]},
            scheduling={"tolerations": [GPU_TOLERATION], "nodeAffinity": requiring([PRODUCT_H100])},
        )
    )

    wait_ready(kubectl, "h100", namespace)

    assert scheduled_nodes(kubectl, "h100", namespace, 2) == {"gpu-eu-west-1-h100"}


def test_an_extra_term_cannot_widen_the_residency(
    kubectl: Kubectl, namespace: str, operator: RunningOperator
) -> None:
    """Kubernetes ORs node selector terms. The term naming the H100 node in us-east-1 places the model
    there on its own (the positive control); beside the residency, it reaches nothing outside eu-west-1:
    alone it leaves the pod unschedulable, and beside the H100 term every pod lands in eu-west-1."""
    scheduling = {"tolerations": [GPU_TOLERATION], "nodeAffinity": requiring([US_H100_NODE])}
    kubectl.apply(smd("anywhere", namespace, model=gpu_model(), scheduling=scheduling))
    kubectl.apply(
        smd(
            "resident",
            namespace,
            model=gpu_model(),
            scheduling=scheduling,
            residency={"regions": ["eu-west-1"]},
        )
    )
    widening = {"tolerations": [GPU_TOLERATION], "nodeAffinity": requiring([PRODUCT_H100], [US_H100_NODE])}
    kubectl.apply(
        smd(
            "widened",
            namespace,
            model={**gpu_model(), "replicas": 3},
            scheduling=widening,
            residency={"regions": ["eu-west-1"]},
        )
    )

    assert scheduled_nodes(kubectl, "anywhere", namespace, 1) == {"gpu-us-east-1-h100"}
    assert scheduled_nodes(kubectl, "widened", namespace, 3) == {"gpu-eu-west-1-h100"}

    def unschedulable() -> bool:
        found = pods(kubectl, "resident", namespace)
        conditions = [item for pod in found for item in pod["status"].get("conditions") or []]
        return any(
            item["type"] == "PodScheduled" and item.get("reason") == "Unschedulable" for item in conditions
        )

    wait_for(unschedulable, timeout=60, what="the resident pod refused by the scheduler")
    assert not any(pod["spec"].get("nodeName") for pod in pods(kubectl, "resident", namespace))
    deployment = kubectl.get("deployment", "widened", namespace)
    terms = deployment["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    region = {"key": "topology.kubernetes.io/region", "operator": "In", "values": ["eu-west-1"]}
    assert [term["matchExpressions"][0] for term in terms] == [region, region]


# ---------------------------------------------------------------------------------- tampered live pods


def patch_deployment(kubectl: Kubectl, name: str, namespace: str, *operations: dict[str, Any]) -> None:
    kubectl("patch", "deployment", name, "-n", namespace, "--type=json", "-p", json.dumps(list(operations)))


def volume_index(deployment: dict[str, Any], volume: str) -> int:
    names = [item["name"] for item in deployment["spec"]["template"]["spec"]["volumes"]]
    return names.index(volume)


def test_a_tampered_dev_shm_is_reported_and_restored(
    kubectl: Kubectl, namespace: str, operator: RunningOperator
) -> None:
    model = {
        "sharedMemorySize": "4Gi",
        "resources": {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"cpu": "4", "memory": "16Gi"}},
    }
    kubectl.apply(smd("shm", namespace, model=model))
    wait_ready(kubectl, "shm", namespace)
    index = volume_index(kubectl.get("deployment", "shm", namespace), "shm")

    # On the node's disk instead of memory, and ten times larger.
    patch_deployment(
        kubectl,
        "shm",
        namespace,
        {"op": "remove", "path": f"{TEMPLATE}/volumes/{index}/emptyDir/medium"},
        {"op": "replace", "path": f"{TEMPLATE}/volumes/{index}/emptyDir/sizeLimit", "value": "40Gi"},
    )

    failed = wait_control(kubectl, "shm", namespace, "storage-encryption", "Fail")
    assert "volumes[shm].emptyDir" in failed["message"]
    wait_control(kubectl, "shm", namespace, "storage-encryption", "Pass")
    volume = kubectl.get("deployment", "shm", namespace)["spec"]["template"]["spec"]["volumes"][index]
    assert volume == {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "4Gi"}}


def test_a_toleration_added_to_the_live_deployment_is_reported_and_removed(
    kubectl: Kubectl, namespace: str, operator: RunningOperator
) -> None:
    kubectl.apply(smd("tolerant", namespace, residency={"regions": ["eu-west-1"]}))
    wait_ready(kubectl, "tolerant", namespace)

    # Tolerating every taint would let the pods onto the GPU nodes (and the control plane).
    patch_deployment(
        kubectl,
        "tolerant",
        namespace,
        {"op": "add", "path": f"{TEMPLATE}/tolerations", "value": [{"operator": "Exists"}]},
    )

    failed = wait_control(kubectl, "tolerant", namespace, "data-residency", "Fail")
    assert "tolerations (added)" in failed["message"]
    wait_control(kubectl, "tolerant", namespace, "data-residency", "Pass")
    assert "tolerations" not in kubectl.get("deployment", "tolerant", namespace)["spec"]["template"]["spec"]


def test_a_startup_probe_aimed_at_another_host_is_reported_and_restored(
    kubectl: Kubectl, namespace: str, operator: RunningOperator
) -> None:
    """The kubelet would call that host from the node, past every NetworkPolicy."""
    kubectl.apply(smd("prober", namespace, model={"startupTimeout": "20m"}))
    wait_ready(kubectl, "prober", namespace)
    wanted = kubectl.get("deployment", "prober", namespace)["spec"]["template"]["spec"]["containers"][0]

    patch_deployment(
        kubectl,
        "prober",
        namespace,
        {
            "op": "add",
            "path": f"{TEMPLATE}/containers/0/startupProbe/httpGet/host",
            "value": "169.254.169.254",
        },
    )

    # Repaired in the pass that finds it, before the ReplicaSet could make a pod of it (Pod Security
    # admission refuses such pods anyway).
    failed = wait_control(kubectl, "prober", namespace, "pod-security", "Fail")
    assert "containers[model].startupProbe.httpGet.host (added)" in failed["message"]
    wait_control(kubectl, "prober", namespace, "pod-security", "Pass")
    live = kubectl.get("deployment", "prober", namespace)["spec"]["template"]["spec"]["containers"][0]
    assert live["startupProbe"] == wanted["startupProbe"]
    assert live["startupProbe"]["failureThreshold"] == 120
    assert kubectl.get("deployment", "prober", namespace)["spec"]["progressDeadlineSeconds"] == 1800
