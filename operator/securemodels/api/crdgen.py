"""Generate the SecureModelDeployment CRD from the pydantic models.

Kubernetes wants a *structural* schema: every node typed, no $ref, no anyOf for nullability, no titles,
no additionalProperties beside properties. pydantic emits JSON Schema; this module rewrites it.
"""

from __future__ import annotations

from typing import Any

import yaml

from securemodels.api import v1alpha1

_DROPPED_KEYS = {"title", "$defs", "discriminator"}


def _without_nulls(value: Any) -> Any:
    """Defaults are stored objects: an absent optional field is left out, never null."""
    if isinstance(value, dict):
        return {key: _without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_without_nulls(item) for item in value]
    return value


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    ref = node.pop("$ref", None)
    if ref is None and "allOf" in node and len(node["allOf"]) == 1:
        ref = node.pop("allOf")[0]["$ref"]
    if ref is not None:
        target = defs[ref.rsplit("/", 1)[-1]]
        merged = {**target, **node}  # the field's own description wins over the class docstring
        if "x-kubernetes-validations" in target and "x-kubernetes-validations" in node:
            merged["x-kubernetes-validations"] = (
                target["x-kubernetes-validations"] + node["x-kubernetes-validations"]
            )
        return _resolve(merged, defs)
    # Kubernetes' one union: a quantity written as an integer or a string, kept as the schema says it.
    any_of = None if node.get("x-kubernetes-int-or-string") else node.pop("anyOf", None)
    if any_of is not None:
        not_null = [option for option in any_of if option.get("type") != "null"]
        if len(not_null) != 1:
            raise ValueError(f"unsupported union in schema: {any_of}")
        return _resolve({**not_null[0], **node}, defs)
    result: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS or (key == "default" and value is None):
            continue
        if key == "default":
            result[key] = _without_nulls(value)
            continue
        if key == "additionalProperties" and value is False:
            continue
        if key == "properties":
            result[key] = {name: _resolve(child, defs) for name, child in value.items()}
        else:
            result[key] = _resolve(value, defs)
    return result


def structural_schema(model: type[v1alpha1.ApiModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema: dict[str, Any] = _resolve(raw, defs)
    return schema


def _condition_column(name: str, condition: str) -> dict[str, str]:
    return {
        "name": name,
        "type": "string",
        "jsonPath": f'.status.conditions[?(@.type=="{condition}")].status',
    }


def crd() -> dict[str, Any]:
    spec_schema = structural_schema(v1alpha1.SecureModelDeploymentSpec)
    status_schema = structural_schema(v1alpha1.SecureModelDeploymentStatus)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{v1alpha1.PLURAL}.{v1alpha1.GROUP}",
            "labels": {"app.kubernetes.io/part-of": "secure-model-operator"},
        },
        "spec": {
            "group": v1alpha1.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": v1alpha1.KIND,
                "listKind": f"{v1alpha1.KIND}List",
                "plural": v1alpha1.PLURAL,
                "singular": v1alpha1.SINGULAR,
                "shortNames": list(v1alpha1.SHORT_NAMES),
                "categories": ["securemodels"],
            },
            "versions": [
                {
                    "name": v1alpha1.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        _condition_column("Ready", "Ready"),
                        _condition_column("Compliant", "Compliant"),
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                        {"name": "Image", "type": "string", "jsonPath": ".status.image"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "description": v1alpha1.SecureModelDeployment.__doc__,
                            "type": "object",
                            "x-kubernetes-validations": [v1alpha1.NAME_RULE.entry()],
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {
                                    "type": "string",
                                    "description": "APIVersion of this object: securemodels.io/v1alpha1.",
                                },
                                "kind": {
                                    "type": "string",
                                    "description": "Kind of this object: SecureModelDeployment.",
                                },
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def crd_yaml() -> str:
    header = "# Generated by `securemodels crd` from operator/securemodels/api/v1alpha1.py. Do not edit.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=100)
