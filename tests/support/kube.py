"""Talking to the test control plane the way users do: with kubectl."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from typing import Any, TypeVar

import yaml

from localcluster import LocalCluster

T = TypeVar("T")
CHILD_KINDS = (
    "deployment",
    "service",
    "serviceaccount",
    "networkpolicy",
    "secret",
    "configmap",
    "role",
    "rolebinding",
)
# What an SMD with viewers and deployers, and no storage, owns in its namespace.
CHILDREN_WITH_ACCESS = sorted(
    [
        "ConfigMap",
        "Deployment",
        "NetworkPolicy",
        "Role",
        "Role",
        "RoleBinding",
        "RoleBinding",
        "Secret",
        "Service",
        "ServiceAccount",
    ]
)


class Kubectl:
    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster

    def __call__(self, *args: str, stdin: str | None = None) -> str:
        return self.cluster.kubectl(*args, stdin=stdin)

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Like calling it, but returns the failure instead of raising (for refusals)."""
        return subprocess.run(
            [self.cluster.kubectl_path, f"--kubeconfig={self.cluster.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
        )

    def apply(self, manifest: str | dict[str, Any] | list[dict[str, Any]]) -> str:
        if isinstance(manifest, dict):
            manifest = yaml.safe_dump(manifest)
        elif isinstance(manifest, list):
            manifest = yaml.safe_dump_all(manifest)
        return self("apply", "-f", "-", stdin=manifest)

    def get(self, kind: str, name: str | None = None, namespace: str | None = None, *args: str) -> Any:
        """The object (or list) as JSON, or None when it does not exist."""
        command = ["get", kind, *([name] if name else []), "-o", "json", *args]
        if namespace:
            command += ["-n", namespace]
        result = self.run(*command)
        if result.returncode != 0:
            if "NotFound" in result.stderr:
                return None
            raise subprocess.CalledProcessError(result.returncode, command, result.stdout, result.stderr)
        return json.loads(result.stdout)

    def items(self, kind: str, namespace: str | None = None, selector: str | None = None) -> list[Any]:
        args = ["-l", selector] if selector else []
        found = (
            self.get(kind, None, namespace, *args) if namespace else self.get(kind, None, None, "-A", *args)
        )
        return list(found["items"])

    def status(self, name: str, namespace: str) -> dict[str, Any]:
        """An SMD's status, empty while it has none (or the SMD does not exist)."""
        return dict((self.get("smd", name, namespace) or {}).get("status") or {})

    def ready(self, name: str, namespace: str) -> dict[str, Any] | None:
        """The SMD when its Ready condition is True, else None: a probe for wait_for."""
        found = self.get("smd", name, namespace)
        condition = self.condition(found, "Ready")
        return dict(found) if condition and condition["status"] == "True" else None

    def children(self, name: str, namespace: str) -> list[dict[str, Any]]:
        """Every object the operator made for the SMD in its namespace."""
        selector = f"app.kubernetes.io/instance={name},app.kubernetes.io/managed-by=secure-model-operator"
        return [item for kind in CHILD_KINDS for item in self.items(kind, namespace, selector)]

    def condition(self, smd: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
        for item in ((smd or {}).get("status") or {}).get("conditions") or []:
            if item["type"] == kind:
                return dict(item)
        return None

    def control(self, smd: dict[str, Any] | None, name: str) -> dict[str, Any] | None:
        for item in ((smd or {}).get("status") or {}).get("controls") or []:
            if item["name"] == name:
                return dict(item)
        return None


def wait_for(
    probe: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.2, what: str = ""
) -> T:
    """Poll until `probe` returns something truthy; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or probe}; last value: {last!r}")
