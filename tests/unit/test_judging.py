"""The judges every control shares (drift, pods), whose findings are attributed to the control whose
promise they break, and the registry that judging and preflight iterate over."""

from __future__ import annotations

from dataclasses import replace
from enum import StrEnum

import pytest

from securemodels.desired import judging
from securemodels.desired.controls import (
    image_digest,
    mtls,
    network,
    pod_security,
    rbac,
    registry,
    residency,
    storage,
    weights,
)
from securemodels.desired.controls.base import Control
from securemodels.desired.model import Facts, Manifest, Observed
from securemodels.desired.naming import ChildRef
from unit.builders import (
    NAMESPACE,
    POD_NAME,
    STORAGE_CLASS,
    allowing,
    container,
    context,
    observe,
    restamped,
    with_pod,
)

NETWORK, MTLS, IMAGE, POD, RESIDENCY, STORAGE, RBAC = (
    network.NAME,
    mtls.NAME,
    image_digest.NAME,
    pod_security.NAME,
    residency.NAME,
    storage.NAME,
    rbac.NAME,
)
WEIGHTS = weights.NAME
ATTRIBUTIONS: list[tuple[str, str, str]] = [
    ("Deployment", f"spec.template.spec.containers[{mtls.SIDECAR}].image", MTLS),
    ("Deployment", f"spec.template.spec.containers[{mtls.SIDECAR}] (removed)", MTLS),
    ("Deployment", "spec.template.spec.volumes[mtls-tls].secret.secretName", MTLS),
    ("Pod", f"spec.containers[{mtls.SIDECAR}].command", MTLS),
    ("Deployment", "spec.template.spec.containers[model].image", IMAGE),
    ("Pod", "spec.containers[model].image", IMAGE),
    ("Pod", "spec.containers[debug].image (added)", IMAGE),
    ("Deployment", "spec.template.spec.affinity", RESIDENCY),
    ("Pod", "spec.affinity (removed)", RESIDENCY),
    ("Pod", "spec.nodeSelector (added)", RESIDENCY),
    ("Pod", "spec.tolerations (added)", RESIDENCY),
    ("Deployment", "spec.template.spec.topologySpreadConstraints (added)", RESIDENCY),
    ("Pod", "spec.volumes[host] (added)", STORAGE),
    ("Deployment", "spec.template.spec.volumes[scratch].emptyDir", STORAGE),
    ("Pod", "spec.containers[model].volumeMounts", STORAGE),
    ("Deployment", "spec.template.metadata.labels.app.kubernetes.io/instance", NETWORK),
    ("Deployment", "spec.template.metadata.labels.team (added)", NETWORK),
    ("Pod", "metadata.labels.team (added)", NETWORK),
    ("Service", "spec.ports", MTLS),
    ("Service", "spec.ports[https].targetPort", MTLS),
    ("Service", "spec.externalIPs (added)", NETWORK),
    ("Service", "spec.type", NETWORK),
    ("Service", "spec.selector.app (added)", NETWORK),
    ("Service", "", NETWORK),
    ("Deployment", "spec.paused (added)", POD),
    ("Deployment", "spec.replicas", POD),
    ("Deployment", "spec.strategy.type", POD),
    ("Deployment", "", POD),
    ("Deployment", "spec.template.spec.hostPID (added)", POD),
    ("Pod", "spec.initContainers (added)", POD),
    ("Deployment", "spec.template.spec.initContainers (removed)", WEIGHTS),
    ("Deployment", "spec.template.spec.initContainers[verify-weights].args", WEIGHTS),
    ("Pod", "spec.initContainers[verify-weights].image", WEIGHTS),
    ("Pod", "spec.initContainers[verify-weights].restartPolicy (added)", WEIGHTS),
    ("Deployment", "spec.template.spec.volumes[weights].image.reference", WEIGHTS),
    ("Deployment", "spec.template.spec.volumes[signing-trust].configMap.name", WEIGHTS),
    ("Pod", "spec.containers[model].volumeMounts[weights].readOnly (removed)", WEIGHTS),
    ("Pod", "spec.shareProcessNamespace (added)", POD),
    ("Pod", "spec.containers[model].securityContext.privileged", POD),
    ("Pod", "spec.containers[model].envFrom (added)", POD),
    ("Pod", "spec.containers[model].imagePullPolicy", POD),
    ("Pod", "spec.serviceAccountName", POD),
    ("NetworkPolicy", "spec.ingress", NETWORK),
    ("NetworkPolicy", "", NETWORK),
    ("Role", "rules", RBAC),
    ("RoleBinding", "subjects", RBAC),
    ("ServiceAccount", "automountServiceAccountToken", RBAC),
    ("ConfigMap", "data.nginx.conf", MTLS),
    ("Secret", "data.tls.crt", MTLS),
    ("PersistentVolumeClaim", "spec.storageClassName", STORAGE),
    ("Deployment", "spec.template.spec.volumes[shm].emptyDir.sizeLimit", STORAGE),
    ("Deployment", "spec.template.spec.volumes[shm].emptyDir.medium (removed)", STORAGE),
    ("Pod", "spec.containers[model].volumeMounts[shm].mountPath", STORAGE),
    (
        "Deployment",
        "spec.template.spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution",
        RESIDENCY,
    ),
    ("Deployment", "spec.template.spec.tolerations", RESIDENCY),
    ("Deployment", "spec.template.spec.runtimeClassName (added)", POD),
    ("Deployment", "spec.template.spec.priorityClassName", POD),
    ("Deployment", "spec.template.spec.containers[model].startupProbe.failureThreshold", POD),
    ("Pod", "spec.containers[model].resources.limits.nvidia.com/gpu", POD),
    ("Deployment", "spec.progressDeadlineSeconds", POD),
]


