"""Names, labels and owner references of the SMD's children (DESIGN §7)."""

from __future__ import annotations

import pytest

from securemodels.api import v1alpha1
from securemodels.desired import naming
from securemodels.desired.controls import mtls, network, rbac, storage
from unit.builders import UID, build, context, owner, spec

LONGEST_NAME = "m" * v1alpha1.MAX_NAME_LENGTH
FULL_SPEC = {
    "storage": {"size": "1Gi", "storageClassName": "encrypted-gp3"},
    "access": {"viewers": [{"kind": "Group", "name": "v"}], "deployers": [{"kind": "User", "name": "d"}]},
}


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


def test_metadata_of_an_owned_child() -> None:
    metadata = naming.metadata(owner(), "fraud-tls", "mtls")

    assert metadata == {
        "name": "fraud-tls",
        "namespace": "ml-prod",
        "labels": naming.labels(owner(), "mtls"),
        "ownerReferences": [owner().reference()],
    }


def test_remote_metadata_is_tracked_by_labels_not_owner_references() -> None:
    metadata = naming.remote_metadata(owner(), "fraud.ml-prod.client-gw", "ml-gw", "mtls-client")

    assert (metadata["name"], metadata["namespace"]) == ("fraud.ml-prod.client-gw", "ml-gw")
    assert "ownerReferences" not in metadata
    assert metadata["labels"] == {
        **naming.labels(owner(), "mtls-client"),
        naming.OWNER_NAMESPACE_LABEL: "ml-prod",
        naming.OWNER_NAME_LABEL: "fraud",
        naming.OWNER_UID_LABEL: UID,
    }


def test_owned_selector_selects_what_the_smd_owns() -> None:
    selector = naming.owned_selector(owner())

    assert selector == {
        "app.kubernetes.io/instance": "fraud",
        "app.kubernetes.io/managed-by": "secure-model-operator",
    }
    assert selector.items() <= naming.labels(owner(), "model").items()


@pytest.mark.parametrize(
    "purpose",
    [network.PURPOSE, mtls.TLS_PURPOSE, mtls.SIDECAR_PURPOSE, storage.PURPOSE, rbac.VIEWER, rbac.DEPLOYER],
)
def test_child_names_fit_in_a_dns_label_for_the_longest_smd_name(purpose: str) -> None:
    name = owner(name=LONGEST_NAME).child(purpose)

    assert name == f"{LONGEST_NAME}-{purpose}"
    assert len(name) <= 63


def test_every_owned_object_of_the_longest_smd_name_fits() -> None:
    ctx = context(spec(**FULL_SPEC), who=owner(name=LONGEST_NAME))
    owned = build(ctx).owned

    assert len(owned) == 11
    assert all(len(item["metadata"]["name"]) <= 63 for item in owned)
    assert all(len(value) <= 63 for item in owned for value in item["metadata"]["labels"].values())
