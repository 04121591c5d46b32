"""Control pod-security: Pod Security "restricted", a read-only root filesystem, no host access."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from securemodels.desired import judging
from securemodels.desired.controls import mtls, pod_security
from securemodels.desired.model import ControlResult, Manifest, Observed
from unit.builders import (
    POD_NAME,
    REPLICA_SET_UID,
    Mutation,
    altered,
    build,
    context,
    observe,
    pod_of,
    pod_spec,
    removed,
    replica_set_of,
    restamped,
    tampered,
    with_pod,
    with_pods,
)


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


def test_every_container_of_the_built_pod_is_hardened() -> None:
    ctx = context()
    pod = pod_spec(build(ctx).by_ref()[ctx.names.deployment])

    assert [item["name"] for item in pod["containers"]] == ["model", mtls.SIDECAR]
    assert all(
        item["securityContext"] == pod_security.container_security_context() for item in pod["containers"]
    )
    assert pod["securityContext"] == pod_security.pod_security_context()
    assert pod["automountServiceAccountToken"] is False
    assert pod_security.pod_problems(pod) == []


def test_check_passes_the_built_deployment_and_its_pod() -> None:
    ctx = context()
    result = pod_security.check(ctx, observe(ctx))

    assert (result.name, result.status, result.reason) == ("pod-security", "Pass", "Restricted")


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


def unconfined_pod(workload_object: Manifest) -> None:
    """Containers that rely on the pod's seccomp profile, which is Unconfined."""
    for item in pod_spec(workload_object)["containers"]:
        item["securityContext"].pop("seccompProfile")
    pod_spec(workload_object)["securityContext"]["seccompProfile"] = {"type": "Unconfined"}


def privileged_init(deployment: Manifest) -> None:
    pod_spec(deployment)["initContainers"] = [
        {"name": "setup", "image": "x", "securityContext": {"privileged": True}}
    ]


def probing(probe: str, action: str, host: str = "169.254.169.254") -> Mutation:
    """The model's `probe` pointed at another host (the cloud's metadata service, say)."""

    def mutate(deployment: Manifest) -> None:
        model = next(item for item in pod_spec(deployment)["containers"] if item["name"] == "model")
        port = model[probe]["httpGet"]["port"] if probe in model else 80
        model[probe] = {
            action: {"host": host, "port": port, **({"path": "/"} if action == "httpGet" else {})}
        }

    return mutate


def pre_stop_calling(host: str) -> Mutation:
    def mutate(deployment: Manifest) -> None:
        model = next(item for item in pod_spec(deployment)["containers"] if item["name"] == "model")
        model["lifecycle"] = {"preStop": {"httpGet": {"host": host, "port": 80, "path": "/"}}}

    return mutate


TAMPERED: list[tuple[str, Mutation, str]] = [
    (
        "startup probe of another host",
        probing("startupProbe", "httpGet"),
        "container model: startupProbe calls another host",
    ),
    (
        "liveness probe over TCP to another host",
        probing("livenessProbe", "tcpSocket"),
        "container model: livenessProbe calls another host",
    ),
    (
        "readiness probe of another host",
        probing("readinessProbe", "httpGet", "10.0.0.1"),
        "container model: readinessProbe calls another host",
    ),
    (
        "preStop hook calling another host",
        pre_stop_calling("kubernetes.default.svc"),
        "container model: lifecycle.preStop calls another host",
    ),
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
        "container model does not drop ALL capabilities",
    ),
    (
        "capability added",
        on_container("model", capabilities={"drop": ["ALL"], "add": ["SYS_ADMIN"]}),
        "container model adds capabilities ['SYS_ADMIN']",
    ),
    ("root user in the container", on_container("model", runAsUser=0), "container model may run as root"),
    ("root user for the pod", on_pod_context(runAsUser=0), f"container {mtls.SIDECAR} may run as root"),
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
    ("share one process namespace", on_pod(shareProcessNamespace=True), "pod shares one process namespace"),
    ("unconfined pod seccomp", unconfined_pod, f"container {mtls.SIDECAR} has no seccomp profile"),
    (
        "every capability added",
        on_container("model", capabilities={"add": ["ALL"]}),
        "container model adds capabilities ['ALL']",
    ),
    (
        "privileged sidecar",
        on_container(mtls.SIDECAR, privileged=True),
        f"container {mtls.SIDECAR} is privileged",
    ),
]


def judged(observed: Observed) -> ControlResult:
    return pod_security.check(context(), observed)


@pytest.mark.parametrize(("mutation", "problem"), [c[1:] for c in TAMPERED], ids=[c[0] for c in TAMPERED])
def test_check_fails_a_weakened_template(mutation: Mutation, problem: str) -> None:
    result = judged(altered(observe(context()), "Deployment", mutation))

    assert (result.status, result.reason) == ("Fail", "PodNotHardened")
    assert f"the Deployment's template: {problem}" in result.message


@pytest.mark.parametrize(("mutation", "problem"), [c[1:] for c in TAMPERED], ids=[c[0] for c in TAMPERED])
def test_check_fails_a_weakened_pod_even_if_it_carried_a_stamp(mutation: Mutation, problem: str) -> None:
    result = judged(with_pod(observe(context()), mutation, stamp=True))

    assert (result.status, result.reason) == ("Fail", "PodNotHardened")
    assert f"pod {POD_NAME}: {problem}" in result.message
    assert "the Deployment's template" not in result.message


