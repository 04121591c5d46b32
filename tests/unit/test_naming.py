"""Names, labels and ownership of the SMD's children (DESIGN §7): one list of every name an SMD may write,
names that no two SMDs can share, and ownership that a name alone never proves."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest

from securemodels.api import v1alpha1
from securemodels.desired import naming
from securemodels.desired.naming import ChildRef, Owner
from unit.builders import UID, build, context, owner, spec

LONGEST_NAME = "m" * v1alpha1.MAX_NAME_LENGTH
FULL_SPEC: dict[str, Any] = {
    "storage": {"size": "1Gi", "storageClassName": "encrypted-gp3"},
    "access": {"viewers": [{"kind": "Group", "name": "v"}], "deployers": [{"kind": "User", "name": "d"}]},
    "mtls": {"clients": [{"name": "gw", "namespace": "ml-gw"}, {"name": "batch", "namespace": "ml-gw"}]},
}
OTHER_UID = "8d1f5c3e-0000-4000-8000-000000000002"


def test_selector_labels_are_name_and_instance_only() -> None:
    assert naming.selector_labels(owner()) == {
        "app.kubernetes.io/name": naming.APP_NAME,
        "app.kubernetes.io/instance": "fraud",
    }


def test_labels_extend_the_selector_labels() -> None:
    labels = naming.labels(owner(), "model")

    assert naming.selector_labels(owner()).items() <= labels.items()
    assert labels["app.kubernetes.io/component"] == "model"
    assert labels["app.kubernetes.io/managed-by"] == "secure-model-operator"
    assert labels["app.kubernetes.io/part-of"] == "secure-model-operator"


def test_owner_reference_makes_the_smd_the_controller() -> None:
    assert owner().reference() == {
        "apiVersion": "securemodels.io/v1alpha1",
        "kind": "SecureModelDeployment",
        "name": "fraud",
        "uid": UID,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def test_owner_key_and_child_names() -> None:
    assert owner().key == "ml-prod/fraud"
    assert owner().child("tls") == "fraud-tls"


def test_metadata_of_an_owned_child() -> None:
    metadata = naming.metadata(owner(), ChildRef("Secret", "ml-prod", "fraud-tls"), "mtls")

    assert metadata == {
        "name": "fraud-tls",
        "namespace": "ml-prod",
        "labels": naming.labels(owner(), "mtls"),
        "ownerReferences": [owner().reference()],
    }


def test_remote_metadata_is_tracked_by_labels_not_owner_references() -> None:
    ref = ChildRef("Secret", "ml-gw", "fraud.ml-prod.client-gw")
    metadata = naming.metadata(owner(), ref, naming.CLIENT_COMPONENT)

    assert (metadata["name"], metadata["namespace"]) == ("fraud.ml-prod.client-gw", "ml-gw")
    assert "ownerReferences" not in metadata
    assert metadata["labels"] == {
        **naming.labels(owner(), "mtls-client"),
        naming.OWNER_NAMESPACE_LABEL: "ml-prod",
        naming.OWNER_NAME_LABEL: "fraud",
        naming.OWNER_UID_LABEL: UID,
    }


def test_an_unowned_local_child_carries_owner_labels_instead_of_a_reference() -> None:
    ref = ChildRef("PersistentVolumeClaim", "ml-prod", "fraud-models")
    metadata = naming.metadata(owner(), ref, "storage", owned=False)

    assert "ownerReferences" not in metadata
    assert metadata["labels"] == {**naming.labels(owner(), "storage"), **naming.owner_labels(owner())}


def test_operator_labels_name_the_operator_not_an_smd() -> None:
    labels = naming.operator_labels("ca")

    assert labels["app.kubernetes.io/name"] == naming.MANAGED_BY
    assert labels["app.kubernetes.io/component"] == "ca"
    assert naming.INSTANCE_LABEL not in labels


def test_children_names_every_object_an_smd_may_write() -> None:
    names = naming.children(owner(), spec(**FULL_SPEC))

    assert names.deployment == ChildRef("Deployment", "ml-prod", "fraud")
    assert names.service == ChildRef("Service", "ml-prod", "fraud")
    assert names.service_account == ChildRef("ServiceAccount", "ml-prod", "fraud")
    assert names.sidecar_config == ChildRef("ConfigMap", "ml-prod", "fraud-sidecar")
    assert names.tls_secret == ChildRef("Secret", "ml-prod", "fraud-tls")
    assert names.network_policy == ChildRef("NetworkPolicy", "ml-prod", "fraud-network")
    assert names.volume_claim == ChildRef("PersistentVolumeClaim", "ml-prod", "fraud-models")
    assert names.roles == {
        "viewer": ChildRef("Role", "ml-prod", "fraud-viewer"),
        "deployer": ChildRef("Role", "ml-prod", "fraud-deployer"),
    }
    assert names.role_bindings == {
        "viewer": ChildRef("RoleBinding", "ml-prod", "fraud-viewer"),
        "deployer": ChildRef("RoleBinding", "ml-prod", "fraud-deployer"),
    }
    assert names.client_secrets == {
        "gw.ml-gw": ChildRef("Secret", "ml-gw", "fraud.ml-prod.client-gw"),
        "batch.ml-gw": ChildRef("Secret", "ml-gw", "fraud.ml-prod.client-batch"),
    }
    assert names.ca_bundles == {"ml-gw": ChildRef("ConfigMap", "ml-gw", "fraud.ml-prod.ca-bundle")}


def test_local_lists_every_local_child_in_write_order_whether_wanted_or_not() -> None:
    names = naming.children(owner(), spec())

    assert [(ref.kind, ref.name) for ref in names.local()] == [
        ("ServiceAccount", "fraud"),
        ("Secret", "fraud-tls"),
        ("ConfigMap", "fraud-sidecar"),
        ("NetworkPolicy", "fraud-network"),
        ("Role", "fraud-viewer"),
        ("Role", "fraud-deployer"),
        ("RoleBinding", "fraud-viewer"),
        ("RoleBinding", "fraud-deployer"),
        ("PersistentVolumeClaim", "fraud-models"),
        ("Service", "fraud"),
        ("Deployment", "fraud"),
    ]
    assert list(names.remote()) == []


def test_remote_lists_the_client_secrets_and_one_bundle_per_namespace() -> None:
    names = naming.children(owner(), spec(**FULL_SPEC))

    assert sorted(str(ref) for ref in names.remote()) == [
        "ConfigMap ml-gw/fraud.ml-prod.ca-bundle",
        "Secret ml-gw/fraud.ml-prod.client-batch",
        "Secret ml-gw/fraud.ml-prod.client-gw",
    ]


def test_everything_built_is_listed_by_children() -> None:
    ctx = context(spec(**FULL_SPEC))
    names = ctx.names
    pair = build(ctx).by_ref()

    assert set(pair) <= {*names.local(), *names.remote()}


def test_child_ref_prints_kind_namespace_and_name() -> None:
    assert str(ChildRef("Secret", "ml-prod", "fraud-tls")) == "Secret ml-prod/fraud-tls"


# Names that share prefixes with each other and with the purposes' suffixes.
CLASHING_NAMES = [
    "team",
    "team-viewer",
    "team-deployer",
    "team-network",
    "team-tls",
    "team-sidecar",
    "team-models",
    "team-viewer-viewer",
    "a",
    "a-deployer",
    "a-deployer-viewer",
    "a-viewer",
    "a-viewer-deployer",
    "a-tls",
    "a-client",
    "ca-bundle",
]
NAMESPACES = ["ml", "ml-gw", "team"]


def wanted(name: str, namespace: str) -> set[tuple[str, str, str]]:
    """Every (kind, namespace, name) an SMD of that name may write, with clients in every namespace."""
    clients = [{"name": client, "namespace": where} for client in ("gw", "a") for where in NAMESPACES]
    names = naming.children(
        Owner(name=name, namespace=namespace, uid=f"{namespace}/{name}"),
        spec(mtls={"clients": clients}),
    )
    return {(ref.kind, ref.namespace, ref.name) for ref in (*names.local(), *names.remote())}


SMDS = [(name, namespace) for name in CLASHING_NAMES for namespace in NAMESPACES]


def test_no_object_is_wanted_by_two_smds() -> None:
    wanters: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for name, namespace in SMDS:
        for key in wanted(name, namespace):
            wanters[key].append(f"{namespace}/{name}")

    assert {key: smds for key, smds in wanters.items() if len(smds) > 1} == {}
    assert len(wanters) == sum(len(wanted(*smd)) for smd in SMDS)


def test_each_smd_wants_distinct_objects_of_its_own() -> None:
    names = naming.children(owner(), spec(**FULL_SPEC))
    refs = [*names.local(), *names.remote()]

    assert len(refs) == len(set(refs))


def test_every_child_of_the_longest_smd_name_fits_in_a_dns_label() -> None:
    who = owner(name=LONGEST_NAME)
    ctx = context(spec(**FULL_SPEC), who=who)
    local = list(ctx.names.local())
    built = build(ctx).owned

    assert len(built) == 11
    assert all(len(ref.name) <= 63 for ref in local)
    assert all(len(value) <= 63 for item in built for value in item["metadata"]["labels"].values())


def reference(uid: str = UID, controller: bool | None = True) -> dict[str, Any]:
    found: dict[str, Any] = {"apiVersion": "securemodels.io/v1alpha1", "kind": "SecureModelDeployment"}
    found |= {"name": "fraud", "uid": uid}
    if controller is not None:
        found["controller"] = controller
    return found


def item(*, references: list[Any] | None = None, uid_label: str | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "x"}
    if references is not None:
        metadata["ownerReferences"] = references
    if uid_label is not None:
        metadata["labels"] = {naming.OWNER_UID_LABEL: uid_label}
    return {"metadata": metadata}


LOCAL = ChildRef("ConfigMap", "ml-prod", "fraud-sidecar")
CLAIM = ChildRef("PersistentVolumeClaim", "ml-prod", "fraud-models")
REMOTE = ChildRef("Secret", "ml-gw", "fraud.ml-prod.client-gw")
OWNERSHIP: list[tuple[str, dict[str, Any] | None, ChildRef, bool]] = [
    ("controller reference", item(references=[reference()]), LOCAL, True),
    ("controller reference among others", item(references=[reference(OTHER_UID), reference()]), LOCAL, True),
    ("controller reference on a remote object", item(references=[reference()]), REMOTE, True),
    ("another SMD's controller reference", item(references=[reference(OTHER_UID)]), LOCAL, False),
    ("a reference that is not the controller", item(references=[reference(controller=False)]), LOCAL, False),
    ("a reference without controller", item(references=[reference(controller=None)]), LOCAL, False),
    ("owner label on a remote object", item(uid_label=UID), REMOTE, True),
    ("owner label on the volume claim", item(uid_label=UID), CLAIM, True),
    ("owner label on a local object", item(uid_label=UID), LOCAL, False),
    ("another SMD's owner label on a remote object", item(uid_label=OTHER_UID), REMOTE, False),
    ("another SMD's owner label on the claim", item(uid_label=OTHER_UID), CLAIM, False),
    ("no owner at all", item(), REMOTE, False),
    ("no object", None, LOCAL, False),
    ("metadata that is not a map", {"metadata": "x"}, LOCAL, False),
    ("references that are not maps", item(references=["x", 1]), LOCAL, False),
    ("labels that are not a map", {"metadata": {"labels": ["x"]}}, REMOTE, False),
]


@pytest.mark.parametrize(("live", "ref", "owned"), [c[1:] for c in OWNERSHIP], ids=[c[0] for c in OWNERSHIP])
def test_an_object_is_the_smds_only_by_its_uid_in_the_right_place(
    live: dict[str, Any] | None, ref: ChildRef, owned: bool
) -> None:
    assert naming.owned_by(live, owner(), ref) is owned


def test_what_the_smd_builds_is_owned_by_it() -> None:
    ctx = context(spec(**FULL_SPEC))

    assert all(naming.owned_by(manifest, owner(), ref) for ref, manifest in build(ctx).by_ref().items())
    assert not any(
        naming.owned_by(manifest, owner(uid=OTHER_UID), ref) for ref, manifest in build(ctx).by_ref().items()
    )


def test_client_identity_is_name_dot_namespace() -> None:
    assert naming.client_identity("gw", "ml-gw") == "gw.ml-gw"
