"""desired.build and referenced_objects: everything an SMD becomes, in apply order, and the live state
of what it builds passing every control."""

from __future__ import annotations

import re
from typing import Any

import pytest

from securemodels import desired
from securemodels.desired import judging, naming
from securemodels.desired.model import Facts
from securemodels.pki import KeyPair
from unit.builders import BUNDLE, build, context, find, kinds, observe, owner, storage_class

FULL: dict[str, Any] = {
    "storage": {"size": "20Gi", "storageClassName": "encrypted-gp3"},
    "access": {
        "viewers": [{"kind": "Group", "name": "auditors"}],
        "deployers": [{"kind": "User", "name": "alice"}],
    },
    "mtls": {
        "clients": [{"name": "gateway", "namespace": "ml-gw"}, {"name": "batch", "namespace": "ml-jobs"}]
    },
}
PAIR = KeyPair(cert_pem=b"c", key_pem=b"k")
ENV: dict[str, Any] = {
    "model": {
        "env": [
            {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "a"}}},
            {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "b"}}},
            {"name": "D", "value": "literal"},
        ],
        "secretFiles": [{"name": "one", "secretName": "creds"}, {"name": "two", "secretName": "creds"}],
    }
}


def test_owned_objects_in_apply_order() -> None:
    owned = build(context(**FULL)).owned

    assert [(item["kind"], item["metadata"]["name"]) for item in owned] == [
        ("ServiceAccount", "fraud"),
        ("Secret", "fraud-tls"),
        ("ConfigMap", "fraud-sidecar"),
        ("NetworkPolicy", "fraud-network"),
        ("Role", "fraud-viewer"),
        ("RoleBinding", "fraud-viewer"),
        ("Role", "fraud-deployer"),
        ("RoleBinding", "fraud-deployer"),
        ("PersistentVolumeClaim", "fraud-models"),
        ("Service", "fraud"),
        ("Deployment", "fraud"),
    ]


def test_minimal_spec_builds_the_minimum() -> None:
    assert kinds(build(context()).owned) == [
        "ServiceAccount",
        "Secret",
        "ConfigMap",
        "NetworkPolicy",
        "Service",
        "Deployment",
    ]


def test_every_owned_object_is_owned_stamped_and_in_the_namespace() -> None:
    owned = build(context(**FULL)).owned

    for item in owned:
        metadata = item["metadata"]
        assert metadata["namespace"] == "ml-prod"
        assert naming.owned_by(item, owner(), desired.ref_of(item))
        if item["kind"] == "PersistentVolumeClaim":  # retained: it outlives the SMD
            assert "ownerReferences" not in metadata
        else:
            assert metadata["ownerReferences"] == [owner().reference()]
        assert metadata["labels"]["app.kubernetes.io/managed-by"] == naming.MANAGED_BY
        assert re.fullmatch(r"[0-9a-f]{16}", desired.desired_hash(item) or "")


def test_stamp_is_stable_for_the_same_content() -> None:
    first, second = build(context(**FULL)), build(context(**FULL))

    assert first == second


def test_stamp_changes_only_for_the_objects_whose_content_changed() -> None:
    before = {item["kind"]: desired.desired_hash(item) for item in build(context()).owned}
    after = {item["kind"]: desired.desired_hash(item) for item in build(context(model={"replicas": 3})).owned}

    assert {kind for kind in before if before[kind] != after[kind]} == {"Deployment"}


def test_stamp_adds_to_existing_annotations_without_changing_the_input() -> None:
    manifest: dict[str, Any] = {"kind": "ConfigMap", "metadata": {"name": "x", "annotations": {"a": "b"}}}
    stamped = desired.stamp(manifest)

    assert stamped["metadata"]["annotations"]["a"] == "b"
    assert desired.desired_hash(stamped) is not None
    assert manifest == {"kind": "ConfigMap", "metadata": {"name": "x", "annotations": {"a": "b"}}}


@pytest.mark.parametrize("manifest", [None, {}, {"metadata": {}}, {"metadata": {"annotations": None}}])
def test_desired_hash_of_unstamped_objects(manifest: dict[str, Any] | None) -> None:
    assert desired.desired_hash(manifest) is None


