"""The judges the Makefile installs outside the repository, found by the scripts that install them (each
prints its directory, and builds or fetches only what its cache lacks)."""

from __future__ import annotations

import subprocess
from functools import cache
from pathlib import Path

from support.paths import ROOT


@cache
def _installed(script: str) -> Path:
    result = subprocess.run([str(ROOT / "hack" / script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"hack/{script} failed: {result.stderr}"
    return Path(result.stdout.strip())


def promtool() -> Path:
    return _installed("build-promtool.sh") / "promtool"


def tsc() -> Path:
    """The TypeScript compiler, beside Grafana's published dashboard schema (@grafana/schema)."""
    return _installed("fetch-dashboard-schema.sh") / "node_modules" / ".bin" / "tsc"


def report_crds() -> Path:
    """The CRDs of wgpolicyk8s.io/v1alpha2 PolicyReport and openreports.io/v1alpha1 Report."""
    return _installed("fetch-report-crds.sh")
