"""The compliance report of one namespace: one result per model and control, from the SMDs' status.

The format is the Policy WG's PolicyReport (wgpolicyk8s.io/v1alpha2), which Kyverno and Policy Reporter
read, or its successor OpenReports (openreports.io/v1alpha1), whose results are the same. Every value is
taken from what the reconciles wrote to the SMDs' status, including each result's timestamp (when its
control's condition last changed), so the report changes only when a verdict does and an unchanged
fleet asks for no write.

The report carries the operator's stamps like every object it writes (desired/canonical.py), bound to
the namespace's uid: only a report with the stamp is the operator's to delete.

Pure: no I/O.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from securemodels import desired
from securemodels.api import v1alpha1
from securemodels.config import REPORT_KINDS
from securemodels.desired import canonical, naming
from securemodels.desired.controls.registry import CONDITION_OF
from securemodels.desired.model import Manifest
from securemodels.desired.status import INVALID_SPEC, READY
from securemodels.frameworks import MAPPING

NAME = "secure-model-operator"
COMPONENT = "compliance-report"
SOURCE = naming.MANAGED_BY
CATEGORY = "SecureModelDeployment controls"
# What the cache watches: the operator's reports, and nothing else of the kind.
LABELS = {naming.MANAGED_BY_LABEL: naming.MANAGED_BY, naming.COMPONENT_LABEL: COMPONENT}
RESULT_OF = {"Pass": "pass", "Fail": "fail", "Weakened": "warn"}
SUMMARY_KEYS = ("pass", "fail", "warn", "error", "skip")


def _seconds(timestamp: str | None) -> int:
    if not timestamp:
        return 0
    return int(datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp())


def _resource(smd: Mapping[str, Any]) -> dict[str, str]:
    metadata = smd["metadata"]
    return {
        "apiVersion": f"{v1alpha1.GROUP}/{v1alpha1.VERSION}",
        "kind": v1alpha1.KIND,
        "name": str(metadata["name"]),
        "namespace": str(metadata["namespace"]),
        "uid": str(metadata.get("uid") or ""),
    }


def _requirements(control: str) -> dict[str, str]:
    """The framework requirements a control helps meet, one property per framework."""
    return {framework: ", ".join(found) for framework, found in MAPPING.of(control).items() if found}


def results(smd: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One result per control of the SMD's status; one error result for a stored SMD that does not
    match the API (it is not judged); none for an SMD not judged yet."""
    status = smd.get("status") or {}
    since = {
        str(condition.get("type")): condition.get("lastTransitionTime")
        for condition in status.get("conditions") or []
        if isinstance(condition, Mapping)
    }
    found = []
    for control in status.get("controls") or []:
        name = str(control.get("name"))
        found.append(
            {
                "source": SOURCE,
                "policy": name,
                "rule": CONDITION_OF.get(name, name),
                "category": CATEGORY,
                "result": RESULT_OF.get(str(control.get("status")), "error"),
                "scored": True,
                "message": str(control.get("message") or ""),
                "resources": [_resource(smd)],
                "timestamp": {"seconds": _seconds(since.get(CONDITION_OF.get(name, ""))), "nanos": 0},
                "properties": {"reason": str(control.get("reason") or ""), **_requirements(name)},
            }
        )
    ready = next(
        (
            item
            for item in status.get("conditions") or []
            if isinstance(item, Mapping) and item.get("type") == READY
        ),
        None,
    )
    if not found and ready is not None and ready.get("reason") == INVALID_SPEC:
        found.append(
            {
                "source": SOURCE,
                "policy": "spec",
                "rule": INVALID_SPEC,
                "category": CATEGORY,
                "result": "error",
                "scored": True,
                "message": str(ready.get("message") or ""),
                "resources": [_resource(smd)],
                "timestamp": {"seconds": _seconds(ready.get("lastTransitionTime")), "nanos": 0},
                "properties": {"reason": INVALID_SPEC},
            }
        )
    return found


def report(api: str, namespace: str, smds: Iterable[Mapping[str, Any]]) -> Manifest | None:
    """The namespace's report, or None when it has no SMD (nothing to report: the report goes)."""
    models = sorted(smds, key=lambda smd: str(smd["metadata"]["name"]))
    if not models:
        return None
    found = [result for smd in models for result in results(smd)]
    counts = Counter(result["result"] for result in found)
    manifest: Manifest = {
        "apiVersion": api,
        "kind": REPORT_KINDS[api],
        "metadata": {
            "name": NAME,
            "namespace": namespace,
            "labels": {**naming.operator_labels(COMPONENT)},
        },
        "summary": {key: counts.get(key, 0) for key in SUMMARY_KEYS},
        "results": found,
    }
    if REPORT_KINDS[api] == "Report":
        manifest["source"] = SOURCE
    return desired.stamp(manifest)


def is_current(key: bytes, namespace_uid: str, live: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """The live report is as the operator wrote it, and what it wants now."""
    return canonical.object_intact(key, namespace_uid, live["kind"], live) and desired.desired_hash(
        dict(live)
    ) == desired.desired_hash(dict(wanted))


def stamped(key: bytes, namespace_uid: str, request: Manifest, canonical_form: Manifest) -> Manifest:
    """The request with the stamp of what the API server makes of it (its dry-run answer)."""
    return canonical.with_object_mac(key, namespace_uid, request, canonical_form)


def intact(key: bytes, namespace_uid: str, live: Mapping[str, Any]) -> bool:
    return canonical.object_intact(key, namespace_uid, live["kind"], live)
