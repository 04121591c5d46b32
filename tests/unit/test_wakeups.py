"""Which SMDs a change of a Namespace or StorageClass wakes, read from stored specs that may not match
the API at all (an SMD stored while the CRD did not validate it): never an exception. And whose judging
a change can alter, which decides the SMDs a resync may skip."""

from __future__ import annotations

from typing import Any

import pytest

from securemodels.desired.controls.residency import REGION_LABEL
from securemodels.handlers.runtime import _client_namespaces, _storage_class
from securemodels.k8s.read import change_scope

OWN = "securemodels-system"


@pytest.mark.parametrize(
    "spec",
    ["a string", {"mtls": "off"}, {"mtls": {"clients": "all"}}, {"storage": ["x"]}, None, 7],
)
def test_a_spec_of_the_wrong_shape_refers_to_nothing(spec: Any) -> None:
    assert _client_namespaces({"spec": spec}) == set()
    assert _storage_class({"spec": spec}) is None


def test_a_valid_spec_names_its_client_namespaces_and_storage_class() -> None:
    body = {
        "spec": {
            "mtls": {"clients": [{"name": "gw", "namespace": "ml-gw"}, "junk"]},
            "storage": {"storageClassName": "encrypted"},
        }
    }

    assert _client_namespaces(body) == {"ml-gw"}
    assert _storage_class(body) == "encrypted"


def node(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels, "resourceVersion": "1"}}


def test_a_node_heartbeat_alters_no_verdict_but_its_region_alters_every_one() -> None:
    before, after = node("n1", **{REGION_LABEL: "eu-west-1"}), node("n1", **{REGION_LABEL: "eu-west-1"})
    after["metadata"]["resourceVersion"] = "2"

    assert change_scope("Node", before, after, OWN) is None
    assert change_scope("Node", None, node("n2"), OWN) is None
    assert change_scope("Node", before, node("n1", **{REGION_LABEL: "us-east-1"}), OWN) == ""
    assert change_scope("Node", None, before, OWN) == ""
    assert change_scope("Node", before, None, OWN) == ""


def test_a_namespace_alters_its_own_smds_and_the_operators_objects_alter_every_one() -> None:
    namespace = {"metadata": {"name": "ml-prod"}}
    secret = {"metadata": {"name": "x", "namespace": "ml-prod"}}
    ca = {"metadata": {"name": "securemodels-ca", "namespace": OWN}}
    role = {"metadata": {"name": "view"}}

    assert change_scope("Namespace", namespace, None, OWN) == "ml-prod"
    assert change_scope("Secret", None, secret, OWN) == "ml-prod"
    assert change_scope("Secret", ca, ca, OWN) == ""
    assert change_scope("ClusterRole", role, role, OWN) == ""
