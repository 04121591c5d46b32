"""The protocol every control module follows, and what the checks share."""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

from securemodels.desired.model import Blocker, Context, ControlResult, Observed


class Control(Protocol):
    """A control module: its name, the condition type it reports, its reasons, and two pure steps."""

    NAME: str
    CONDITION: str

    @property
    def Reason(self) -> type[StrEnum]:
        """The control's reasons, one constant each."""
        ...

    def preflight(self, context: Context, observed: Observed) -> Blocker | None:
        """Why nothing may be written yet, as far as this control is concerned; None when it may."""
        ...

    def check(self, context: Context, observed: Observed) -> ControlResult:
        """The control's verdict on the live state."""
        ...


def verdict(
    name: str,
    problems: list[str],
    failing: StrEnum,
    passing: StrEnum,
    message: str,
) -> ControlResult:
    """Fail with every problem when there are any, else pass."""
    if problems:
        return ControlResult(name, "Fail", failing.value, "; ".join(problems))
    return ControlResult(name, "Pass", passing.value, message)
