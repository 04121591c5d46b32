"""The framework mapping and what `securemodels audit` makes of the SMDs' status."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from importlib.resources import files
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from securemodels import audit, frameworks
from securemodels.desired.controls.registry import CONTROLS

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def smd(name: str, namespace: str = "ml-prod", **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace}, **({"status": status} if status else {})}


def control(name: str, status: str = "Pass", reason: str = "Verified", message: str = "ok") -> dict[str, str]:
    return {"name": name, "status": status, "reason": reason, "message": message}


FLEET = [
    smd(
        "fraud",
        phase="Ready",
        compliant=True,
        controls=[control("image-digest"), control("mtls")],
        conditions=[{"type": "MTLSReady", "status": "True", "lastTransitionTime": "2026-02-01T00:00:00Z"}],
    ),
    smd(
        "lenient",
        phase="Ready",
        compliant=False,
        controls=[
            control("image-digest"),
            control("network-isolation", "Weakened", "Open", "from | anywhere"),
        ],
        conditions=[
            {"type": "NetworkIsolated", "status": "False", "lastTransitionTime": "2026-02-02T00:00:00Z"}
        ],
    ),
    smd("fresh", namespace="ml-dev"),
]


def test_every_registered_control_is_mapped_to_every_framework() -> None:
    mapping = frameworks.MAPPING

    assert set(mapping.frameworks) == {"cis-kubernetes", "nist-800-53", "hipaa", "gdpr"}
    for item in CONTROLS:
        assert item.NAME in mapping.controls, f"frameworks.yaml does not map {item.NAME}"
        assert any(mapping.of(item.NAME).values()), item.NAME
    assert set(mapping.controls) <= {item.NAME for item in CONTROLS}


def test_the_mapping_names_the_requirements_auditors_ask_about() -> None:
    of = frameworks.MAPPING.of

    assert "5.5.1" in of("image-digest")["cis-kubernetes"]
    assert "5.3.2" in of("network-isolation")["cis-kubernetes"]
    assert "SC-8(1)" in of("mtls")["nist-800-53"]
    assert "164.312(e)(1)" in of("mtls")["hipaa"]
    assert "164.312(a)(2)(iv)" in of("storage-encryption")["hipaa"]
    assert "Art. 44" in of("data-residency")["gdpr"]
    assert all(framework in of("unknown-control") for framework in frameworks.MAPPING.frameworks)


def test_a_mapping_that_leaves_out_a_framework_or_misspells_a_key_is_refused() -> None:
    text = (files("securemodels") / "frameworks.yaml").read_text()
    document = yaml.safe_load(text)
    del document["controls"]["mtls"]["hipaa"]
    with pytest.raises(ValidationError, match="mtls: give every framework"):
        frameworks.load(yaml.safe_dump(document))
    document = yaml.safe_load(text)
    document["control"] = document.pop("controls")
    with pytest.raises(ValidationError):
        frameworks.load(yaml.safe_dump(document))


def test_the_fleet_is_read_from_status_alone_and_sorted() -> None:
    models = audit.fleet(FLEET)

    assert [(model.namespace, model.name) for model in models] == [
        ("ml-dev", "fresh"),
        ("ml-prod", "fraud"),
        ("ml-prod", "lenient"),
    ]
    fresh, fraud, lenient = models
    assert (fresh.phase, fresh.compliant, fresh.results) == ("Unknown", None, ())
    assert fraud.results[1].since == "2026-02-01T00:00:00Z"
    assert [result.control for result in lenient.not_passing] == ["network-isolation"]
    assert not audit.all_compliant(models)
    assert audit.all_compliant([fraud])
    assert not audit.all_compliant([fresh])


def test_the_table_lists_each_model_and_each_controls_requirements() -> None:
    table = audit.as_table(audit.fleet(FLEET))
    lines = table.splitlines()

    assert lines[0].split() == ["NAMESPACE", "NAME", "PHASE", "COMPLIANT", "NOT", "PASSING"]
    assert lines[1].split() == ["ml-dev", "fresh", "Unknown", "Unknown", "-"]
    assert lines[3].split() == ["ml-prod", "lenient", "Ready", "False", "network-isolation=Weakened"]
    pod_security = next(line for line in lines if line.startswith("pod-security"))
    assert "5.2.2-5.2.10, 5.2.12, 5.2.13" in pod_security
    assert [line.split()[0] for line in lines[6:]] == [item.NAME for item in CONTROLS]


def test_the_markdown_has_models_findings_and_requirements_with_cells_escaped() -> None:
    text = audit.as_markdown(audit.fleet(FLEET), NOW)

    assert text.startswith("# Compliance of SecureModelDeployments\n")
    assert "Generated 2026-03-01T12:00:00Z: 3 models, 1 compliant, 2 not compliant." in text
    assert "| ml-prod | lenient | Ready | no | network-isolation (Weakened) |" in text
    assert (
        "| ml-prod | lenient | network-isolation | Weakened | 2026-02-02T00:00:00Z | Open "
        "| from \\| anywhere |" in text
    )
    assert "| data-residency | - | SA-9(5) | - | Art. 44 |" in text
    assert "Every control of every model passes." in audit.as_markdown(audit.fleet(FLEET[:1]), NOW)


def test_the_json_carries_each_result_with_its_requirements() -> None:
    document = json.loads(audit.as_json(audit.fleet(FLEET), NOW))

    assert document["generatedAt"] == "2026-03-01T12:00:00Z"
    assert document["summary"] == {
        "models": 3,
        "compliant": 1,
        "notCompliant": 2,
        "results": {"Pass": 3, "Fail": 0, "Weakened": 1},
    }
    lenient = next(model for model in document["models"] if model["name"] == "lenient")
    weakened = lenient["controls"][1]
    assert weakened["status"] == "Weakened"
    assert weakened["requirements"]["cis-kubernetes"] == ["5.3.2"]
    assert weakened["requirements"]["nist-800-53"] == ["AC-4", "SC-7"]
    assert set(document["controls"]) == {item.NAME for item in CONTROLS}


def test_a_control_of_a_newer_operator_is_listed_with_no_requirements() -> None:
    models = audit.fleet([smd("m", phase="Ready", compliant=True, controls=[control("weights")])])

    document = json.loads(audit.as_json(models, NOW))

    assert list(document["controls"])[-1] == "weights"
    assert document["models"][0]["controls"][0]["requirements"] == {
        framework: [] for framework in frameworks.MAPPING.frameworks
    }
    assert audit.as_table(models).splitlines()[-1].split() == ["weights", "-", "-", "-", "-"]


@pytest.mark.parametrize(
    ("ids", "expected"),
    [
        (["5.2.2", "5.2.3", "5.2.4"], ["5.2.2-5.2.4"]),
        (["5.2.2", "5.2.3", "5.7.2"], ["5.2.2", "5.2.3", "5.7.2"]),
        (["5.1.2", "5.1.3", "5.1.5", "5.1.6"], ["5.1.2", "5.1.3", "5.1.5", "5.1.6"]),
        (["AC-3", "AC-4", "AC-5"], ["AC-3", "AC-4", "AC-5"]),
        ([], []),
    ],
)
def test_only_runs_of_numbered_sections_are_compacted(ids: list[str], expected: list[str]) -> None:
    assert audit.compact(ids) == expected