@pytest.mark.parametrize(
    ("kind", "path", "control"), ATTRIBUTIONS, ids=[f"{c[0]} {c[1]}" for c in ATTRIBUTIONS]
)
def test_a_difference_is_attributed_to_the_control_whose_promise_it_breaks(
    kind: str, path: str, control: str
) -> None:
    assert judging.attribute(kind, path) == control


def test_every_attribution_names_a_registered_control() -> None:
    names = {control.NAME for control in registry.CONTROLS}

    assert {judging.attribute(kind, path) for kind, path, _ in ATTRIBUTIONS} <= names


DEPLOYMENT = ChildRef("Deployment", NAMESPACE, "fraud")
POLICY = ChildRef("NetworkPolicy", NAMESPACE, "fraud-network")
SERVICE = ChildRef("Service", NAMESPACE, "fraud")


def findings(observed: Observed) -> dict[str, tuple[str, ...]]:
    return judging.findings(context(), observed)


def test_nothing_is_found_at_rest() -> None:
    assert findings(observe(context())) == {}


def test_a_deleted_object_is_reported_to_its_control() -> None:
    found = findings(Observed(drift={POLICY: (judging.DELETED,), SERVICE: (judging.DELETED,)}))

    assert found == {
        NETWORK: (
            "NetworkPolicy fraud-network was deleted outside the operator; restored",
            "Service fraud was deleted outside the operator; restored",
        )
    }


def test_a_changed_object_is_reported_to_each_control_for_its_own_paths() -> None:
    paths = (
        "spec.replicas",
        "spec.template.spec.containers[model].image",
        "spec.template.spec.hostPID (added)",
    )
    found = findings(Observed(drift={DEPLOYMENT: paths}))

    assert found == {
        POD: (
            "Deployment fraud was changed outside the operator at spec.replicas, "
            "spec.template.spec.hostPID (added); restored",
        ),
        IMAGE: (
            "Deployment fraud was changed outside the operator at "
            "spec.template.spec.containers[model].image; restored",
        ),
    }


def test_a_long_list_of_paths_is_summarised() -> None:
    paths = tuple(f"spec.ingress[{index}]" for index in range(judging.MAX_PATHS + 3))
    (message,) = findings(Observed(drift={POLICY: paths}))[NETWORK]

    assert message.endswith(f"spec.ingress[{judging.MAX_PATHS - 1}] and 3 more; restored")
    assert f"spec.ingress[{judging.MAX_PATHS}]" not in message


def test_a_pod_that_runs_another_spec_is_reported_with_where_it_differs() -> None:
    observed = with_pod(observe(context()), lambda pod: pod["spec"].update(hostPID=True))

    assert findings(observed) == {
        POD: (
            f"pod {POD_NAME} does not run a pod spec the operator wrote "
            "(differs from the current template at spec.hostPID (added))",
        )
    }


def test_a_pods_differences_also_go_to_the_controls_they_break() -> None:
    def sidecar_removed_and_node_chosen(pod: Manifest) -> None:
        pod["spec"]["containers"] = pod["spec"]["containers"][:1]
        pod["spec"]["nodeSelector"] = {"zone": "a"}

    found = findings(with_pod(observe(context()), sidecar_removed_and_node_chosen))

    assert found[MTLS] == (
        f"pod {POD_NAME}: spec.containers[{mtls.SIDECAR}] (removed) differs from the operator's template",
    )
    assert found[RESIDENCY] == (
        f"pod {POD_NAME}: spec.nodeSelector (added) differs from the operator's template",
    )
    assert len(found[POD]) == 1
    assert "spec.containers[mtls-proxy] (removed), spec.nodeSelector (added)" in found[POD][0]


