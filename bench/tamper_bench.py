"""How fast tampering is seen and undone, and what judging costs at rest.

On a settled fleet, each kind of tampering is done to a different SMD; the clock runs from the tampering
request until the SMD's status reports the control Fail (detection) and until the object is as the
operator wrote it again (repair; only for what the operator owns). Then the cost of judging: requests
the operator sends per SMD and resync while nothing changes, and after one cluster-wide RBAC change,
which makes it ask the authorizer again for every model's account.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from localcluster import LocalCluster

POLL = 0.02  # seconds between looks
TIMEOUT = 60.0
REQUEST_METRICS = (
    "securemodels_api_requests_total",
    "securemodels_api_dry_runs_total",
    "securemodels_api_access_reviews_total",
    "securemodels_api_writes_total",
)


Act = Callable[[LocalCluster, str, str], object]  # (cluster, namespace, smd)
Check = Callable[[LocalCluster, str, str], bool]


@dataclass(frozen=True)
class Tampering:
    what: str
    control: str
    act: Act
    repaired: Check | None  # None: the operator does not own what was changed


def _get(cluster: LocalCluster, *args: str) -> Any:
    result = subprocess.run(
        [cluster.kubectl_path, f"--kubeconfig={cluster.kubeconfig}", "get", *args, "-o", "json"],
        capture_output=True,
        text=True,
        check=False,
    )
    return json.loads(result.stdout) if result.returncode == 0 else None


def _patch(cluster: LocalCluster, kind: str, name: str, namespace: str, *patch: dict[str, Any]) -> None:
    cluster.kubectl("patch", kind, name, "-n", namespace, "--type=json", "-p", json.dumps(list(patch)))


def _control_failed(cluster: LocalCluster, namespace: str, name: str, control: str) -> bool:
    found = _get(cluster, "smd", name, "-n", namespace) or {}
    return any(
        item["name"] == control and item["status"] == "Fail"
        for item in (found.get("status") or {}).get("controls") or []
    )


def _pod_spec(cluster: LocalCluster, namespace: str, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = (_get(cluster, "deployment", name, "-n", namespace) or {})["spec"]["template"][
        "spec"
    ]
    return spec


def _delete_policy(cluster: LocalCluster, namespace: str, name: str) -> None:
    cluster.kubectl("delete", "networkpolicy", f"{name}-network", "-n", namespace)


def _policy_back(cluster: LocalCluster, namespace: str, name: str) -> bool:
    return _get(cluster, "networkpolicy", f"{name}-network", "-n", namespace) is not None


def _select_nothing(cluster: LocalCluster, namespace: str, name: str) -> None:
    selector = {"matchLabels": {"none": "x"}}
    _patch(
        cluster,
        "networkpolicy",
        f"{name}-network",
        namespace,
        {"op": "replace", "path": "/spec/podSelector", "value": selector},
    )


def _selector_back(cluster: LocalCluster, namespace: str, name: str) -> bool:
    policy = _get(cluster, "networkpolicy", f"{name}-network", "-n", namespace) or {}
    return "none" not in ((policy.get("spec") or {}).get("podSelector", {}).get("matchLabels") or {})


def _drop_sidecar_and_pause(cluster: LocalCluster, namespace: str, name: str) -> None:
    _patch(
        cluster,
        "deployment",
        name,
        namespace,
        {"op": "remove", "path": "/spec/template/spec/containers/1"},
        {"op": "add", "path": "/spec/paused", "value": True},
    )


def _sidecar_back(cluster: LocalCluster, namespace: str, name: str) -> bool:
    return len(_pod_spec(cluster, namespace, name)["containers"]) == 2


def _add_host_aliases(cluster: LocalCluster, namespace: str, name: str) -> None:
    aliases = [{"ip": "10.0.0.1", "hostnames": ["x"]}]
    _patch(
        cluster,
        "deployment",
        name,
        namespace,
        {"op": "add", "path": "/spec/template/spec/hostAliases", "value": aliases},
    )


def _host_aliases_gone(cluster: LocalCluster, namespace: str, name: str) -> bool:
    return "hostAliases" not in _pod_spec(cluster, namespace, name)


def _add_external_ip(cluster: LocalCluster, namespace: str, name: str) -> None:
    _patch(
        cluster, "service", name, namespace, {"op": "add", "path": "/spec/externalIPs", "value": ["10.9.9.9"]}
    )


def _external_ip_gone(cluster: LocalCluster, namespace: str, name: str) -> bool:
    return "externalIPs" not in (_get(cluster, "service", name, "-n", namespace) or {})["spec"]


def _replace_bundle(cluster: LocalCluster, namespace: str, name: str) -> None:
    _patch(
        cluster,
        "secret",
        f"{name}-tls",
        namespace,
        {"op": "replace", "path": "/data/ca.crt", "value": "eA=="},
    )


def _bundle_back(cluster: LocalCluster, namespace: str, name: str) -> bool:
    return bool((_get(cluster, "secret", f"{name}-tls", "-n", namespace) or {})["data"]["ca.crt"] != "eA==")


def _bind_cluster_admin(cluster: LocalCluster, namespace: str, name: str) -> None:
    user = f"--user=system:serviceaccount:{namespace}:{name}"
    cluster.kubectl(
        "create", "clusterrolebinding", f"bench-{namespace}-{name}", "--clusterrole=cluster-admin", user
    )


def _stray_pod(cluster: LocalCluster, namespace: str, name: str) -> None:
    hardened = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{name}-stray",
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": "secure-model", "app.kubernetes.io/instance": name},
        },
        "spec": {
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 65532,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "stray",
                    "image": "registry.example.com/stray@sha256:" + "1" * 64,
                    "securityContext": hardened,
                }
            ],
        },
    }
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps(pod))


TAMPERINGS = (
    Tampering("NetworkPolicy deleted", "network-isolation", _delete_policy, _policy_back),
    Tampering("NetworkPolicy made to select no pod", "network-isolation", _select_nothing, _selector_back),
    Tampering("Deployment: sidecar removed, then paused", "mtls", _drop_sidecar_and_pause, _sidecar_back),
    Tampering("Deployment: hostAliases added", "pod-security", _add_host_aliases, _host_aliases_gone),
    Tampering("Service: externalIPs added", "network-isolation", _add_external_ip, _external_ip_gone),
    Tampering("TLS Secret: CA bundle replaced", "mtls", _replace_bundle, _bundle_back),
    Tampering("cluster-admin bound to the model's account as a User", "rbac", _bind_cluster_admin, None),
    Tampering("a stray pod with the model's labels", "pod-security", _stray_pod, None),
)


def tampering_times(
    cluster: LocalCluster, namespace: str, names: list[str]
) -> list[tuple[str, float, float | None]]:
    """(what, seconds to detection, seconds to repair or None), one SMD per kind of tampering. Both are
    looked for in one loop, each look a kubectl call, so read them to about a tenth of a second."""
    found = []
    for tampering, name in zip(TAMPERINGS, names, strict=False):
        started = time.monotonic()
        tampering.act(cluster, namespace, name)
        detected: float | None = None
        repaired: float | None = None
        while time.monotonic() - started < TIMEOUT and (
            detected is None or (tampering.repaired is not None and repaired is None)
        ):
            now = time.monotonic() - started
            if detected is None and _control_failed(cluster, namespace, name, tampering.control):
                detected = now
            if (
                tampering.repaired is not None
                and repaired is None
                and tampering.repaired(cluster, namespace, name)
            ):
                repaired = now
            time.sleep(POLL)
        if detected is None:
            raise TimeoutError(f"{tampering.what}: not reported within {TIMEOUT}s")
        found.append((tampering.what, detected, repaired))
    return found


def requests_sent(port: int) -> float:
    """Everything the operator has sent the API server, besides the open watches."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name in REQUEST_METRICS and sample.labels.get("verb") != "watch"
    )


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / 100.0
