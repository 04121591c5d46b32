"""Control `pod-security`: Pod Security Standard "restricted", plus a read-only root filesystem and no
host namespaces, privileged containers, hostPath volumes or host ports.

A container that breaks out of its sandbox reaches the node and every other workload on it; these
settings remove the usual ways out (privilege escalation, capabilities, host namespaces and paths).
"""

from __future__ import annotations

import re
from typing import Any

from securemodels.desired.model import ControlResult, Manifest

NAME = "pod-security"
CONDITION = "PodHardened"
RUN_AS_USER = 65532  # the conventional "nonroot" UID of distroless images


def pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _container_problems(container: Manifest, pod_context: Manifest) -> list[str]:
    name = container.get("name", "?")
    context = container.get("securityContext") or {}
    problems = []
    if context.get("privileged"):
        problems.append(f"container {name} is privileged")
    if context.get("allowPrivilegeEscalation") is not False:
        problems.append(f"container {name} allows privilege escalation")
    if context.get("readOnlyRootFilesystem") is not True:
        problems.append(f"container {name} has a writable root filesystem")
    capabilities = context.get("capabilities") or {}
    if "ALL" not in (capabilities.get("drop") or []):
        problems.append(f"container {name} does not drop ALL capabilities")
    added = [cap for cap in capabilities.get("add") or [] if cap != "NET_BIND_SERVICE"]
    if added:
        problems.append(f"container {name} adds capabilities {added}")
    non_root = context.get("runAsNonRoot", pod_context.get("runAsNonRoot"))
    if non_root is not True or context.get("runAsUser", pod_context.get("runAsUser")) == 0:
        problems.append(f"container {name} may run as root")
    seccomp = (context.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get("type")
    if seccomp not in ("RuntimeDefault", "Localhost"):
        problems.append(f"container {name} has no seccomp profile")
    if any(port.get("hostPort") for port in container.get("ports") or []):
        problems.append(f"container {name} uses a host port")
    return problems


def pod_problems(pod_spec: Manifest) -> list[str]:
    """Every way the pod spec falls short of the hardened baseline; empty when it complies."""
    problems = [
        f"pod uses the host's {namespace} namespace"
        for namespace, key in (("network", "hostNetwork"), ("PID", "hostPID"), ("IPC", "hostIPC"))
        if pod_spec.get(key)
    ]
    if pod_spec.get("automountServiceAccountToken") is not False:
        problems.append("pod mounts a service account token")
    problems += [
        f"volume {volume.get('name')} is a hostPath"
        for volume in pod_spec.get("volumes") or []
        if "hostPath" in volume
    ]
    pod_context = pod_spec.get("securityContext") or {}
    for container in [*(pod_spec.get("initContainers") or []), *(pod_spec.get("containers") or [])]:
        problems += _container_problems(container, pod_context)
    return problems


def stray_pods(deployment_name: str, pods: tuple[Manifest, ...]) -> list[str]:
    """Pods that carry the model's labels, and so receive its traffic, but were not made from its
    Deployment, whose ReplicaSets are named <deployment>-<pod-template-hash>."""
    replica_set = re.compile(re.escape(deployment_name) + r"-[a-z0-9]+")
    return sorted(
        pod["metadata"]["name"]
        for pod in pods
        if not any(
            ref.get("kind") == "ReplicaSet"
            and ref.get("controller")
            and replica_set.fullmatch(ref.get("name", ""))
            for ref in pod["metadata"].get("ownerReferences") or []
        )
    )


def check(deployment: Manifest | None, pods: tuple[Manifest, ...] = ()) -> ControlResult:
    if deployment is None:
        return ControlResult(NAME, "Fail", "DeploymentMissing", "the model's Deployment does not exist")
    problems = pod_problems(deployment["spec"]["template"]["spec"])
    if strays := stray_pods(deployment["metadata"]["name"], pods):
        problems.append(f"pods not made from the model's Deployment carry its labels: {', '.join(strays)}")
    if problems:
        return ControlResult(NAME, "Fail", "PodNotHardened", "; ".join(problems))
    return ControlResult(
        NAME, "Pass", "Restricted", "Pod Security restricted, read-only root filesystem, no host access"
    )