def test_a_pod_stamped_with_another_key_is_reported_without_differences() -> None:
    (pod,) = observe(context()).pods
    observed = replace(observe(context()), pods=(restamped(pod, key=b"someone else's key"),))

    assert findings(observed) == {POD: (f"pod {POD_NAME} does not run a pod spec the operator wrote",)}


def test_a_pod_stamped_for_its_own_spec_is_not_reported() -> None:
    observed = with_pod(observe(context()), lambda pod: pod["spec"].update(hostPID=True), stamp=True)

    assert findings(observed) == {}


def test_drift_and_pods_are_reported_together() -> None:
    observed = replace(
        with_pod(observe(context()), lambda pod: container(pod, "model").update(image="x")),
        drift={POLICY: ("spec.egress",)},
    )
    found = findings(observed)

    assert set(found) == {NETWORK, POD, IMAGE}


def test_judge_gives_one_verdict_per_control_in_registry_order() -> None:
    ctx = context()
    results = judging.judge(ctx, observe(ctx))

    assert [result.name for result in results] == [control.NAME for control in registry.CONTROLS]
    assert [result.status for result in results] == ["Pass"] * len(registry.CONTROLS)


def test_judge_hands_each_control_its_findings() -> None:
    ctx = context()
    observed = replace(observe(ctx), drift={POLICY: ("spec.ingress",)})
    results = {result.name: result for result in judging.judge(ctx, observed)}

    assert results[NETWORK].status == "Fail"
    assert (
        "NetworkPolicy fraud-network was changed outside the operator at spec.ingress"
        in results[NETWORK].message
    )
    assert [name for name, result in results.items() if result.status == "Fail"] == [NETWORK]
    assert observed.findings == {}


def test_judge_replaces_findings_given_with_its_own() -> None:
    ctx = context()
    observed = replace(observe(ctx), findings={NETWORK: ("stale",)})

    assert all(result.status == "Pass" for result in judging.judge(ctx, observed))


def test_the_registry_lists_each_control_once_in_documented_order() -> None:
    assert [control.NAME for control in registry.CONTROLS] == [
        "image-digest",
        "network-isolation",
        "mtls",
        "rbac",
        "storage-encryption",
        "data-residency",
        "pod-security",
        "weights-verification",
    ]
    assert registry.CONDITION_OF == {
        "image-digest": "ImagePinned",
        "network-isolation": "NetworkIsolated",
        "mtls": "MTLSReady",
        "rbac": "LeastPrivilege",
        "storage-encryption": "StorageEncrypted",
        "data-residency": "ResidencyEnforced",
        "pod-security": "PodHardened",
        "weights-verification": "WeightsVerified",
    }


@pytest.mark.parametrize("control", registry.CONTROLS, ids=[control.NAME for control in registry.CONTROLS])
def test_every_control_follows_the_protocol(control: Control) -> None:
    assert issubclass(control.Reason, StrEnum)
    assert len(set(control.Reason)) == len(list(control.Reason))
    assert control.preflight(context(), observe(context())) is None
    assert control.check(context(), observe(context())).name == control.NAME


def test_preflight_passes_a_realisable_spec() -> None:
    ctx = context(storage={"size": "1Gi", "storageClassName": STORAGE_CLASS})

    assert judging.preflight(ctx, observe(ctx)) == ()


def test_preflight_collects_every_controls_blocker_in_registry_order() -> None:
    ctx = context(
        config=allowing("quay.io"),
        facts=Facts(storage_class=None),
        storage={"size": "1Gi", "storageClassName": STORAGE_CLASS},
        network={
            "egress": [{"to": [{"cidr": "0.0.0.0/8"}, {"cidr": "1.0.0.0/8"}], "ports": [{"port": 443}]}]
        },
        access={"viewers": [{"kind": "Group", "name": f"system:serviceaccounts:{NAMESPACE}"}]},
    )

    blockers = judging.preflight(ctx, Observed())

    assert [blocker.reason for blocker in blockers] == [
        image_digest.Reason.REGISTRY_NOT_ALLOWED,
        network.Reason.TOO_BROAD,
        rbac.Reason.GRANTS_MODEL_ACCOUNT,
        storage.Reason.CLASS_NOT_FOUND,
    ]
    assert all(isinstance(blocker.reason, StrEnum) for blocker in blockers)
