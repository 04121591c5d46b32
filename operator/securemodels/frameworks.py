"""Which requirements of the frameworks auditors ask about (CIS Kubernetes Benchmark, NIST SP 800-53,
HIPAA 164.312, GDPR) each control helps meet: frameworks.yaml beside this module, loaded and checked
once. The audit command and the compliance reports cite it; docs/controls.md cites its sources."""

from __future__ import annotations

from importlib.resources import files

import yaml
from pydantic import BaseModel, ConfigDict, model_validator

Requirements = dict[str, dict[str, str]]  # framework -> requirement id -> its title


class FrameworkMapping(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    frameworks: dict[str, str]  # id -> title, with edition
    controls: dict[str, Requirements]

    @model_validator(mode="after")
    def _every_control_names_every_framework(self) -> FrameworkMapping:
        for control, requirements in self.controls.items():
            if set(requirements) != set(self.frameworks):
                raise ValueError(
                    f"{control}: give every framework ({', '.join(self.frameworks)}), even if empty"
                )
        return self

    def of(self, control: str) -> Requirements:
        """The control's requirements per framework; none for a control the file does not map."""
        return self.controls.get(control) or {framework: {} for framework in self.frameworks}


def load(text: str | None = None) -> FrameworkMapping:
    source = text if text is not None else files("securemodels").joinpath("frameworks.yaml").read_text()
    return FrameworkMapping.model_validate(yaml.safe_load(source))


MAPPING = load()
