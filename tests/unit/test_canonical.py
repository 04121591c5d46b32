"""What "as the operator wants it" means: an owned object compared whole, over what matters for security,
with the server's form of the operator's own write; a pod compared with the stamp of its template."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from securemodels.desired import canonical
from securemodels.desired.controls import mtls
from securemodels.desired.model import Manifest
from unit.builders import (
    DEFAULT_TOLERATIONS,
    IMAGE,
    STAMP_KEY,
    UID,
    Mutation,
    container,
    context,
    observe,
    owner,
    pod_spec,
    tampered,
)

OBJECT_META = {"name": "x", "namespace": "ml-prod", "resourceVersion": "7", "labels": {"a": "b"}}
OPERATOR_LABELS_OF_META: dict[str, str] = {}  # "a" is not one of the operator's labels
PROJECTIONS: list[tuple[str, Manifest, Manifest]] = [
    (
        "Deployment",
        {"metadata": OBJECT_META, "spec": {"replicas": 1}, "status": {"replicas": 1}},
        {"spec": {"replicas": 1}},
    ),
    ("Service", {"metadata": OBJECT_META, "spec": {"type": "ClusterIP"}}, {"spec": {"type": "ClusterIP"}}),
    (
        "ServiceAccount",
        {
            "metadata": OBJECT_META,
            "automountServiceAccountToken": False,
            "secrets": [{"name": "s"}],
            "imagePullSecrets": [{"name": "p"}],
        },
        {
            "automountServiceAccountToken": False,
            "secrets": [{"name": "s"}],
            "imagePullSecrets": [{"name": "p"}],
        },
    ),
    (
        "ConfigMap",
        {"metadata": OBJECT_META, "data": {"a": "1"}, "binaryData": {"b": "AA=="}, "immutable": True},
        {"data": {"a": "1"}, "binaryData": {"b": "AA=="}, "immutable": True},
    ),
    (
        "Secret",
        {"metadata": OBJECT_META, "type": "kubernetes.io/tls", "data": {"a": "AA=="}, "immutable": False},
        {"type": "kubernetes.io/tls", "data": {"a": "AA=="}, "immutable": False},
    ),
    ("NetworkPolicy", {"metadata": OBJECT_META, "spec": {"podSelector": {}}}, {"spec": {"podSelector": {}}}),
    ("Role", {"metadata": OBJECT_META, "rules": [{"verbs": ["get"]}]}, {"rules": [{"verbs": ["get"]}]}),
    (
        "RoleBinding",
        {"metadata": OBJECT_META, "roleRef": {"name": "r"}, "subjects": [{"name": "s"}]},
        {"roleRef": {"name": "r"}, "subjects": [{"name": "s"}]},
    ),
    (
        "PersistentVolumeClaim",
        {
            "metadata": OBJECT_META,
            "spec": {"storageClassName": "c", "volumeName": "pvc-123", "volumeMode": "Filesystem"},
            "status": {"phase": "Bound"},
        },
        {"spec": {"storageClassName": "c", "volumeMode": "Filesystem"}},
    ),
    ("Secret", {"metadata": OBJECT_META}, {}),
]


@pytest.mark.parametrize(
    ("kind", "item", "expected"),
    PROJECTIONS,
    ids=[f"{kind}-{index}" for index, (kind, _, _) in enumerate(PROJECTIONS)],
)
def test_projection_keeps_only_the_fields_that_decide_what_a_kind_does(
    kind: str, item: Manifest, expected: Manifest
) -> None:
    assert canonical.projection(kind, item) == {**expected, "labels": OPERATOR_LABELS_OF_META}


def test_the_operators_labels_are_compared_and_others_are_not() -> None:
    item = {"metadata": {"labels": {"app.kubernetes.io/managed-by": "secure-model-operator", "team": "a"}}}

    assert canonical.projection("ConfigMap", item) == {
        "labels": {"app.kubernetes.io/managed-by": "secure-model-operator"}
    }
    stripped = {"metadata": {"labels": {"team": "a"}}}
    assert canonical.object_differences("ConfigMap", stripped, item) == [
        "labels.app.kubernetes.io/managed-by (removed)"
    ]


def test_every_kind_the_operator_owns_has_a_projection() -> None:
    ctx = context(
        storage={"size": "1Gi", "storageClassName": "encrypted-gp3"},
        access={"viewers": [{"kind": "Group", "name": "v"}]},
    )
    owned_kinds = {ref.kind for ref in observe(ctx).objects}

    assert owned_kinds <= set(canonical.PROJECTED_FIELDS)


def deployment(annotations: dict[str, str]) -> Manifest:
    return {
        "metadata": {"name": "fraud"},
        "spec": {
            "replicas": 1,
            "template": {"metadata": {"annotations": annotations}, "spec": {"containers": []}},
        },
    }


def test_a_restart_stamp_on_the_template_is_not_compared() -> None:
    restarted = deployment({canonical.RESTARTED_AT_ANNOTATION: "2030-01-01T00:00:00Z", "a": "1"})

    assert canonical.projection("Deployment", restarted) == canonical.projection(
        "Deployment", deployment({"a": "1"})
    )
    assert canonical.object_differences("Deployment", restarted, deployment({"a": "1"})) == []


def test_other_template_annotations_are_compared() -> None:
    assert canonical.object_differences("Deployment", deployment({"a": "2"}), deployment({"a": "1"})) == [
        "spec.template.metadata.annotations.a"
    ]


def test_projection_does_not_change_the_object() -> None:
    restarted = deployment({canonical.RESTARTED_AT_ANNOTATION: "now"})
    before = copy.deepcopy(restarted)

    canonical.projection("Deployment", restarted)

    assert restarted == before


def test_a_bound_claims_volume_name_is_not_drift() -> None:
    wanted = {"spec": {"storageClassName": "c"}}
    bound = {"spec": {"storageClassName": "c", "volumeName": "pvc-1"}}

    assert canonical.object_differences("PersistentVolumeClaim", bound, wanted) == []
    assert canonical.object_differences(
        "PersistentVolumeClaim", {"spec": {"storageClassName": "d"}}, wanted
    ) == ["spec.storageClassName"]


def test_labels_and_annotations_of_the_object_itself_are_not_drift() -> None:
    wanted = {"metadata": {"name": "x"}, "data": {"a": "1"}}
    labelled = {
        "metadata": {"name": "x", "labels": {"team": "ml"}, "annotations": {"n": "1"}},
        "data": {"a": "1"},
    }

    assert canonical.object_differences("ConfigMap", labelled, wanted) == []


CONTAINERS = [{"name": "model", "image": "a"}, {"name": "sidecar", "image": "b"}]
DIFFERENCES: list[tuple[str, Any, Any, list[str]]] = [
    ("equal", {"a": {"b": [1, 2]}}, {"a": {"b": [1, 2]}}, []),
    ("a scalar", 1, 2, ["(whole object)"]),
    ("a key added", {"a": 1, "b": 2}, {"a": 1}, ["b (added)"]),
    ("a key removed", {"a": 1}, {"a": 1, "b": 2}, ["b (removed)"]),
    ("a nested value", {"a": {"b": 1}}, {"a": {"b": 2}}, ["a.b"]),
    ("a null is not an absent key", {"a": None}, {}, ["a (added)"]),
    ("a map where a list was", {"a": {}}, {"a": []}, ["a"]),
    (
        "a named item added",
        {"c": [*CONTAINERS, {"name": "debug"}]},
        {"c": CONTAINERS},
        ["c[debug] (added)"],
    ),
    ("a named item removed", {"c": CONTAINERS[:1]}, {"c": CONTAINERS}, ["c[sidecar] (removed)"]),
    (
        "a named item changed",
        {"c": [CONTAINERS[0], {"name": "sidecar", "image": "x"}]},
        {"c": CONTAINERS},
        ["c[sidecar].image"],
    ),
    (
        "named items compared by name, their order too",
        {"c": CONTAINERS[::-1]},
        {"c": CONTAINERS},
        ["c (order)"],
    ),
    ("an unnamed list compared whole", {"t": [{"key": "a"}, {"key": "c"}]}, {"t": [{"key": "a"}]}, ["t"]),
    ("a list of scalars compared whole", {"v": ["get", "list"]}, {"v": ["get"]}, ["v"]),
    (
        "duplicate names compare the list whole",
        {"c": [{"name": "a"}, {"name": "a"}]},
        {"c": [{"name": "a"}]},
        ["c"],
    ),
    ("a named list emptied", {"c": []}, {"c": CONTAINERS}, ["c"]),
    (
        "every difference, sorted",
        {"z": 1, "a": {"y": 2, "b": 3}, "m": 5},
        {"z": 2, "a": {"y": 2}, "n": 5},
        ["a.b (added)", "m (added)", "n (removed)", "z"],
    ),
]


@pytest.mark.parametrize(
    ("live", "wanted", "paths"), [c[1:] for c in DIFFERENCES], ids=[c[0] for c in DIFFERENCES]
)
def test_differences_name_every_path_that_differs(live: Any, wanted: Any, paths: list[str]) -> None:
    assert canonical.differences(live, wanted) == paths


def test_differences_start_at_a_given_path() -> None:
    assert canonical.differences({"a": 1}, {"a": 2}, "spec") == ["spec.a"]
    assert canonical.differences([1], [2], "spec.v") == ["spec.v"]


def test_object_differences_of_a_deployment_name_container_paths() -> None:
    ctx = context()
    built = observe(ctx).objects[ctx.names.deployment]
    changed = tampered(built, lambda item: container(item, "model").update(image="other@sha256:" + "1" * 64))

    assert canonical.object_differences("Deployment", changed, built) == [
        "spec.template.spec.containers[model].image"
    ]


def test_digest_is_stable_and_ignores_key_order() -> None:
    assert canonical.digest({"a": 1, "b": [1, 2]}) == canonical.digest({"b": [1, 2], "a": 1})
    assert canonical.digest({"a": 1}) != canonical.digest({"a": 2})


# ----------------------------------------------------------------------------------------------- pods

SCHEDULED: dict[str, Any] = {
    "nodeName": "node-a",
    "priority": 1000,
    "preemptionPolicy": "PreemptLowerPriority",
    "serviceAccount": "fraud",
}


def template() -> dict[str, Any]:
    ctx = context()
    return pod_spec(observe(ctx).objects[ctx.names.deployment])


def test_as_templated_strips_what_scheduling_and_admission_add() -> None:
    pod = {**template(), **SCHEDULED, "tolerations": copy.deepcopy(DEFAULT_TOLERATIONS)}

    assert canonical.pod_spec_as_templated(pod) == template()


TOLERATIONS: list[tuple[str, dict[str, Any], bool]] = [
    ("default not-ready", DEFAULT_TOLERATIONS[0], False),
    ("default unreachable", DEFAULT_TOLERATIONS[1], False),
    ("a custom key", {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}, True),
    ("a default key for NoSchedule", {**DEFAULT_TOLERATIONS[0], "effect": "NoSchedule"}, True),
    ("a default key with Equal", {**DEFAULT_TOLERATIONS[1], "operator": "Equal", "value": "x"}, True),
    ("every taint", {"operator": "Exists"}, True),
]


@pytest.mark.parametrize(
    ("toleration", "kept"), [c[1:] for c in TOLERATIONS], ids=[c[0] for c in TOLERATIONS]
)
def test_as_templated_keeps_every_toleration_but_the_two_defaults(
    toleration: dict[str, Any], kept: bool
) -> None:
    pod = {"containers": [], "tolerations": [*copy.deepcopy(DEFAULT_TOLERATIONS), toleration]}

    assert canonical.pod_spec_as_templated(pod).get("tolerations") == ([toleration] if kept else None)


def test_as_templated_does_not_change_the_pod() -> None:
    pod = {**template(), **SCHEDULED, "tolerations": copy.deepcopy(DEFAULT_TOLERATIONS)}
    before = copy.deepcopy(pod)

    canonical.pod_spec_as_templated(pod)

    assert pod == before


def test_the_mac_of_a_template_and_of_a_pod_made_from_it_are_equal() -> None:
    pod = {**template(), **SCHEDULED, "tolerations": copy.deepcopy(DEFAULT_TOLERATIONS)}

    assert canonical.template_mac(STAMP_KEY, UID, pod) == canonical.template_mac(STAMP_KEY, UID, template())


def test_the_mac_depends_on_the_key_and_on_the_spec() -> None:
    base = canonical.template_mac(STAMP_KEY, UID, template())
    changed = tampered({"kind": "Pod", "spec": template()}, lambda pod: pod["spec"].update(hostPID=True))

    assert canonical.template_mac(b"another key", UID, template()) != base
    assert canonical.template_mac(STAMP_KEY, UID, changed["spec"]) != base
    assert len(base) == 64


def the_pod() -> Manifest:
    (pod,) = observe(context()).pods
    return pod


def judge(pod: Manifest, key: bytes = STAMP_KEY) -> canonical.PodVerdict:
    return canonical.judge_pod(key, UID, pod, template())


def test_a_pod_made_from_the_stamped_template_is_stamped() -> None:
    assert judge(the_pod()) == canonical.PodVerdict(the_pod()["metadata"]["name"], stamped=True)


def on_spec(mutation: Mutation) -> Mutation:
    return lambda pod: mutation(pod["spec"])


def on_model(**fields: Any) -> Mutation:
    return lambda pod: container(pod, "model").update(fields)


def other_template_annotation(pod: Manifest) -> None:
    """The stamp of another SMD's template (one that runs another image), copied onto a pod of this
    SMD's that was changed to run that image."""
    other = context(model={"image": IMAGE.replace("fraud", "other")}, who=owner("other"))
    other_template = pod_spec(observe(other).objects[other.names.deployment])
    pod["metadata"]["annotations"][canonical.TEMPLATE_MAC_ANNOTATION] = canonical.template_mac(
        STAMP_KEY, UID, other_template
    )
    container(pod, "model")["image"] = container({"kind": "Pod", "spec": other_template}, "model")["image"]


