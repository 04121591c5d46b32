"""The Argo CD health check of a SecureModelDeployment, run in a real Lua interpreter (lupa).

Argo CD runs the script with the live object in the global `obj` and reads the returned table's
`status` and `message`; these tests do the same with SMDs shaped as the operator writes them.
"""

from __future__ import annotations

import copy
from fnmatch import fnmatch
from typing import Any

import pytest
import yaml
from lupa import LuaRuntime

from support.paths import EXAMPLES, ROOT

HEALTH_LUA = ROOT / "deploy" / "argocd" / "health.lua"
ARGOCD_EXAMPLES = EXAMPLES / "argocd"
HEALTH_KEY = "resource.customizations.health.securemodels.io_SecureModelDeployment"


def health(smd: dict[str, Any]) -> tuple[str, str]:
    lua = LuaRuntime()
    lua.globals()["obj"] = lua.table_from(smd, recursive=True)
    result = lua.execute(HEALTH_LUA.read_text())
    return str(result["status"]), str(result["message"])


def condition(kind: str, status: str, reason: str, message: str, generation: int = 2) -> dict[str, Any]:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2026-01-01T00:00:00Z",
        "observedGeneration": generation,
    }


BASE: dict[str, Any] = {
    "apiVersion": "securemodels.io/v1alpha1",
    "kind": "SecureModelDeployment",
    "metadata": {"name": "fraud", "namespace": "ml-prod", "generation": 2},
    "spec": {"model": {"image": "registry.example.com/ml/fraud@sha256:" + "ab" * 32}},
}


def with_status(status: dict[str, Any] | None, generation: int = 2) -> dict[str, Any]:
    smd = copy.deepcopy(BASE)
    smd["metadata"]["generation"] = generation
    if status is not None:
        smd["status"] = status
    return smd


def status(phase: str, ready: dict[str, Any], observed: int = 2) -> dict[str, Any]:
    return {
        "observedGeneration": observed,
        "phase": phase,
        "compliant": phase == "Ready",
        "conditions": [condition("Compliant", "True", "AllControlsPass", "every control passes"), ready],
        "controls": [{"name": "image-digest", "status": "Pass", "reason": "Pinned", "message": "pinned"}],
    }


READY = condition("Ready", "True", "Available", "2/2 replicas available")


@pytest.mark.parametrize(
    ("smd", "expected"),
    [
        pytest.param(
            with_status(None), ("Progressing", "Waiting for the operator to report status"), id="no-status"
        ),
        pytest.param(
            with_status({}),
            ("Progressing", "Waiting for the operator to observe generation 2"),
            id="empty-status",
        ),
        pytest.param(
            with_status(status("Ready", READY, observed=1)),
            ("Progressing", "Waiting for the operator to observe generation 2"),
            id="ready-for-an-older-generation",
        ),
        pytest.param(with_status(status("Ready", READY)), ("Healthy", "2/2 replicas available"), id="ready"),
        pytest.param(
            with_status(
                status("Progressing", condition("Ready", "False", "RollingOut", "1/2 replicas updated"))
            ),
            ("Progressing", "1/2 replicas updated"),
            id="rolling-out",
        ),
        pytest.param(
            with_status({"observedGeneration": 2, "phase": "Progressing"}),
            ("Progressing", "Waiting for the model to become Ready"),
            id="progressing-without-conditions",
        ),
        pytest.param(
            with_status(
                status("Degraded", condition("Ready", "False", "ControlFailing", "mtls: sidecar missing"))
            ),
            ("Degraded", "Degraded: mtls: sidecar missing"),
            id="degraded",
        ),
        pytest.param(
            with_status(
                status(
                    "Blocked",
                    condition(
                        "Ready", "False", "UnencryptedStorage", "StorageClass standard does not encrypt"
                    ),
                )
            ),
            ("Degraded", "Blocked: StorageClass standard does not encrypt"),
            id="blocked",
        ),
        pytest.param(
            with_status({"observedGeneration": 2, "phase": "Blocked"}),
            ("Degraded", "Blocked"),
            id="blocked-without-conditions",
        ),
        pytest.param(
            with_status(
                status("Quarantined", condition("Ready", "False", "Quarantined", "spec.quarantine: INC-4711"))
            ),
            ("Suspended", "spec.quarantine: INC-4711"),
            id="quarantined",
        ),
    ],
)
def test_health_follows_the_operator_status(smd: dict[str, Any], expected: tuple[str, str]) -> None:
    assert health(smd) == expected


def test_the_argocd_cm_patch_carries_exactly_the_health_script() -> None:
    patch = yaml.safe_load((ARGOCD_EXAMPLES / "argocd-cm-patch.yaml").read_text())

    assert patch["kind"] == "ConfigMap"
    assert patch["metadata"]["name"] == "argocd-cm"
    assert patch["data"][HEALTH_KEY] == HEALTH_LUA.read_text()


def alternatives(pattern: str) -> list[str]:
    """Argo CD's glob `{a,b}`: either pattern."""
    if pattern.startswith("{") and pattern.endswith("}"):
        return pattern[1:-1].split(",")
    return [pattern]


def test_the_applications_point_at_the_chart_and_at_a_directory_of_smds() -> None:
    applications = {
        document["metadata"]["name"]: document
        for path in sorted(ARGOCD_EXAMPLES.glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text())
        if document and document.get("kind") == "Application"
    }

    chart_source = applications["secure-model-operator"]["spec"]["source"]
    assert (ROOT / chart_source["path"] / "Chart.yaml").is_file()
    models_source = applications["secure-models"]["spec"]["source"]
    directory = models_source["directory"]
    assert directory["recurse"] is False
    files = [
        path
        for path in sorted((ROOT / models_source["path"]).glob(directory["include"]))
        if not any(fnmatch(path.name, pattern) for pattern in alternatives(directory.get("exclude", "")))
    ]
    documents = [document for path in files for document in yaml.safe_load_all(path.read_text()) if document]
    kinds = [document["kind"] for document in documents]
    assert "SecureModelDeployment" in kinds
    assert "Application" not in kinds
    identities = [
        (document["kind"], document["metadata"].get("namespace"), document["metadata"]["name"])
        for document in documents
    ]
    assert len(identities) == len(set(identities)), (
        "an object declared twice is one Argo CD warns about and applies only once"
    )
