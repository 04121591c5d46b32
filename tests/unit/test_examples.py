"""The shipped examples: each SMD in examples/ builds objects that pass every check, or are weakened
exactly where the example opts out on purpose."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from securemodels.api.v1alpha1 import KIND, SecureModelDeployment
from securemodels.config import OperatorConfig
from securemodels.desired import judging
from securemodels.desired.model import Facts
from support.paths import EXAMPLES, ROOT
from unit.builders import NODE, context, observe, owner

# The settings the chart writes that the examples depend on (the judges render with the same).
OPERATOR_CONFIG = ROOT / "tests" / "judges" / "fixtures" / "operator-config.yaml"
EXPECTED_WEAKENED = {"weakened.yaml": {"network-isolation", "mtls"}}


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


SMDS = [
    (path, doc)
    for path in sorted(EXAMPLES.glob("*.yaml"))
    for doc in documents(path)
    if doc.get("kind") == KIND
]


def test_basic_example_is_among_them() -> None:
    assert EXAMPLES / "basic.yaml" in {path for path, _ in SMDS}


@pytest.mark.parametrize(
    ("path", "document"), SMDS, ids=[f"{path.name}:{doc['metadata']['name']}" for path, doc in SMDS]
)
def test_example_builds_objects_that_pass_or_are_weakened_on_purpose(
    path: Path, document: dict[str, Any]
) -> None:
    classes = {doc["metadata"]["name"]: doc for doc in documents(path) if doc.get("kind") == "StorageClass"}
    config_maps = {doc["metadata"]["name"]: doc for doc in documents(path) if doc.get("kind") == "ConfigMap"}
    spec = SecureModelDeployment.model_validate(document).spec
    signature = spec.model.weights.signature if spec.model.weights else None
    facts = Facts(
        storage_class=classes.get(spec.storage.storage_class_name) if spec.storage else None,
        node_regions={NODE: spec.residency.regions[0]} if spec.residency else {},
        signing_config_map=config_maps.get(signature.trust.name) if signature else None,
    )
    ctx = context(
        spec,
        config=OperatorConfig.load(OPERATOR_CONFIG.read_text()),
        facts=facts,
        who=owner(document["metadata"]["name"], document["metadata"]["namespace"]),
    )
    observed = observe(ctx)
    verdicts = {result.name: result.status for result in judging.judge(ctx, observed)}

    assert judging.preflight(ctx, observed) == ()
    assert "Fail" not in verdicts.values()
    assert {name for name, verdict in verdicts.items() if verdict == "Weakened"} == EXPECTED_WEAKENED.get(
        path.name, set()
    )