FORGED: list[tuple[str, Mutation, str]] = [
    (
        "sidecar removed",
        on_spec(lambda spec: spec.update(containers=spec["containers"][:1])),
        f"spec.containers[{mtls.SIDECAR}] (removed)",
    ),
    (
        "init container added",
        on_spec(lambda spec: spec.update(initContainers=[{"name": "fetch", "image": IMAGE}])),
        "spec.initContainers (added)",
    ),
    (
        "host aliases",
        on_spec(lambda spec: spec.update(hostAliases=[{"ip": "10.0.0.1", "hostnames": ["registry"]}])),
        "spec.hostAliases (added)",
    ),
    (
        "one process namespace",
        on_spec(lambda spec: spec.update(shareProcessNamespace=True)),
        "spec.shareProcessNamespace (added)",
    ),
    (
        "environment from a Secret",
        on_model(envFrom=[{"secretRef": {"name": "creds"}}]),
        "spec.containers[model].envFrom (added)",
    ),
    ("image changed", on_model(image=f"{IMAGE[:-1]}0"), "spec.containers[model].image"),
    ("stamp copied from another template", other_template_annotation, "spec.containers[model].image"),
    (
        "a toleration added",
        on_spec(lambda spec: spec["tolerations"].append({"operator": "Exists"})),
        "spec.tolerations (added)",
    ),
    (
        "a volume added",
        on_spec(lambda spec: spec["volumes"].append({"name": "host", "hostPath": {"path": "/"}})),
        "spec.volumes[host] (added)",
    ),
]


