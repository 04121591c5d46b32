"""`carries` (does the live object hold what we want?) and label-selector matching."""

from __future__ import annotations

from typing import Any

import pytest

from securemodels.desired.compare import carries, selector_matches

CARRIES: list[tuple[str, Any, Any, bool]] = [
    ("equal scalars", 1, 1, True),
    ("different scalars", 1, 2, False),
    ("string is not a number", "1", 1, False),
    ("nested dicts", {"a": {"b": 1}}, {"a": {"b": 1}}, True),
    ("nested value differs", {"a": {"b": 2}}, {"a": {"b": 1}}, False),
    (
        "extra live fields are ignored",
        {"a": 1, "status": {"x": 1}, "b": {"c": 1, "d": 2}},
        {"a": 1, "b": {"c": 1}},
        True,
    ),
    ("missing wanted key", {"b": 1}, {"a": 1, "b": 1}, False),
    ("absent key carries an empty list", {}, {"a": []}, True),
    ("absent key carries an empty map", {}, {"a": {}}, True),
    ("absent key does not carry False", {}, {"a": False}, False),
    ("absent key does not carry zero", {}, {"a": 0}, False),
    ("absent key does not carry an empty string", {}, {"a": ""}, False),
    ("absent key does not carry a non-empty list", {}, {"a": [1]}, False),
    ("live scalar where a map is wanted", {"a": 1}, {"a": {"b": 1}}, False),
    ("lists item by item", [{"a": 1, "x": 9}, {"b": 2}], [{"a": 1}, {"b": 2}], True),
    ("lists in another order", [{"b": 2}, {"a": 1}], [{"a": 1}, {"b": 2}], False),
    ("live list longer", [1, 2, 3], [1, 2], False),
    ("live list shorter", [1], [1, 2], False),
    ("live map where a list is wanted", {"0": 1}, [1], False),
    ("empty lists", [], [], True),
]


@pytest.mark.parametrize(
    ("live", "wanted", "expected"), [c[1:] for c in CARRIES], ids=[c[0] for c in CARRIES]
)
def test_carries(live: Any, wanted: Any, expected: bool) -> None:
    assert carries(live, wanted) is expected


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
