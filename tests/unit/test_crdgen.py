"""The generated CRD: up to date in crds/, structural, and carrying the columns and CEL rules users rely on.

Whether the API server accepts the CRD and enforces its CEL rules is proven against a real one in the
integration tests; here we check the shape quickly.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from securemodels.api import crdgen, v1alpha1
from support.paths import CRD

FORBIDDEN_KEYS = {"$ref", "$defs", "anyOf", "allOf", "oneOf", "title", "discriminator", "const"}
Node = dict[str, Any]


@pytest.fixture(scope="module")
def crd() -> Node:
    return crdgen.crd()


@pytest.fixture(scope="module")
def version(crd: Node) -> Node:
    (only,) = crd["spec"]["versions"]
    result: Node = only
    return result


@pytest.fixture(scope="module")
def root(version: Node) -> Node:
    schema: Node = version["schema"]["openAPIV3Schema"]
    return schema


def schemas(node: Node, path: str) -> Iterator[tuple[str, Node]]:
    """Every schema node under `node`, with a readable path."""
    yield path, node
    for name, child in (node.get("properties") or {}).items():
        yield from schemas(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from schemas(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from schemas(node["additionalProperties"], f"{path}{{}}")


def properties(node: Node, path: str) -> Iterator[tuple[str, Node]]:
    """Every named property under `node` (not array items or map values)."""
    for name, child in (node.get("properties") or {}).items():
        yield f"{path}.{name}", child
        yield from properties(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from properties(node["items"], f"{path}[]")


def keys_anywhere(value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key, item
            yield from keys_anywhere(item)
    elif isinstance(value, list):
        for item in value:
            yield from keys_anywhere(item)


def rules_at(root: Node, *path: str) -> list[str]:
    node = root
    for name in path:
        node = node["properties"][name]
    return [entry["rule"] for entry in node.get("x-kubernetes-validations") or []]


def test_crds_directory_holds_the_generated_crd() -> None:
    assert CRD.read_text() == crdgen.crd_yaml(), f"{CRD.name} is stale: run `make crds` and commit the result"


def test_crd_yaml_parses_to_the_crd(crd: Node) -> None:
    assert yaml.safe_load(crdgen.crd_yaml()) == crd


def test_names_scope_and_short_name(crd: Node) -> None:
    assert crd["metadata"]["name"] == "securemodeldeployments.securemodels.io"
    assert crd["spec"]["group"] == "securemodels.io"
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"]["kind"] == "SecureModelDeployment"
    assert crd["spec"]["names"]["shortNames"] == ["smd"]


def test_one_served_storage_version_with_status_subresource(version: Node) -> None:
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}


def test_printer_columns(version: Node) -> None:
    columns = {column["name"]: column for column in version["additionalPrinterColumns"]}

    assert list(columns) == ["Ready", "Compliant", "Phase", "Image", "Age"]
    assert columns["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Compliant"]["jsonPath"] == '.status.conditions[?(@.type=="Compliant")].status'
    assert columns["Phase"]["jsonPath"] == ".status.phase"
    assert columns["Image"]["jsonPath"] == ".status.image"
    assert (columns["Age"]["type"], columns["Age"]["jsonPath"]) == ("date", ".metadata.creationTimestamp")


def without_int_or_string(node: Any) -> Any:
    """The schema less the one union Kubernetes allows: x-kubernetes-int-or-string's anyOf."""
    if isinstance(node, dict):
        return {
            key: without_int_or_string(value)
            for key, value in node.items()
            if not (key == "anyOf" and node.get("x-kubernetes-int-or-string"))
        }
    if isinstance(node, list):
        return [without_int_or_string(item) for item in node]
    return node


def test_schema_has_no_constructs_a_structural_schema_forbids(root: Node) -> None:
    found = [
        (key, value)
        for key, value in keys_anywhere(without_int_or_string(root))
        if key in FORBIDDEN_KEYS or (key == "additionalProperties" and value is False)
    ]

    assert found == []


def test_every_schema_node_has_a_type_or_is_an_int_or_string(root: Node) -> None:
    untyped = [
        path
        for path, node in schemas(root, "")
        if "type" not in node and not node.get("x-kubernetes-int-or-string")
    ]

    assert untyped == []


def test_quantities_in_resource_maps_are_ints_or_strings_as_in_kubernetes(root: Node) -> None:
    resources = root["properties"]["spec"]["properties"]["model"]["properties"]["resources"]

    for amounts in ("requests", "limits"):
        values = resources["properties"][amounts]["additionalProperties"]
        assert values["x-kubernetes-int-or-string"] is True
        # Exactly this union, or the API server calls the schema not structural.
        assert values["anyOf"] == [{"type": "integer"}, {"type": "string"}]
        assert (values["minimum"], values["pattern"]) == (0, v1alpha1.QUANTITY_PATTERN)


def test_every_property_has_a_description(root: Node) -> None:
    # metadata is Kubernetes' ObjectMeta: the API server documents it, and only name rules may go there.
    undocumented = [
        path for path, node in properties(root, "") if path != ".metadata" and not node.get("description")
    ]

    assert undocumented == []
    assert root["properties"]["metadata"] == {"type": "object"}


def test_objects_with_properties_list_only_existing_required_fields(root: Node) -> None:
    wrong = [
        (path, sorted(set(node["required"]) - set(node.get("properties") or {})))
        for path, node in schemas(root, "")
        if node.get("required") and not set(node["required"]) <= set(node.get("properties") or {})
    ]

    assert wrong == []


