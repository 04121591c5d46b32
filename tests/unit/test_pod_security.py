"""Control pod-security: Pod Security "restricted", a read-only root filesystem, no host access."""

from __future__ import annotations

from typing import Any

import pytest

from securemodels.desired.controls import mtls, pod_security
from securemodels.desired.model import Manifest
from unit.builders import Mutation, context, observe, pod_spec, tampered


def test_pod_security_context() -> None:
    assert pod_security.pod_security_context() == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "fsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def test_container_security_context() -> None:
    assert pod_security.container_security_context() == {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def built() -> Manifest:
    deployment = observe(context()).deployment
    assert deployment is not None
    return deployment


def test_every_container_of_the_built_pod_is_hardened() -> None:
    pod = pod_spec(built())

    assert [item["name"] for item in pod["containers"]] == ["model", mtls.SIDECAR]
    assert all(
        item["securityContext"] == pod_security.container_security_context() for item in pod["containers"]
    )
    assert pod["securityContext"] == pod_security.pod_security_context()
    assert pod["automountServiceAccountToken"] is False


def test_check_passes_the_built_deployment() -> None:
    result = pod_security.check(built())

    assert (result.name, result.status, result.reason) == ("pod-security", "Pass", "Restricted")
    assert pod_security.pod_problems(pod_spec(built())) == []


def on_container(name: str, **security: Any) -> Mutation:
    def mutate(deployment: Manifest) -> None:
        target = next(item for item in pod_spec(deployment)["containers"] if item["name"] == name)
        target["securityContext"].update(security)

    return mutate


def without(key: str) -> Mutation:
    return lambda deployment: pod_spec(deployment)["containers"][0]["securityContext"].pop(key)


def on_pod(**fields: Any) -> Mutation:
    return lambda deployment: pod_spec(deployment).update(fields)


def on_pod_context(**fields: Any) -> Mutation:
    return lambda deployment: pod_spec(deployment)["securityContext"].update(fields)


def host_port(deployment: Manifest) -> None:
    sidecar = next(item for item in pod_spec(deployment)["containers"] if item["name"] == mtls.SIDECAR)
    sidecar["ports"][0]["hostPort"] = 8443


def privileged_init(deployment: Manifest) -> None:
    pod_spec(deployment)["initContainers"] = [
        {"name": "setup", "image": "x", "securityContext": {"privileged": True}}
    ]


TAMPERED: list[tuple[str, Mutation, str]] = [
    ("privileged", on_container("model", privileged=True), "container model is privileged"),
    (
        "privilege escalation",
        on_container(mtls.SIDECAR, allowPrivilegeEscalation=True),
        f"container {mtls.SIDECAR} allows privilege escalation",
    ),
    (
        "escalation not forbidden",
        without("allowPrivilegeEscalation"),
        "container model allows privilege escalation",
    ),
    (
        "writable root filesystem",
        on_container("model", readOnlyRootFilesystem=False),
        "container model has a writable root filesystem",
    ),
    (
        "capabilities kept",
        on_container("model", capabilities={"drop": ["NET_RAW"]}),
        "does not drop ALL capabilities",
    ),
    (
        "capability added",
        on_container("model", capabilities={"drop": ["ALL"], "add": ["SYS_ADMIN"]}),
        "adds capabilities ['SYS_ADMIN']",
    ),
    ("root user in the container", on_container("model", runAsUser=0), "container model may run as root"),
    ("root user for the pod", on_pod_context(runAsUser=0), "may run as root"),
    ("root allowed", on_container("model", runAsNonRoot=False), "container model may run as root"),
    (
        "seccomp unconfined",
        on_container("model", seccompProfile={"type": "Unconfined"}),
        "container model has no seccomp profile",
    ),
    ("host network", on_pod(hostNetwork=True), "pod uses the host's network namespace"),
    ("host PID", on_pod(hostPID=True), "pod uses the host's PID namespace"),
    ("host IPC", on_pod(hostIPC=True), "pod uses the host's IPC namespace"),
    (
        "service account token",
        on_pod(automountServiceAccountToken=True),
        "pod mounts a service account token",
    ),
    (
        "host path",
        lambda item: pod_spec(item)["volumes"].append({"name": "node", "hostPath": {"path": "/"}}),
        "volume node is a hostPath",
    ),
    ("host port", host_port, f"container {mtls.SIDECAR} uses a host port"),
    ("privileged init container", privileged_init, "container setup is privileged"),
]


@pytest.mark.parametrize(("mutation", "problem"), [c[1:] for c in TAMPERED], ids=[c[0] for c in TAMPERED])
def test_check_fails_a_weakened_pod(mutation: Mutation, problem: str) -> None:
    result = pod_security.check(tampered(built(), mutation))

    assert (result.status, result.reason) == ("Fail", "PodNotHardened")
    assert problem in result.message


def test_net_bind_service_may_be_added() -> None:
    result = pod_security.check(
        tampered(built(), on_container("model", capabilities={"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}))
    )

    assert result.status == "Pass"


def test_container_inherits_the_pod_settings() -> None:
    def rely_on_pod(deployment: Manifest) -> None:
        for item in pod_spec(deployment)["containers"]:
            item["securityContext"].pop("runAsNonRoot")
            item["securityContext"].pop("seccompProfile")

    assert pod_security.check(tampered(built(), rely_on_pod)).status == "Pass"


def test_check_fails_without_a_deployment() -> None:
    assert pod_security.check(None).reason == "DeploymentMissing"


def pod(name: str, *owners: dict[str, Any]) -> Manifest:
    return {"metadata": {"name": name, "ownerReferences": list(owners)}}


REPLICA_SET = {"kind": "ReplicaSet", "name": "fraud-7c9d8f6b5", "controller": True}


@pytest.mark.parametrize(
    ("pods", "strays"),
    [
        ((pod("fraud-7c9d8f6b5-abcde", REPLICA_SET),), []),
        ((pod("impostor"),), ["impostor"]),
        ((pod("lookalike", {**REPLICA_SET, "name": "other-7c9d8f6b5"}),), ["lookalike"]),
        ((pod("adopted", {**REPLICA_SET, "controller": False}),), ["adopted"]),
        ((pod("canary", {**REPLICA_SET, "name": "fraud-canary-7c9d8f6b5"}),), ["canary"]),
    ],
    ids=[
        "made by the Deployment",
        "made by hand",
        "another Deployment's",
        "not the controller",
        "a longer name",
    ],
)
def test_pods_with_the_model_labels_must_come_from_its_deployment(
    pods: tuple[Manifest, ...], strays: list[str]
) -> None:
    result = pod_security.check(built(), pods)

    assert pod_security.stray_pods("fraud", pods) == strays
    assert result.status == ("Fail" if strays else "Pass")
    assert all(name in result.message for name in strays)
