"""Control `pod-security`: Pod Security Standard "restricted", plus a read-only root filesystem and no
host namespaces, privileged containers, hostPath volumes, host ports or probes of other hosts; and what
runs is what the operator's template says.

A container that breaks out of its sandbox reaches the node and every other workload on it; these
settings remove the usual ways out (privilege escalation, capabilities, host namespaces and paths).
Judged on the Deployment and on every running pod of the model: each must come from a ReplicaSet of
the model's Deployment and carry, exactly, a pod spec the operator stamped (desired/canonical.py), with
no ephemeral containers attached.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from securemodels.desired.controls.base import verdict
from securemodels.desired.model import Blocker, Context, ControlResult, Manifest, Observed

NAME = "pod-security"
CONDITION = "PodHardened"
RUN_AS_USER = 65532  # the conventional "nonroot" UID of distroless images


class Reason(StrEnum):
    RESTRICTED = "Restricted"
    NOT_HARDENED = "PodNotHardened"
    DEPLOYMENT_MISSING = "DeploymentMissing"


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
    if context.get("procMount") not in (None, "Default"):
        problems.append(f"container {name} unmasks /proc")
    problems += _confinement_problems(f"container {name}", context)
    problems += [f"container {name}: {what} calls another host" for what in _handlers_with_a_host(container)]
    return problems


_PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
_LIFECYCLE_HOOKS = ("postStart", "preStop")


def _handlers_with_a_host(container: Manifest) -> list[str]:
    """Probes and lifecycle hooks that name a host (Pod Security "baseline" since Kubernetes 1.34): the
    kubelet would call it from the node, past every NetworkPolicy."""
    lifecycle = container.get("lifecycle") or {}
    handlers = [(probe, container.get(probe) or {}) for probe in _PROBES]
    handlers += [(f"lifecycle.{hook}", lifecycle.get(hook) or {}) for hook in _LIFECYCLE_HOOKS]
    return [
        what
        for what, handler in handlers
        if any((handler.get(action) or {}).get("host") for action in ("httpGet", "tcpSocket"))
    ]


# SELinux types Pod Security "restricted" allows (the others, e.g. spc_t, escape confinement).
_SELINUX_TYPES = (None, "", "container_t", "container_init_t", "container_kvm_t", "container_engine_t")


def _confinement_problems(what: str, context: Manifest) -> list[str]:
    problems = []
    if (context.get("appArmorProfile") or {}).get("type") == "Unconfined":
        problems.append(f"{what} runs without AppArmor")
    if (context.get("seLinuxOptions") or {}).get("type") not in _SELINUX_TYPES:
        problems.append(f"{what} sets an SELinux type outside the container types")
    return problems


def pod_problems(pod_spec: Manifest) -> list[str]:
    """Every way the pod spec falls short of the hardened baseline; empty when it complies."""
    problems = [
        f"pod uses the host's {namespace} namespace"
        for namespace, key in (("network", "hostNetwork"), ("PID", "hostPID"), ("IPC", "hostIPC"))
        if pod_spec.get(key)
    ]
    if pod_spec.get("shareProcessNamespace"):
        problems.append("pod shares one process namespace between its containers")
    if pod_spec.get("automountServiceAccountToken") is not False:
        problems.append("pod mounts a service account token")
    problems += [
        f"volume {volume.get('name')} is a hostPath"
        for volume in pod_spec.get("volumes") or []
        if "hostPath" in volume
    ]
    pod_context = pod_spec.get("securityContext") or {}
    if pod_context.get("sysctls"):
        problems.append("pod sets sysctls")
    problems += _confinement_problems("pod", pod_context)
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for container in pod_spec.get(key) or []:
            problems += _container_problems(container, pod_context)
    return problems


def preflight(context: Context, observed: Observed) -> Blocker | None:
    return None


def _made_by_the_deployment(pod: Manifest, replica_sets: frozenset[str]) -> bool:
    return any(
        ref.get("kind") == "ReplicaSet" and ref.get("controller") and ref.get("uid") in replica_sets
        for ref in pod["metadata"].get("ownerReferences") or []
    )


def check(context: Context, observed: Observed) -> ControlResult:
    deployment = observed.get(context.names.deployment)
    if deployment is None:
        return ControlResult(NAME, "Fail", Reason.DEPLOYMENT_MISSING, "the model's Deployment does not exist")
    problems = list(observed.findings.get(NAME, ()))
    problems += [
        f"the Deployment's template: {item}" for item in pod_problems(deployment["spec"]["template"]["spec"])
    ]
    ours = frozenset(item["metadata"]["uid"] for item in observed.replica_sets)
    for pod in observed.pods:
        name = pod["metadata"]["name"]
        spec = pod.get("spec") or {}
        if not _made_by_the_deployment(pod, ours):
            problems.append(f"pod {name} was not made by the model's Deployment")
        if spec.get("ephemeralContainers"):
            problems.append(f"pod {name} has ephemeral (debug) containers attached")
        problems += [f"pod {name}: {item}" for item in pod_problems(spec)]
    return verdict(
        NAME,
        problems,
        Reason.NOT_HARDENED,
        Reason.RESTRICTED,
        "Pod Security restricted, read-only root filesystem, no host access; pods run the operator's "
        "template",
    )
