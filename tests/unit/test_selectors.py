"""Kubernetes label-selector semantics, as judging uses them to tell what a policy or Service selects."""

from __future__ import annotations

from typing import Any

import pytest

from securemodels.desired.selectors import selector_matches

LABELS = {"app": "fraud", "tier": "model"}
SELECTORS: list[tuple[str, dict[str, Any] | None, bool]] = [
    ("no selector matches nothing", None, False),
    ("empty selector matches everything", {}, True),
    ("matchLabels subset", {"matchLabels": {"app": "fraud"}}, True),
    ("matchLabels value differs", {"matchLabels": {"app": "other"}}, False),
    ("matchLabels key missing", {"matchLabels": {"team": "ml"}}, False),
    (
        "In with the value",
        {"matchExpressions": [{"key": "app", "operator": "In", "values": ["x", "fraud"]}]},
        True,
    ),
    (
        "In without the value",
        {"matchExpressions": [{"key": "app", "operator": "In", "values": ["x"]}]},
        False,
    ),
    (
        "In on a missing key",
        {"matchExpressions": [{"key": "team", "operator": "In", "values": ["ml"]}]},
        False,
    ),
    (
        "NotIn without the value",
        {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["x"]}]},
        True,
    ),
    (
        "NotIn with the value",
        {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["fraud"]}]},
        False,
    ),
    (
        "NotIn on a missing key",
        {"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["ml"]}]},
        True,
    ),
    ("Exists", {"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, True),
    ("Exists on a missing key", {"matchExpressions": [{"key": "team", "operator": "Exists"}]}, False),
    ("DoesNotExist", {"matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]}, True),
    (
        "DoesNotExist on a present key",
        {"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]},
        False,
    ),
    (
        "every expression must hold",
        {
            "matchExpressions": [
                {"key": "app", "operator": "In", "values": ["fraud"]},
                {"key": "team", "operator": "Exists"},
            ]
        },
        False,
    ),
    ("In with no values", {"matchExpressions": [{"key": "app", "operator": "In"}]}, False),
    ("NotIn with no values", {"matchExpressions": [{"key": "app", "operator": "NotIn"}]}, True),
    ("null matchLabels", {"matchLabels": None}, True),
    (
        "labels and expressions must all hold",
        {
            "matchLabels": {"app": "fraud"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["db"]}],
        },
        False,
    ),
]


@pytest.mark.parametrize(("selector", "expected"), [c[1:] for c in SELECTORS], ids=[c[0] for c in SELECTORS])
def test_selector_matches(selector: dict[str, Any] | None, expected: bool) -> None:
    assert selector_matches(selector, LABELS) is expected


def test_an_empty_label_set_is_selected_only_by_selectors_without_positive_requirements() -> None:
    assert selector_matches({}, {}) is True
    assert selector_matches({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {}) is True
    assert selector_matches({"matchLabels": {"a": "b"}}, {}) is False