def test_list_map_keys_are_required_in_the_items(root: Node) -> None:
    lists = [(path, node) for path, node in schemas(root, "") if node.get("x-kubernetes-list-type") == "map"]

    assert {path for path, _ in lists} >= {".spec.mtls.clients", ".status.conditions", ".status.controls"}
    for path, node in lists:
        assert set(node["x-kubernetes-list-map-keys"]) <= set(node["items"].get("required") or []), path


def test_defaults_hold_no_nulls(root: Node) -> None:
    defaults = [value for key, value in keys_anywhere(root) if key == "default"]

    assert defaults
    assert not any(value is None for default in defaults for _, value in keys_anywhere({"d": default}))


def test_every_cel_rule_has_a_message(root: Node) -> None:
    entries = [
        entry for key, value in keys_anywhere(root) if key == "x-kubernetes-validations" for entry in value
    ]

    assert len(entries) >= 10
    assert all(entry.get("rule") and entry.get("message") for entry in entries)


def test_name_length_rule_on_the_object(root: Node) -> None:
    (entry,) = root["x-kubernetes-validations"]

    assert entry == v1alpha1.NAME_RULE.entry()
    assert "self.metadata.name" in entry["rule"]
    assert f"<= {v1alpha1.MAX_NAME_LENGTH}" in entry["rule"]


def test_the_crd_holds_every_declared_rule_and_no_other(root: Node) -> None:
    declared = [
        rule.entry()
        for value in vars(v1alpha1).values()
        if isinstance(value, type) and issubclass(value, v1alpha1.ApiModel)
        for rule in value.__dict__.get("RULES", ())
    ]
    field_rules = (v1alpha1.NAME_RULE, v1alpha1.IMAGE_RULE, v1alpha1.CIDR_RULE, v1alpha1.WEIGHTS_IMAGE_RULE)
    declared += [rule.entry() for rule in field_rules]
    found = [
        entry for key, value in keys_anywhere(root) if key == "x-kubernetes-validations" for entry in value
    ]

    assert {json.dumps(entry, sort_keys=True) for entry in found} == {
        json.dumps(entry, sort_keys=True) for entry in declared
    }


def test_image_must_be_pinned_by_digest(root: Node) -> None:
    assert rules_at(root, "spec", "model", "image") == [f"self.matches('{v1alpha1.DIGEST_IMAGE_PATTERN}')"]


def test_image_registry_must_be_in_the_allow_list(root: Node) -> None:
    rules = rules_at(root, "spec")

    assert any("allowedRegistries.exists(r, self.model.image.startsWith(r + '/'))" in rule for rule in rules)


def test_a_volume_allows_at_most_one_replica(root: Node) -> None:
    assert "!has(self.storage) || self.model.replicas <= 1" in rules_at(root, "spec")


def test_model_ports_keep_clear_of_the_sidecar(root: Node) -> None:
    rules = " ".join(rules_at(root, "spec", "model"))

    assert f"self.port != {v1alpha1.TLS_PORT}" in rules
    assert f"self.port != {v1alpha1.HEALTH_PORT}" in rules
    assert f"self.metricsPort in [self.port, {v1alpha1.TLS_PORT}, {v1alpha1.HEALTH_PORT}]" in rules


def test_anywhere_peers_need_an_explicit_opt_in(root: Node) -> None:
    ingress, egress = rules_at(root, "spec", "network")

    assert ingress.startswith("self.allowIngressFromAnywhere || ")
    assert egress.startswith("self.allowEgressToAnywhere || ")
    for rule in (ingress, egress):
        assert f"prefixLength() < {v1alpha1.BROADEST_IPV4_PREFIX}" in rule
        assert f"prefixLength() < {v1alpha1.BROADEST_IPV6_PREFIX}" in rule


def test_certificate_durations_are_bounded(root: Node) -> None:
    rules = rules_at(root, "spec", "mtls")

    assert "duration(self.certificateDuration) >= duration('1h')" in rules
    assert any(
        "duration(self.certificateDuration) - duration(self.renewBefore) >= duration('30m')" in rule
        for rule in rules
    )


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        (("spec", "model", "env"), "has(self.value) != has(self.valueFrom)"),
        (("spec", "access", "viewers"), "has(self.__namespace__)"),
        (("spec", "network", "ingress"), "cidr cannot be combined"),
    ],
    ids=["env value xor valueFrom", "service account namespace", "cidr alone"],
)
def test_item_rules(root: Node, path: tuple[str, ...], fragment: str) -> None:
    node = root
    for name in path:
        node = node["properties"][name]
    items = node["items"]
    texts = [
        f"{entry['rule']} {entry['message']}"
        for _, item in schemas(items, "")
        for entry in item.get("x-kubernetes-validations") or []
    ]

    assert any(fragment in text for text in texts)


def test_optional_fields_are_not_nullable_and_not_required(root: Node) -> None:
    spec = root["properties"]["spec"]

    assert spec["required"] == ["model"]
    assert spec["properties"]["storage"]["type"] == "object"
    assert "nullable" not in spec["properties"]["storage"]
    assert spec["properties"]["model"]["properties"]["metricsPort"]["type"] == "integer"


def test_client_identity_fits_a_certificate_common_name(root: Node) -> None:
    clients = root["properties"]["spec"]["properties"]["mtls"]["properties"]["clients"]["items"]
    rules = [entry["rule"] for entry in clients.get("x-kubernetes-validations") or []]

    assert any("size(self.name)" in rule and "size(self.__namespace__)" in rule for rule in rules)
