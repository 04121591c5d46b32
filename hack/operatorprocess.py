"""`securemodels run` as its own process, as in a pod: for the demo, the crash test and the benchmark."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml


def start_operator(
    workdir: Path,
    settings: dict[str, Any],
    port: int,
    kubeconfig: Path | None = None,
    *,
    name: str = "operator",
) -> subprocess.Popen[bytes]:
    """Writes `settings` as the operator's config file and starts it; output goes to `<name>.log`."""
    config = workdir / f"{name}.yaml"
    config.write_text(yaml.safe_dump(settings))
    command = [sys.executable, "-m", "securemodels", "run", "--config", str(config), f"--http-port={port}"]
    if kubeconfig is not None:
        command += ["--kubeconfig", str(kubeconfig)]
    with (workdir / f"{name}.log").open("wb") as log:  # the child keeps its own descriptor
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
