"""The compliance report of a namespace, built from the SMDs' status (desired/reports.py)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from securemodels import desired
from securemodels.desired import reports

KEY = b"k" * 32
NAMESPACE_UID = "0b7c1d3e-0000-4000-8000-000000000001"
POLICY_REPORT = "wgpolicyk8s.io/v1alpha2"
OPEN_REPORTS = "openreports.io/v1alpha1"


def smd(name: str, *controls: tuple[str, str], **status: Any) -> dict[str, Any]:
    conditions = [
        {"type": "ImagePinned", "status": "True", "lastTransitionTime": "2026-02-01T10:00:00Z"},
        {"type": "NetworkIsolated", "status": "False", "lastTransitionTime": "2026-02-02T10:00:00Z"},
    ]
    return {
        "metadata": {"name": name, "namespace": "ml-prod", "uid": f"uid-{name}"},
        "status": {
            "phase": "Ready",
            "controls": [
                {
                    "name": control,
                    "status": verdict,
                    "reason": f"{verdict}Reason",
                    "message": f"{control} said",
                }
                for control, verdict in controls
            ],
            "conditions": conditions,
            **status,
        },
    }


COMPLIANT = smd("fraud", ("image-digest", "Pass"), ("network-isolation", "Pass"))
WEAKENED = smd("lenient", ("image-digest", "Pass"), ("network-isolation", "Weakened"))


def test_no_model_no_report() -> None:
    assert reports.report(POLICY_REPORT, "ml-prod", []) is None


def test_one_result_per_model_and_control_with_a_summary() -> None:
    report = reports.report(POLICY_REPORT, "ml-prod", [WEAKENED, COMPLIANT])

    assert report is not None
    assert (report["apiVersion"], report["kind"]) == (POLICY_REPORT, "PolicyReport")
    assert report["metadata"]["name"] == "secure-model-operator"
    assert report["metadata"]["namespace"] == "ml-prod"
    assert reports.LABELS.items() <= report["metadata"]["labels"].items()
    assert [(item["resources"][0]["name"], item["policy"], item["result"]) for item in report["results"]] == [
        ("fraud", "image-digest", "pass"),
        ("fraud", "network-isolation", "pass"),
        ("lenient", "image-digest", "pass"),
        ("lenient", "network-isolation", "warn"),
    ]
    assert report["summary"] == {"pass": 3, "fail": 0, "warn": 1, "error": 0, "skip": 0}
    assert "source" not in report


def test_a_result_says_what_was_judged_where_and_since_when() -> None:
    report = reports.report(POLICY_REPORT, "ml-prod", [WEAKENED])
    assert report is not None

    result = report["results"][1]
    assert result["source"] == "secure-model-operator"
    assert result["rule"] == "NetworkIsolated"
    assert result["message"] == "network-isolation said"
    assert result["scored"] is True
    assert result["resources"] == [
        {
            "apiVersion": "securemodels.io/v1alpha1",
            "kind": "SecureModelDeployment",
            "name": "lenient",
            "namespace": "ml-prod",
            "uid": "uid-lenient",
        }
    ]
    assert result["timestamp"] == {"seconds": 1770026400, "nanos": 0}  # 2026-02-02T10:00:00Z
    assert result["properties"]["reason"] == "WeakenedReason"
    assert result["properties"]["cis-kubernetes"] == "5.3.2"
    assert result["properties"]["nist-800-53"] == "AC-4, SC-7"


def test_a_failing_control_fails_and_a_model_not_judged_adds_nothing() -> None:
    failing = smd("tampered", ("image-digest", "Fail"))
    fresh = {"metadata": {"name": "fresh", "namespace": "ml-prod", "uid": "u"}}

    report = reports.report(POLICY_REPORT, "ml-prod", [failing, fresh])

    assert report is not None
    assert [item["result"] for item in report["results"]] == ["fail"]
    assert report["summary"]["fail"] == 1


def test_a_stored_smd_that_does_not_match_the_api_is_an_error_result() -> None:
    invalid = {
        "metadata": {"name": "broken", "namespace": "ml-prod", "uid": "u"},
        "status": {
            "phase": "Blocked",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "InvalidSpec",
                    "message": "spec.model.image: a digest is required",
                    "lastTransitionTime": "2026-02-01T10:00:00Z",
                }
            ],
        },
    }

    report = reports.report(POLICY_REPORT, "ml-prod", [invalid])

    assert report is not None
    (result,) = report["results"]
    assert (result["policy"], result["rule"], result["result"]) == ("spec", "InvalidSpec", "error")
    assert result["message"] == "spec.model.image: a digest is required"


def test_openreports_has_the_same_results_and_names_its_source() -> None:
    wg = reports.report(POLICY_REPORT, "ml-prod", [WEAKENED])
    open_report = reports.report(OPEN_REPORTS, "ml-prod", [WEAKENED])
    assert wg is not None and open_report is not None

    assert (open_report["apiVersion"], open_report["kind"]) == (OPEN_REPORTS, "Report")
    assert open_report["source"] == "secure-model-operator"
    assert open_report["results"] == wg["results"]


def test_the_same_fleet_wants_the_same_report_and_a_changed_verdict_another() -> None:
    first = reports.report(POLICY_REPORT, "ml-prod", [COMPLIANT, WEAKENED])
    again = reports.report(POLICY_REPORT, "ml-prod", [copy.deepcopy(WEAKENED), copy.deepcopy(COMPLIANT)])
    repaired = reports.report(
        POLICY_REPORT,
        "ml-prod",
        [COMPLIANT, smd("lenient", ("image-digest", "Pass"), ("network-isolation", "Pass"))],
    )

    assert desired.desired_hash(first) == desired.desired_hash(again)
    assert desired.desired_hash(first) != desired.desired_hash(repaired)


def written(report: dict[str, Any], namespace_uid: str = NAMESPACE_UID) -> dict[str, Any]:
    """As the API server would hold it: stamped with what it made of the request (here, the request)."""
    return reports.stamped(KEY, namespace_uid, report, report)


def test_a_written_report_is_current_until_someone_edits_it_or_the_fleet_changes() -> None:
    wanted = reports.report(POLICY_REPORT, "ml-prod", [WEAKENED])
    assert wanted is not None
    live = written(wanted)

    assert reports.is_current(KEY, NAMESPACE_UID, live, wanted)
    edited = copy.deepcopy(live)
    edited["results"][1]["result"] = "pass"
    assert not reports.is_current(KEY, NAMESPACE_UID, edited, wanted)
    assert not reports.intact(KEY, NAMESPACE_UID, edited)
    relabelled = copy.deepcopy(live)
    relabelled["metadata"]["labels"]["app.kubernetes.io/managed-by"] = "someone"
    assert not reports.intact(KEY, NAMESPACE_UID, relabelled)
    changed = reports.report(POLICY_REPORT, "ml-prod", [WEAKENED, COMPLIANT])
    assert changed is not None
    assert reports.intact(KEY, NAMESPACE_UID, live)
    assert not reports.is_current(KEY, NAMESPACE_UID, live, changed)


@pytest.mark.parametrize(
    ("key", "namespace_uid"),
    [(b"x" * 32, NAMESPACE_UID), (KEY, "another-namespace-of-the-same-name")],
    ids=["another-key", "another-namespace"],
)
def test_the_stamp_is_bound_to_the_key_and_the_namespace(key: bytes, namespace_uid: str) -> None:
    wanted = reports.report(POLICY_REPORT, "ml-prod", [WEAKENED])
    assert wanted is not None

    assert not reports.intact(key, namespace_uid, written(wanted))
