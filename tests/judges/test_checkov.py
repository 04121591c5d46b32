"""Checkov on what the operator renders for every example: nothing fails, nothing is skipped unseen.

Each example is rendered and scanned in a directory of its own: checkov's graph checks (such as "every
pod is selected by a NetworkPolicy") join resources across all files of one run, so another example's
objects must not make up for a missing one. The scans run concurrently, once per module.

Checkov runs with the committed .checkov.yaml minus its skip list. The checks that then fail must be
exactly the committed skips: nothing else fails, and no skip outlives its need. A check skipped any other
way, such as a `checkov.io/skip` annotation in the rendered output, fails the judge too.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.paths import EXAMPLES, ROOT

CONFIG = ROOT / ".checkov.yaml"
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.yaml"))
# "# CKV_K8S_35: <reason>" on a line of its own.
SKIP_REASON = re.compile(r"^\s*#\s*(CKV2?_[A-Z0-9_]+):\s*\S", re.MULTILINE)


@dataclass(frozen=True)
class Finding:
    check_id: str
    check_name: str
    resource: str

    def __str__(self) -> str:
        return f"{self.check_id} ({self.check_name}) on {self.resource}"


@dataclass(frozen=True)
class Scan:
    failed: tuple[Finding, ...]
    skipped: tuple[Finding, ...]
    checked_resources: frozenset[str]
    parsing_errors: int


def committed_skips() -> list[str]:
    skips: list[str] = yaml.safe_load(CONFIG.read_text()).get("skip-check") or []
    return skips


def _findings(results: dict[str, Any], key: str) -> tuple[Finding, ...]:
    return tuple(
        Finding(item["check_id"], item["check_name"], item["resource"]) for item in results.get(key, [])
    )


def _scan(report: dict[str, Any]) -> Scan:
    # A run that found no resources reports nothing but the summary's fields.
    results: dict[str, Any] = report.get("results", {})
    return Scan(
        failed=_findings(results, "failed_checks"),
        skipped=_findings(results, "skipped_checks"),
        checked_resources=frozenset(item["resource"] for item in results.get("passed_checks", [])),
        parsing_errors=int(report.get("summary", report)["parsing_errors"]),
    )


def _environment(home: Path) -> dict[str, str]:
    """Checkov's environment: the committed settings alone decide the checks, and nothing goes online."""
    # These variables choose checks, change the output or turn on the online platform.
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CKV_", "CHECKOV_", "BC_", "PRISMA_"))
    }
    # A ~/.checkov.yaml would be merged into the committed settings.
    environment["HOME"] = str(home)
    # Guideline links come from the platform; the checks themselves do not need them.
    environment["BC_SKIP_MAPPING"] = "TRUE"
    # Otherwise checkov asks PyPI for a newer release of itself.
    environment["CKV_SKIP_PACKAGE_UPDATE_CHECK"] = "TRUE"
    return environment


@pytest.fixture(scope="module")
def scans(
    checkov: Path, render: Callable[[str], str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Scan]:
    workdir = tmp_path_factory.mktemp("checkov")
    settings = yaml.safe_load(CONFIG.read_text())
    settings.pop("skip-check", None)
    settings_file = workdir / "settings.yaml"
    settings_file.write_text(yaml.safe_dump(settings))
    running: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    for example in EXAMPLE_FILES:
        target = workdir / example.stem
        target.mkdir()
        (target / "rendered.yaml").write_text(render(example.read_text()))
        report = workdir / f"{example.stem}.json"
        with report.open("wb") as stdout, (workdir / f"{example.stem}.log").open("wb") as stderr:
            running[example.stem] = (
                subprocess.Popen(
                    [checkov, "--directory", target, "--config-file", settings_file, "--output", "json"],
                    cwd=workdir,
                    env=_environment(workdir),
                    stdout=stdout,
                    stderr=stderr,
                ),
                report,
            )
    scans: dict[str, Scan] = {}
    for name, (process, report) in running.items():
        # Exit status 1 only says that checks failed; the report says which.
        assert process.wait() in (0, 1), (workdir / f"{name}.log").read_text()
        scans[name] = _scan(json.loads(report.read_text()))
    return scans


@pytest.mark.parametrize("example", [path.stem for path in EXAMPLE_FILES])
def test_nothing_fails_but_committed_skips(scans: dict[str, Scan], example: str) -> None:
    scan = scans[example]
    assert scan.parsing_errors == 0
    # Checkov understood the output: the Deployment carries nearly all Kubernetes checks.
    assert any(resource.startswith("Deployment.") for resource in scan.checked_resources)
    skips = set(committed_skips())
    failed = [str(finding) for finding in scan.failed if finding.check_id not in skips]
    assert not failed, f"checkov fails on the rendered {example} example:\n" + "\n".join(failed)


@pytest.mark.parametrize("example", [path.stem for path in EXAMPLE_FILES])
def test_rendered_output_skips_no_check(scans: dict[str, Scan], example: str) -> None:
    skipped = [str(finding) for finding in scans[example].skipped]
    assert not skipped, "skips outside .checkov.yaml:\n" + "\n".join(skipped)


def test_every_committed_skip_is_still_needed(scans: dict[str, Scan]) -> None:
    failing = {finding.check_id for scan in scans.values() for finding in scan.failed}
    unneeded = sorted(set(committed_skips()) - failing)
    assert not unneeded, f"no example fails these checks any more; remove their skips: {unneeded}"


def test_every_committed_skip_has_a_reason() -> None:
    skips = committed_skips()
    assert len(skips) == len(set(skips))
    assert set(SKIP_REASON.findall(CONFIG.read_text())) == set(skips)
