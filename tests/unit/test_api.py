"""The v1alpha1 pydantic models: what they accept, what they default, what they refuse and where."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from securemodels.api import v1alpha1
from securemodels.api.v1alpha1 import SecureModelDeployment, SecureModelDeploymentSpec
from support.paths import EXAMPLES
from unit.builders import IMAGE, spec, spec_dict


def smd_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc and doc.get("kind") == v1alpha1.KIND]


EXAMPLE_FILES = [path for path in sorted(EXAMPLES.glob("*.yaml")) if smd_documents(path)]


def error_locations(data: dict[str, Any]) -> list[tuple[str | int, ...]]:
    with pytest.raises(ValidationError) as caught:
        SecureModelDeploymentSpec.model_validate(data)
    return [tuple(error["loc"]) for error in caught.value.errors()]


def test_the_basic_example_holds_an_smd() -> None:
    assert EXAMPLES / "basic.yaml" in EXAMPLE_FILES


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda path: path.name)
def test_examples_are_accepted(path: Path) -> None:
    for document in smd_documents(path):
        parsed = SecureModelDeployment.model_validate(document)

        assert parsed.spec.model.image == document["spec"]["model"]["image"]
        assert parsed.status is None


def test_basic_example_is_read_field_by_field() -> None:
    (document,) = smd_documents(EXAMPLES / "basic.yaml")
    parsed = SecureModelDeployment.model_validate(document).spec

    assert parsed.model.replicas == 2
    assert parsed.model.resources.limits["memory"] == "1Gi"
    assert parsed.image_policy.allowed_registries == ["registry.example.com"]
    assert parsed.network.ingress[0].from_[0].pod_selector is not None
    assert parsed.network.ingress[0].from_[0].pod_selector.match_labels == {"app": "gateway"}
    assert [(client.name, client.namespace) for client in parsed.mtls.clients] == [("gateway", "ml-gateway")]
    assert [(subject.kind, subject.name) for subject in parsed.access.deployers] == [
        ("User", "alice@example.com")
    ]
    assert parsed.residency is not None
    assert parsed.residency.regions == ["eu-west-1", "eu-central-1"]


def test_defaults_of_a_minimal_spec() -> None:
    minimal = spec()

    assert minimal.model.port == 8080
    assert minimal.model.replicas == 1
    assert minimal.model.health_path == "/healthz"
    assert minimal.model.metrics_port is None
    assert minimal.model.command is None
    assert (minimal.model.args, minimal.model.env) == ([], [])
    assert minimal.model.resources.requests == {"cpu": "250m", "memory": "512Mi"}
    assert minimal.model.resources.limits == {"cpu": "2", "memory": "2Gi"}
    assert (minimal.model.liveness_path, minimal.model.startup_timeout) == (None, "5m")
    assert minimal.model.shared_memory_size is None
    assert minimal.scheduling.node_affinity is None
    assert minimal.image_policy.allowed_registries == []
    assert (minimal.network.ingress, minimal.network.egress) == ([], [])
    assert not minimal.network.allow_ingress_from_anywhere
    assert not minimal.network.allow_egress_to_anywhere
    assert minimal.mtls.certificate_duration == "24h"
    assert minimal.mtls.renew_before is None
    assert minimal.mtls.min_tls_version == "1.3"
    assert minimal.mtls.clients == []
    assert (minimal.access.viewers, minimal.access.deployers) == ([], [])
    assert minimal.storage is None
    assert minimal.residency is None


def test_storage_mount_path_defaults_to_models() -> None:
    parsed = spec(storage={"size": "20Gi", "storageClassName": "encrypted-gp3"})

    assert parsed.storage is not None
    assert parsed.storage.mount_path == "/models"


def test_from_is_the_alias_of_ingress_peers() -> None:
    rule = v1alpha1.IngressRule.model_validate({"from": [{"cidr": "10.0.0.0/8"}]})

    assert rule.from_[0].cidr == "10.0.0.0/8"
    assert rule.model_dump(by_alias=True, exclude_none=True) == {"from": [{"cidr": "10.0.0.0/8"}]}


def test_min_tls_version_is_spelled_with_capital_tls() -> None:
    parsed = spec(mtls={"minTLSVersion": "1.2"})

    assert parsed.mtls.min_tls_version == "1.2"
    assert "minTLSVersion" in parsed.mtls.model_dump(by_alias=True)


def test_camel_case_aliases_are_what_the_schema_uses() -> None:
    dumped = spec(model={"metricsPort": 9090}).model_dump(by_alias=True)

    assert dumped["model"]["metricsPort"] == 9090
    assert {"imagePolicy", "network", "mtls", "access"} <= dumped.keys()


def test_status_and_metadata_do_not_disturb_parsing_of_the_object() -> None:
    parsed = SecureModelDeployment.model_validate(
        {
            "apiVersion": "securemodels.io/v1alpha1",
            "kind": "SecureModelDeployment",
            "metadata": {"name": "fraud", "namespace": "ml-prod", "uid": "x"},
            "spec": spec_dict(),
            "status": {"phase": "Ready", "compliant": True, "conditions": [], "controls": []},
        }
    )

    assert parsed.status is not None
    assert parsed.status.phase == "Ready"


BAD_SPECS: list[tuple[str, dict[str, Any], tuple[str | int, ...]]] = [
    ("unknown top-level field", {"modle": {}}, ("modle",)),
    ("unknown model field", {"model": {"imagePullPolicy": "Never"}}, ("model", "imagePullPolicy")),
    ("port zero", {"model": {"port": 0}}, ("model", "port")),
    ("port too high", {"model": {"port": 65536}}, ("model", "port")),
    ("metrics port zero", {"model": {"metricsPort": 0}}, ("model", "metricsPort")),
    ("negative replicas", {"model": {"replicas": -1}}, ("model", "replicas")),
    ("relative health path", {"model": {"healthPath": "healthz"}}, ("model", "healthPath")),
    (
        "env name with a digit first",
        {"model": {"env": [{"name": "1X", "value": "v"}]}},
        ("model", "env", 0, "name"),
    ),
    (
        "env reference to a bad ConfigMap name",
        {
            "model": {
                "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "Bad_Name", "key": "k"}}}]
            }
        },
        ("model", "env", 0, "valueFrom", "configMapKeyRef", "name"),
    ),
    (
        "a Secret as an environment variable",
        {"model": {"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "k"}}}]}},
        ("model", "env", 0, "valueFrom", "secretKeyRef"),
    ),
    (
        "a tag instead of a digest",
        {"model": {"image": "registry.example.com/ml/fraud:latest"}},
        ("model", "image"),
    ),
    (
        "cpu not a quantity",
        {"model": {"resources": {"requests": {"cpu": "lots", "memory": "1Gi"}}}},
        ("model", "resources", "requests", "cpu"),
    ),
    (
        "registry with a scheme",
        {"imagePolicy": {"allowedRegistries": ["https://r.io"]}},
        ("imagePolicy", "allowedRegistries", 0),
    ),
    (
        "ingress rule without peers",
        {"network": {"ingress": [{"from": []}]}},
        ("network", "ingress", 0, "from"),
    ),
    (
        "egress rule without ports",
        {"network": {"egress": [{"to": [{"cidr": "10.0.0.0/8"}]}]}},
        ("network", "egress", 0, "ports"),
    ),
    (
        "egress protocol SCTP",
        {
            "network": {
                "egress": [{"to": [{"cidr": "10.0.0.0/8"}], "ports": [{"port": 1, "protocol": "SCTP"}]}]
            }
        },
        ("network", "egress", 0, "ports", 0, "protocol"),
    ),
    (
        "selector operator Gt",
        {
            "network": {
                "ingress": [
                    {"from": [{"podSelector": {"matchExpressions": [{"key": "a", "operator": "Gt"}]}}]}
                ]
            }
        },
        ("network", "ingress", 0, "from", 0, "podSelector", "matchExpressions", 0, "operator"),
    ),
    ("duration in days", {"mtls": {"certificateDuration": "1d"}}, ("mtls", "certificateDuration")),
    ("renewBefore not a duration", {"mtls": {"renewBefore": "soon"}}, ("mtls", "renewBefore")),
    ("TLS 1.1", {"mtls": {"minTLSVersion": "1.1"}}, ("mtls", "minTLSVersion")),
    (
        "client namespace not a DNS label",
        {"mtls": {"clients": [{"name": "gw", "namespace": "ML_GW"}]}},
        ("mtls", "clients", 0, "namespace"),
    ),
    (
        "subject kind Robot",
        {"access": {"viewers": [{"kind": "Robot", "name": "r2"}]}},
        ("access", "viewers", 0, "kind"),
    ),
    (
        "subject without name",
        {"access": {"deployers": [{"kind": "User", "name": ""}]}},
        ("access", "deployers", 0, "name"),
    ),
    (
        "storage size not a quantity",
        {"storage": {"size": "big", "storageClassName": "c"}},
        ("storage", "size"),
    ),
    ("storage without class", {"storage": {"size": "1Gi"}}, ("storage", "storageClassName")),
    ("no regions", {"residency": {"regions": []}}, ("residency", "regions")),
    ("region with capitals", {"residency": {"regions": ["EU-West-1"]}}, ("residency", "regions", 0)),
]


@pytest.mark.parametrize(
    ("data", "location"), [case[1:] for case in BAD_SPECS], ids=[case[0] for case in BAD_SPECS]
)
def test_bad_input_is_refused_naming_the_field(data: dict[str, Any], location: tuple[str | int, ...]) -> None:
    assert location in error_locations(spec_dict(**data))


def test_model_and_its_image_are_required() -> None:
    assert error_locations({}) == [("model",)]
    assert error_locations({"model": {"port": 8080}}) == [("model", "image")]


def test_the_api_objects_are_immutable() -> None:
    parsed = spec()

    with pytest.raises(ValidationError):
        parsed.model.replicas = 5  # type: ignore[misc]


def test_a_valid_spec_round_trips_through_its_aliases() -> None:
    original = spec(
        model={"image": IMAGE, "metricsPort": 9090, "env": [{"name": "A", "value": "1"}]},
        network={"ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "gw"}}}]}]},
        mtls={"minTLSVersion": "1.2", "clients": [{"name": "gw", "namespace": "ml-gw"}]},
    )

    again = SecureModelDeploymentSpec.model_validate(original.model_dump(by_alias=True, exclude_none=True))

    assert again == original