@pytest.mark.parametrize(("mutation", "path"), [c[1:] for c in FORGED], ids=[c[0] for c in FORGED])
def test_a_pod_that_differs_from_its_stamp_is_not_stamped_and_the_difference_is_named(
    mutation: Mutation, path: str
) -> None:
    verdict = judge(tampered(the_pod(), mutation))

    assert verdict.stamped is False
    assert path in verdict.differences


def test_a_pod_stamped_with_another_key_is_not_stamped() -> None:
    verdict = judge(the_pod(), key=b"another key")

    assert (verdict.stamped, verdict.differences) == (False, ())


def test_a_pod_without_a_stamp_is_not_stamped() -> None:
    pod = tampered(the_pod(), lambda item: item["metadata"]["annotations"].clear())

    assert judge(pod).stamped is False


def test_without_the_current_template_no_difference_is_named() -> None:
    pod = tampered(the_pod(), on_model(image="x"))
    verdict = canonical.judge_pod(STAMP_KEY, UID, pod, None)

    assert (verdict.stamped, verdict.differences) == (False, ())


def test_a_pod_of_an_earlier_template_is_stamped_though_it_differs_from_the_current_one() -> None:
    current = tampered({"kind": "Pod", "spec": template()}, on_model(image=f"{IMAGE[:-1]}0"))["spec"]

    assert canonical.judge_pod(STAMP_KEY, UID, the_pod(), current).stamped is True