def test_net_bind_service_may_be_added() -> None:
    added = on_container("model", capabilities={"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]})

    assert judged(altered(observe(context()), "Deployment", added)).status == "Pass"


def test_container_inherits_the_pod_settings() -> None:
    def rely_on_pod(deployment: Manifest) -> None:
        for item in pod_spec(deployment)["containers"]:
            item["securityContext"].pop("runAsNonRoot")
            item["securityContext"].pop("seccompProfile")

    assert judged(altered(observe(context()), "Deployment", rely_on_pod)).status == "Pass"


def test_check_fails_without_a_deployment() -> None:
    result = judged(removed(observe(context()), "Deployment"))

    assert (result.status, result.reason) == ("Fail", "DeploymentMissing")


def owned_by(*owners: dict[str, Any]) -> Mutation:
    return lambda pod: pod["metadata"].update(ownerReferences=list(owners))


OUR_REPLICA_SET = {
    "apiVersion": "apps/v1",
    "kind": "ReplicaSet",
    "name": "fraud-7c9d8f6b5",
    "uid": REPLICA_SET_UID,
}
STRAYS: list[tuple[str, Mutation, bool]] = [
    ("made by the Deployment's ReplicaSet", owned_by({**OUR_REPLICA_SET, "controller": True}), False),
    ("made by hand", owned_by(), True),
    ("another ReplicaSet's", owned_by({**OUR_REPLICA_SET, "uid": "someone-else", "controller": True}), True),
    (
        "a ReplicaSet of the same name, another uid",
        owned_by({**OUR_REPLICA_SET, "uid": "x", "controller": True}),
        True,
    ),
    ("not the controller", owned_by({**OUR_REPLICA_SET, "controller": False}), True),
    ("no controller field", owned_by(OUR_REPLICA_SET), True),
    (
        "another kind with the uid",
        owned_by({**OUR_REPLICA_SET, "kind": "StatefulSet", "controller": True}),
        True,
    ),
]


@pytest.mark.parametrize(("mutation", "stray"), [c[1:] for c in STRAYS], ids=[c[0] for c in STRAYS])
def test_every_pod_must_come_from_a_replica_set_of_the_deployment(mutation: Mutation, stray: bool) -> None:
    result = judged(with_pod(observe(context()), mutation))

    assert result.status == ("Fail" if stray else "Pass")
    assert (f"pod {POD_NAME} was not made by the model's Deployment" in result.message) is stray


def test_a_pod_of_a_replica_set_that_is_not_the_deployments_is_a_stray() -> None:
    observed = observe(context())
    deployment = observed.objects[context().names.deployment]
    other = replica_set_of(
        {**deployment, "metadata": {**deployment["metadata"], "uid": "other-deployment"}}, "rs-2"
    )
    stray = pod_of(deployment, other, name="fraud-copy")

    result = judged(with_pods(observed, restamped(stray)))

    assert result.message == "pod fraud-copy was not made by the model's Deployment"


def test_a_pod_with_an_ephemeral_container_fails() -> None:
    debug = {
        "name": "debug",
        "image": "busybox@sha256:" + "1" * 64,
        "securityContext": pod_security.container_security_context(),
    }
    result = judged(with_pod(observe(context()), on_pod(ephemeralContainers=[debug]), stamp=True))

    assert result.status == "Fail"
    assert result.message == f"pod {POD_NAME} has ephemeral (debug) containers attached"


def test_an_ephemeral_container_is_judged_like_the_others() -> None:
    debug = {"name": "debug", "image": "busybox", "securityContext": {"privileged": True}}
    result = judged(with_pod(observe(context()), on_pod(ephemeralContainers=[debug])))

    assert f"pod {POD_NAME}: container debug is privileged" in result.message


def test_judging_fails_pod_security_for_a_pod_that_is_not_from_the_template() -> None:
    ctx = context()
    observed = with_pod(observe(ctx), on_pod(hostAliases=[{"ip": "10.0.0.1", "hostnames": ["registry"]}]))
    (result,) = [item for item in judging.judge(ctx, observed) if item.name == pod_security.NAME]

    assert result.status == "Fail"
    assert f"pod {POD_NAME} does not run a pod spec the operator wrote" in result.message
    assert "spec.hostAliases (added)" in result.message


def test_judging_passes_a_pod_of_an_earlier_revision() -> None:
    ctx = context()
    observed = observe(ctx)
    (pod,) = observed.pods
    earlier = restamped(tampered(pod, on_container("model", readOnlyRootFilesystem=True)))

    assert all(item.status == "Pass" for item in judging.judge(ctx, replace(observed, pods=(earlier,))))


def test_preflight_has_nothing_to_block() -> None:
    assert pod_security.preflight(context(), Observed()) is None


def test_a_probe_with_an_empty_host_calls_the_pod_itself() -> None:
    result = judged(altered(observe(context()), "Deployment", probing("startupProbe", "httpGet", host="")))

    assert result.status == "Pass"
