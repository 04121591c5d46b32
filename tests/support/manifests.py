"""SecureModelDeployment manifests for tests: a valid baseline, overridden field by field."""

from __future__ import annotations

import copy
from typing import Any

IMAGE = "registry.example.com/ml/fraud@sha256:" + "ab" * 32


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`overrides` deep-merged into a copy of `base`; lists and scalars replace."""
    result = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def smd(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "securemodels.io/v1alpha1",
        "kind": "SecureModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": merge({"model": {"image": IMAGE, "replicas": 1}}, spec),
    }
