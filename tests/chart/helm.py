"""The real helm binary ($HELM, else `helm` on PATH) on the chart: rendering, and releases on a cluster."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from localcluster import LocalCluster
from support.manifests import merge
from support.paths import CHART, OPERATOR_NAMESPACE

HELM = os.environ.get("HELM") or shutil.which("helm") or "helm"
RELEASE = "smo"
# An image reference the schema accepts; nothing pulls it (kwok only pretends to run pods).
IMAGE_VALUES: dict[str, Any] = {
    "image": {
        "repository": "registry.example.com/platform/secure-model-operator",
        "digest": "sha256:" + "5e" * 32,
    }
}


def helm(
    *args: str, values: dict[str, Any] | None = None, kubeconfig: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run helm; values go in through stdin (`--values -`). The failure is returned, not raised."""
    command = [HELM, *args]
    if kubeconfig is not None:
        command.append(f"--kubeconfig={kubeconfig}")
    if values is not None:
        command += ["--values", "-"]
    return subprocess.run(
        command,
        input=yaml.safe_dump(values) if values is not None else None,
        capture_output=True,
        text=True,
        check=False,
    )


def with_image(values: dict[str, Any] | None = None) -> dict[str, Any]:
    return merge(IMAGE_VALUES, values or {})


def render(
    values: dict[str, Any] | None = None, namespace: str = OPERATOR_NAMESPACE, *extra: str
) -> list[dict[str, Any]]:
    """`helm template` with a valid image plus `values`: the chart's objects."""
    result = helm(
        "template", RELEASE, str(CHART), "--namespace", namespace, *extra, values=with_image(values)
    )
    assert result.returncode == 0, result.stderr
    return [document for document in yaml.safe_load_all(result.stdout) if document]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [item for item in objects if item["kind"] == kind and name in (None, item["metadata"]["name"])]
    assert len(found) == 1, f"{len(found)} {kind} named {name}"
    return found[0]


def install(
    cluster: LocalCluster, release: str, namespace: str, values: dict[str, Any], command: str = "install"
) -> None:
    """`helm install` (or `upgrade`) and wait until the operator Deployment is available."""
    result = helm(
        command,
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--wait=watcher",
        "--timeout=90s",
        values=with_image(values),
        kubeconfig=cluster.kubeconfig,
    )
    assert result.returncode == 0, result.stderr


def uninstall(cluster: LocalCluster, release: str, namespace: str) -> None:
    result = helm(
        "uninstall",
        release,
        "--namespace",
        namespace,
        "--wait",
        "--timeout=90s",
        kubeconfig=cluster.kubeconfig,
    )
    assert result.returncode == 0, result.stderr


def token_kubeconfig(cluster: LocalCluster, token: str, namespace: str, path: Path) -> Path:
    """A kubeconfig holding only a bearer token: the API server knows nothing else about this client."""
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "local",
                        "cluster": {
                            "server": cluster.server,
                            "certificate-authority": str(cluster.ca_file),
                        },
                    }
                ],
                "users": [{"name": "operator", "user": {"token": token}}],
                "contexts": [
                    {
                        "name": "operator",
                        "context": {"cluster": "local", "user": "operator", "namespace": namespace},
                    }
                ],
                "current-context": "operator",
            }
        )
    )
    path.chmod(0o600)
    return path