def remote(facts: Facts, clients: dict[str, KeyPair]) -> list[tuple[str, str, str]]:
    built = build(context(facts=facts, **FULL), clients)
    return [(item["kind"], item["metadata"]["namespace"], item["metadata"]["name"]) for item in built.remote]


def test_remote_objects_for_every_client_with_a_certificate() -> None:
    found = remote(Facts(storage_class=storage_class()), {"gateway.ml-gw": PAIR, "batch.ml-jobs": PAIR})

    assert found == [
        ("Secret", "ml-gw", "fraud.ml-prod.client-gateway"),
        ("Secret", "ml-jobs", "fraud.ml-prod.client-batch"),
        ("ConfigMap", "ml-gw", "fraud.ml-prod.ca-bundle"),
        ("ConfigMap", "ml-jobs", "fraud.ml-prod.ca-bundle"),
    ]


def test_no_remote_objects_in_a_missing_namespace() -> None:
    facts = Facts(storage_class=storage_class(), missing_client_namespaces=("ml-jobs",))

    assert remote(facts, {"gateway.ml-gw": PAIR, "batch.ml-jobs": PAIR}) == [
        ("Secret", "ml-gw", "fraud.ml-prod.client-gateway"),
        ("ConfigMap", "ml-gw", "fraud.ml-prod.ca-bundle"),
    ]


def test_no_remote_objects_for_a_client_without_a_certificate() -> None:
    assert remote(Facts(storage_class=storage_class()), {"batch.ml-jobs": PAIR}) == [
        ("Secret", "ml-jobs", "fraud.ml-prod.client-batch"),
        ("ConfigMap", "ml-jobs", "fraud.ml-prod.ca-bundle"),
    ]


def test_one_ca_bundle_per_namespace() -> None:
    ctx = context(mtls={"clients": [{"name": "a", "namespace": "gw"}, {"name": "b", "namespace": "gw"}]})
    built = build(ctx, {"a.gw": PAIR, "b.gw": PAIR})

    assert kinds(built.remote) == ["Secret", "Secret", "ConfigMap"]
    assert find(built.remote, "ConfigMap")["data"] == {"ca.crt": BUNDLE.decode()}


def test_remote_objects_are_stamped_and_labelled_not_owned() -> None:
    built = build(context(**FULL), {"gateway.ml-gw": PAIR})

    for item in built.remote:
        assert "ownerReferences" not in item["metadata"]
        assert item["metadata"]["labels"][naming.OWNER_UID_LABEL] == owner().uid
        assert desired.desired_hash(item) is not None


def test_referenced_objects_are_sorted_and_unique() -> None:
    assert desired.referenced_objects(context(**ENV)) == [("ConfigMap", "settings"), ("Secret", "creds")]
    assert desired.referenced_objects(context()) == []


SPECS: list[tuple[str, dict[str, Any]]] = [
    ("minimal", {}),
    ("everything", {**FULL, "residency": {"regions": ["eu-west-1"]}, "model": {"metricsPort": 9090}}),
    (
        "declared network",
        {
            "network": {
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"a": "b"}}}]}],
                "egress": [{"to": [{"cidr": "10.0.0.0/8"}], "ports": [{"port": 443}]}],
            }
        },
    ),
    (
        "viewer service account elsewhere",
        {"access": {"viewers": [{"kind": "ServiceAccount", "name": "fraud", "namespace": "ci"}]}},
    ),
    ("replicas zero", {"model": {"replicas": 0}}),
]


@pytest.mark.parametrize("overrides", [c[1] for c in SPECS], ids=[c[0] for c in SPECS])
def test_what_is_built_passes_every_check(overrides: dict[str, Any]) -> None:
    ctx = context(**overrides)
    observed = observe(ctx)

    assert judging.preflight(ctx, observed) == ()
    assert [
        (result.name, result.status) for result in judging.judge(ctx, observed) if result.status != "Pass"
    ] == []


def test_by_ref_keys_every_object_by_kind_namespace_and_name() -> None:
    built = build(context(**FULL), {"gateway.ml-gw": PAIR})
    refs = built.by_ref()

    assert len(refs) == len(built.owned) + len(built.remote)
    assert all(desired.ref_of(item) == ref for ref, item in refs.items())
    assert naming.ChildRef("Secret", "ml-gw", "fraud.ml-prod.client-gateway") in refs
    assert set(refs) <= {*context(**FULL).names.local(), *context(**FULL).names.remote()}
