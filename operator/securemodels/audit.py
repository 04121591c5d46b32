"""The fleet's compliance as `securemodels audit` prints it: a table for a terminal, JSON and Markdown for
tickets. Each control is shown with the framework requirements it helps meet (frameworks.yaml).

Pure: it reads the SMDs' status as the API server returns them, and never judges anything itself.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from securemodels.desired.controls.registry import CONDITION_OF, CONTROLS
from securemodels.desired.model import rfc3339
from securemodels.frameworks import MAPPING, FrameworkMapping

NOT_PASSING = ("Fail", "Weakened")


@dataclass(frozen=True)
class Result:
    control: str
    status: str
    reason: str
    message: str
    since: str  # when the control's condition last changed, RFC 3339; "" when unknown


@dataclass(frozen=True)
class Model:
    namespace: str
    name: str
    phase: str
    compliant: bool | None  # None: not judged yet
    results: tuple[Result, ...]

    @property
    def not_passing(self) -> tuple[Result, ...]:
        return tuple(result for result in self.results if result.status in NOT_PASSING)


def _model(item: Mapping[str, Any]) -> Model:
    metadata, status = item["metadata"], item.get("status") or {}
    since = {
        condition.get("type"): str(condition.get("lastTransitionTime") or "")
        for condition in status.get("conditions") or []
    }
    results = tuple(
        Result(
            control=str(control.get("name")),
            status=str(control.get("status")),
            reason=str(control.get("reason") or ""),
            message=str(control.get("message") or ""),
            since=since.get(CONDITION_OF.get(str(control.get("name")), ""), ""),
        )
        for control in status.get("controls") or []
    )
    compliant = status.get("compliant")
    return Model(
        namespace=str(metadata["namespace"]),
        name=str(metadata["name"]),
        phase=str(status.get("phase") or "Unknown"),
        compliant=compliant if isinstance(compliant, bool) else None,
        results=results,
    )


def fleet(items: Iterable[Mapping[str, Any]]) -> list[Model]:
    """The SMDs as the audit shows them, by namespace and name."""
    return sorted((_model(item) for item in items), key=lambda model: (model.namespace, model.name))


def all_compliant(models: Iterable[Model]) -> bool:
    return all(model.compliant is True for model in models)


def _controls(models: list[Model]) -> list[str]:
    """The registry's controls in its order, then any other a status names (from a newer operator)."""
    known = [control.NAME for control in CONTROLS]
    others = sorted({result.control for model in models for result in model.results} - set(known))
    return known + others


def as_json(models: list[Model], generated: datetime, mapping: FrameworkMapping = MAPPING) -> str:
    statuses = Counter(result.status for model in models for result in model.results)
    document = {
        "generatedAt": rfc3339(generated),
        "summary": {
            "models": len(models),
            "compliant": sum(1 for model in models if model.compliant is True),
            "notCompliant": sum(1 for model in models if model.compliant is not True),
            "results": {status: statuses.get(status, 0) for status in ("Pass", "Fail", "Weakened")},
        },
        "frameworks": dict(mapping.frameworks),
        "controls": {control: mapping.of(control) for control in _controls(models)},
        "models": [
            {
                "namespace": model.namespace,
                "name": model.name,
                "phase": model.phase,
                "compliant": model.compliant,
                "controls": [
                    {
                        "name": result.control,
                        "status": result.status,
                        "reason": result.reason,
                        "message": result.message,
                        "since": result.since or None,
                        "requirements": {
                            framework: sorted(found)
                            for framework, found in mapping.of(result.control).items()
                        },
                    }
                    for result in model.results
                ],
            }
            for model in models
        ],
    }
    return json.dumps(document, indent=2) + "\n"


