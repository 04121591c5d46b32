"""What every judge needs: where the judges' own tools live, and the operator's rendered output.

Judges look only at what `securemodels render` prints, the same text a user sees, so a judge can never
pass on objects the operator would not really create.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from support.paths import ROOT

# checkov and network-config-analyzer pin conflicting libraries, so they live in a venv of their own.
JUDGES_BIN = Path(os.environ.get("JUDGES_BIN") or ROOT / ".venv-judges" / "bin")
# The CLI installed beside the interpreter running the tests, so judges see this checkout's code.
SECUREMODELS = Path(sys.executable).parent / "securemodels"


def _judge(name: str) -> Path:
    tool = JUDGES_BIN / name
    if not tool.is_file():
        pytest.fail(f"{tool} is missing: run `make .venv-judges/.installed` or set JUDGES_BIN")
    return tool


# The operator's configuration as the chart writes it, for what depends on it (the weights' verifier is
# the operator's own image there).
OPERATOR_CONFIG = Path(__file__).parent / "fixtures" / "operator-config.yaml"


def render_smd(source: str) -> str:
    """Manifests rendered from SMD manifest text (every SMD document in it)."""
    result = subprocess.run(
        [str(SECUREMODELS), "render", "--filename", "-", "--config", str(OPERATOR_CONFIG)],
        input=source,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"securemodels render failed:\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="session")
def render() -> Callable[[str], str]:
    return render_smd


@pytest.fixture(scope="session")
def checkov() -> Path:
    return _judge("checkov")


@pytest.fixture(scope="session")
def nca() -> Path:
    return _judge("nca")
