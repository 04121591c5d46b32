"""Does the live object carry what we want? Used to skip writes that would change nothing, and to spot
drift. The API server adds defaults and other managers add fields, so "carries" means: every field we
set is there with our value; lists must match item by item."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

_EMPTY: tuple[list[Any], dict[str, Any]] = ([], {})
_QUANTITY = re.compile(r"([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?")
_FACTORS: dict[str | None, Decimal] = {
    None: Decimal(1),
    "m": Decimal("0.001"),
    **{suffix: Decimal(1000) ** power for power, suffix in enumerate("kMGTPE", start=1)},
    **{suffix + "i": Decimal(1024) ** power for power, suffix in enumerate("KMGTPE", start=1)},
}


def _quantity(value: str) -> Decimal | None:
    match = _QUANTITY.fullmatch(value)
    return Decimal(match[1]) * _FACTORS[match[2]] if match else None


def _same_scalar(live: Any, desired: Any) -> bool:
    """Equal, or the same Kubernetes quantity written another way ("0.5" is stored as "500m")."""
    if live == desired:
        return True
    if isinstance(live, str) and isinstance(desired, str):
        amount = _quantity(desired)
        return amount is not None and amount == _quantity(live)
    return False


def carries(live: Any, desired: Any) -> bool:
    if isinstance(desired, dict):
        # The API server omits empty lists and maps, so "absent" carries an empty value.
        return isinstance(live, dict) and all(
            carries(live[key], value) if key in live else value in _EMPTY for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(live) == len(desired)
            and all(carries(item, wanted) for item, wanted in zip(live, desired, strict=True))
        )
    return _same_scalar(live, desired)


def selector_matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics; an empty selector matches everything."""
    if selector is None:
        return False
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for requirement in selector.get("matchExpressions") or []:
        key, operator, values = requirement["key"], requirement["operator"], requirement.get("values") or []
        present = key in labels
        if (
            (operator == "In" and (not present or labels[key] not in values))
            or (operator == "NotIn" and present and labels[key] in values)
            or (operator == "Exists" and not present)
            or (operator == "DoesNotExist" and present)
        ):
            return False
    return True