def compact(ids: Iterable[str]) -> list[str]:
    """Runs of three or more numbered sections as one range: 5.2.2, 5.2.3, 5.2.4 -> 5.2.2-5.2.4."""
    found: list[str] = []
    run: list[str] = []

    def close() -> None:
        found.extend([f"{run[0]}-{run[-1]}"] if len(run) >= 3 else run)
        run.clear()

    for item in ids:
        prefix, _, number = item.rpartition(".")
        previous = run[-1].rpartition(".") if run else None
        follows = (
            previous is not None
            and number.isdigit()
            and previous[2].isdigit()
            and previous[0] == prefix
            and int(number) == int(previous[2]) + 1
        )
        if not follows:
            close()
        run.append(item)
    close()
    return found


def _requirements(mapping: FrameworkMapping, control: str, framework: str) -> str:
    return ", ".join(compact(mapping.of(control).get(framework, {}))) or "-"


def _columns(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() + "\n"
        for row in rows
    )


FRAMEWORK_HEADINGS = {
    "cis-kubernetes": "CIS KUBERNETES 5.x",
    "nist-800-53": "NIST SP 800-53",
    "hipaa": "HIPAA 164.312",
    "gdpr": "GDPR",
}


def _heading(framework: str) -> str:
    return FRAMEWORK_HEADINGS.get(framework, framework.upper())


def as_table(models: list[Model], mapping: FrameworkMapping = MAPPING) -> str:
    """Two tables: each model and what does not pass; each control and what it helps meet."""
    rows = [("NAMESPACE", "NAME", "PHASE", "COMPLIANT", "NOT PASSING")]
    for model in models:
        not_passing = ", ".join(f"{result.control}={result.status}" for result in model.not_passing)
        rows.append(
            (
                model.namespace,
                model.name,
                model.phase,
                "Unknown" if model.compliant is None else str(model.compliant),
                not_passing or "-",
            )
        )
    if not models:
        rows.append(("-", "-", "-", "-", "-"))
    frameworks = list(mapping.frameworks)
    legend = [("CONTROL", *(_heading(framework) for framework in frameworks))]
    legend += [
        (control, *(_requirements(mapping, control, framework) for framework in frameworks))
        for control in _controls(models)
    ]
    return _columns(rows) + "\n" + _columns(legend)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ") or "-"


def as_markdown(models: list[Model], generated: datetime, mapping: FrameworkMapping = MAPPING) -> str:
    compliant = sum(1 for model in models if model.compliant is True)
    lines = [
        "# Compliance of SecureModelDeployments",
        "",
        f"Generated {rfc3339(generated)}: {len(models)} models, {compliant} compliant, "
        f"{len(models) - compliant} not compliant. Every control is judged by the operator on the live "
        "state of the cluster.",
        "",
        "## Models",
        "",
        "| Namespace | Model | Phase | Compliant | Not passing |",
        "|---|---|---|---|---|",
    ]
    for model in models:
        not_passing = ", ".join(f"{result.control} ({result.status})" for result in model.not_passing)
        lines.append(
            f"| {_cell(model.namespace)} | {_cell(model.name)} | {model.phase} | "
            f"{'yes' if model.compliant else 'no'} | {_cell(not_passing)} |"
        )
    findings = [(model, result) for model in models for result in model.not_passing]
    lines += ["", "## Findings", ""]
    if findings:
        lines += [
            "| Namespace | Model | Control | Status | Since | Reason | Message |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {_cell(model.namespace)} | {_cell(model.name)} | {result.control} | {result.status} | "
            f"{_cell(result.since)} | {_cell(result.reason)} | {_cell(result.message)} |"
            for model, result in findings
        ]
    else:
        lines.append("Every control of every model passes.")
    frameworks = list(mapping.frameworks)
    lines += [
        "",
        "## Controls and the requirements they help meet",
        "",
        "| Control | " + " | ".join(mapping.frameworks[framework] for framework in frameworks) + " |",
        "|---|" + "---|" * len(frameworks),
    ]
    lines += [
        f"| {control} | "
        + " | ".join(_cell(_requirements(mapping, control, framework)) for framework in frameworks)
        + " |"
        for control in _controls(models)
    ]
    return "\n".join(lines) + "\n"