def test_a_pod_without_metadata_is_judged_by_an_unknown_name() -> None:
    verdict = canonical.judge_pod(STAMP_KEY, UID, {"spec": {}}, None)

    assert (verdict.name, verdict.stamped) == ("?", False)


# ------------------------------------------------------------------------------------ volume claims

STORAGE: dict[str, Any] = {"storage": {"storageClassName": "encrypted-gp3", "size": "10Gi"}}


def _claim(ctx: Any) -> Manifest:
    return copy.deepcopy(
        next(item for ref, item in observe(ctx).objects.items() if ref.kind == "PersistentVolumeClaim")
    )


def test_a_claim_with_the_operators_labels_copied_is_not_the_smds_without_the_claim_stamp() -> None:
    ctx = context(**STORAGE)
    forged = _claim(ctx)
    del forged["metadata"]["annotations"][canonical.CLAIM_MAC_ANNOTATION]
    forged["metadata"]["annotations"].pop(canonical.OBJECT_MAC_ANNOTATION, None)

    assert canonical.owns(STAMP_KEY, ctx.owner, ctx.names.volume_claim, _claim(ctx))
    assert not canonical.owns(STAMP_KEY, ctx.owner, ctx.names.volume_claim, forged)


def test_a_claim_made_for_an_earlier_smd_of_the_same_name_is_taken_over() -> None:
    earlier = context(**STORAGE, who=owner(uid="00000000-0000-4000-8000-00000000dead"))
    now = context(**STORAGE)
    retained = _claim(earlier)

    assert canonical.owns(STAMP_KEY, now.owner, now.names.volume_claim, retained)
    other_name = context(**STORAGE, who=owner(name="other"))
    assert not canonical.owns(STAMP_KEY, other_name.owner, now.names.volume_claim, retained)
    assert not canonical.owns(b"another key", now.owner, now.names.volume_claim, retained)
