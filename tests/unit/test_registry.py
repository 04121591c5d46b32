"""The one registry of controls is what status, docs and metrics go by: every control there has a name,
a condition and reason constants, and the docs name each of them."""

from __future__ import annotations

import pytest

from securemodels.desired.controls.base import Control
from securemodels.desired.controls.registry import CONDITION_OF, CONTROLS
from securemodels.desired.judging import judge
from support.paths import ROOT
from unit.builders import context, observe

CONTROLS_DOC = (ROOT / "docs" / "controls.md").read_text()
API_DOC = (ROOT / "docs" / "api.md").read_text()


def test_names_and_conditions_are_unique() -> None:
    assert len({control.NAME for control in CONTROLS}) == len(CONTROLS)
    assert len(set(CONDITION_OF.values())) == len(CONTROLS)


def test_judging_asks_every_control_in_registry_order() -> None:
    results = judge(context(), observe(context()))

    assert [result.name for result in results] == [control.NAME for control in CONTROLS]


@pytest.mark.parametrize("control", CONTROLS, ids=lambda control: control.NAME)
def test_every_reason_of_every_control_is_documented(control: Control) -> None:
    assert f"## {control.NAME}" in CONTROLS_DOC
    missing = [reason.value for reason in control.Reason if f"`{reason.value}`" not in CONTROLS_DOC]
    assert not missing, f"docs/controls.md does not explain {control.NAME}'s reasons {missing}"


@pytest.mark.parametrize("control", CONTROLS, ids=lambda control: control.NAME)
def test_every_condition_is_in_the_api_reference(control: Control) -> None:
    assert f"`{control.CONDITION}`" in API_DOC
