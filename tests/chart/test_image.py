"""The operator image's Dockerfile, checked without a container engine, and its fit with the chart."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import distribution
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from chart.helm import one, render
from support.paths import ROOT

DOCKERFILE = ROOT / "Dockerfile"
DIGEST = re.compile(r"@sha256:[a-f0-9]{64}$")


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, rest = line.strip().partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def test_hadolint_is_clean() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"

    result = subprocess.run([str(hadolint), str(DOCKERFILE)], capture_output=True, text=True, check=False)

    assert result.returncode == 0, result.stdout + result.stderr


def test_every_stage_starts_from_a_base_pinned_by_digest() -> None:
    steps = instructions()
    arguments = dict(
        argument.split("=", 1) for keyword, argument in steps if keyword == "ARG" and "=" in argument
    )
    bases = [argument.split()[0] for keyword, argument in steps if keyword == "FROM"]

    assert len(bases) >= 2, "multi-stage: a builder and a runtime stage"
    for base in bases:
        image = arguments.get(base.removeprefix("${").removesuffix("}"), base)
        assert DIGEST.search(image), f"{base} is not pinned by digest"
        assert image.startswith("python:3.11-slim-bookworm@")


def test_the_image_runs_the_operator_as_the_uid_the_chart_expects() -> None:
    steps = instructions()
    runtime = steps[max(index for index, (keyword, _) in enumerate(steps) if keyword == "FROM") :]
    user = [argument for keyword, argument in runtime if keyword == "USER"]
    pod = one(render(), "Deployment")["spec"]["template"]["spec"]

    assert user == ["65532:65532"]
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["runAsGroup"] == 65532
    assert ("ENTRYPOINT", '["securemodels"]') in runtime
    assert ("CMD", '["run"]') in runtime
    assert pod["containers"][0]["args"][0] == "run"
    assert "PYTHONDONTWRITEBYTECODE=1" in " ".join(
        argument for keyword, argument in runtime if keyword == "ENV"
    )


def test_every_runtime_dependency_is_pinned_by_the_lock_the_image_installs_with() -> None:
    """The image uses requirements/dev.lock as constraints: a runtime dependency missing there would float."""
    pins: dict[str, str] = {
        canonicalize_name(name): version
        for name, _, version in (
            line.partition("==") for line in (ROOT / "requirements" / "dev.lock").read_text().splitlines()
        )
        if version
    }
    seen: set[str] = set()
    pending = [canonicalize_name("secure-model-operator")]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        for text in distribution(name).requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(canonicalize_name(requirement.name))

    runtime = seen - {canonicalize_name("secure-model-operator")}
    assert {"kopf", "lightkube", "pydantic", "cryptography"} <= runtime
    assert sorted(runtime - pins.keys()) == []
    for package in runtime:
        assert distribution(package).version == pins[package], f"{package}: installed and lock differ"


def test_the_build_context_holds_everything_the_dockerfile_copies() -> None:
    allowed = [
        line.removeprefix("!").rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    sources = [
        source.rstrip("/")
        for keyword, argument in instructions()
        if keyword == "COPY" and not argument.startswith("--from")
        for source in argument.split()[:-1]
    ]

    assert sources
    assert sorted(set(sources) - set(allowed)) == []
    assert all((ROOT / source).exists() for source in sources)
