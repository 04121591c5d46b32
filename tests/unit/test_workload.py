"""The model's Deployment, where every control's contribution to the pod meets."""

from __future__ import annotations

from typing import Any

import pytest

from securemodels.api.v1alpha1 import HEALTH_PORT
from securemodels.config import OperatorConfig
from securemodels.desired import canonical, naming, workload
from securemodels.desired.controls import mtls
from securemodels.desired.selectors import selector_matches
from unit.builders import IMAGE, SERVER, STAMP_KEY, UID, container, context, owner, pod_spec, tampered


def deployment(**spec: Any) -> dict[str, Any]:
    return workload.deployment(context(**spec), SERVER)


def env(**spec: Any) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = container(deployment(**spec), "model")["env"]
    return result


def test_deployment_is_named_after_the_smd_and_owned_by_it() -> None:
    metadata = deployment()["metadata"]

    assert (metadata["name"], metadata["namespace"]) == ("fraud", "ml-prod")
    assert metadata["ownerReferences"] == [owner().reference()]


def test_selector_uses_the_immutable_labels_and_matches_the_pods() -> None:
    spec = deployment()["spec"]

    assert spec["selector"] == {"matchLabels": naming.selector_labels(owner())}
    assert selector_matches(spec["selector"], spec["template"]["metadata"]["labels"])
    assert spec["template"]["metadata"]["labels"] == naming.labels(owner(), "model")


def test_replicas_and_a_rollout_that_never_drops_capacity() -> None:
    spec = deployment(model={"replicas": 4})["spec"]

    assert spec["replicas"] == 4
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }


def test_pod_runs_as_the_model_account_without_token_or_service_links() -> None:
    pod = pod_spec(deployment())

    assert pod["serviceAccountName"] == "fraud"
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    assert [item["name"] for item in pod["containers"]] == ["model", mtls.SIDECAR]


def test_model_container_runs_the_spec_image_bound_to_localhost() -> None:
    model = container(deployment(model={"port": 9000}), "model")

    assert model["image"] == IMAGE
    assert model["imagePullPolicy"] == "Always"
    assert model["env"][:2] == [
        {"name": workload.BIND_ADDRESS_ENV, "value": "127.0.0.1"},
        {"name": workload.PORT_ENV, "value": "9000"},
    ]
    assert "ports" not in model


def test_user_environment_follows_ours_with_references_not_values() -> None:
    variables = env(
        model={
            "env": [
                {"name": "MODE", "value": "strict"},
                {"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "level"}}},
            ]
        }
    )

    assert variables[2:] == [
        {"name": "MODE", "value": "strict"},
        {"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "level"}}},
    ]


def test_secrets_are_mounted_read_only_as_files_never_put_in_the_environment() -> None:
    built = deployment(model={"secretFiles": [{"name": "store", "secretName": "creds"}]})
    model = container(built, "model")

    assert {
        "name": "secret-store",
        "mountPath": "/var/run/secrets/securemodels/store",
        "readOnly": True,
    } in model["volumeMounts"]
    volumes = built["spec"]["template"]["spec"]["volumes"]
    assert {"name": "secret-store", "secret": {"secretName": "creds", "defaultMode": 0o440}} in volumes
    assert not [item for item in model["env"] if "secretKeyRef" in item.get("valueFrom", {})]


def test_command_and_args_only_when_given() -> None:
    plain = container(deployment(), "model")
    custom = container(deployment(model={"command": ["serve"], "args": ["--fast"]}), "model")

    assert "command" not in plain
    assert "args" not in plain
    assert (custom["command"], custom["args"]) == (["serve"], ["--fast"])


def test_metrics_port_is_declared_on_the_model_container() -> None:
    model = container(deployment(model={"metricsPort": 9090}), "model")

    assert model["ports"] == [{"name": "metrics", "containerPort": 9090, "protocol": "TCP"}]


def test_resources_are_always_set() -> None:
    model = container(deployment(model={"resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}), "model")

    assert model["resources"] == {
        "requests": {"cpu": "1", "memory": "1Gi"},
        "limits": {"cpu": "2", "memory": "2Gi"},
    }


def test_probes_go_through_the_sidecar_health_port() -> None:
    model = container(deployment(), "model")

    assert model["startupProbe"]["httpGet"] == {"path": "/healthz", "port": HEALTH_PORT}
    assert model["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": HEALTH_PORT}
    assert model["livenessProbe"]["httpGet"] == {"path": "/livez", "port": HEALTH_PORT}


def test_scratch_is_mounted_at_tmp_from_memory() -> None:
    pod = pod_spec(deployment())

    assert {"name": workload.SCRATCH_VOLUME, "mountPath": "/tmp"} in container(deployment(), "model")[
        "volumeMounts"
    ]
    assert {"name": workload.SCRATCH_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "256Mi"}} in pod[
        "volumes"
    ]


def test_every_mounted_volume_exists() -> None:
    pod = pod_spec(deployment(storage={"size": "1Gi", "storageClassName": "c"}))
    volumes = {item["name"] for item in pod["volumes"]}
    mounts = {mount["name"] for item in pod["containers"] for mount in item["volumeMounts"]}

    assert mounts == volumes


def test_pods_roll_one_by_one_without_storage_and_are_recreated_with_it() -> None:
    rolling = deployment()["spec"]["strategy"]
    recreated = deployment(storage={"size": "1Gi", "storageClassName": "encrypted-gp3"})["spec"]["strategy"]

    assert rolling == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    assert recreated == {"type": "Recreate"}


@pytest.mark.parametrize("policy", ["Always", "IfNotPresent", "Never"])
def test_both_containers_follow_the_configured_pull_policy(policy: str) -> None:
    built = workload.deployment(context(config=OperatorConfig(image_pull_policy=policy)), SERVER)

    assert container(built, "model")["imagePullPolicy"] == policy
    assert container(built, mtls.SIDECAR)["imagePullPolicy"] == policy


def test_the_template_stamp_covers_the_canonical_pod_spec() -> None:
    built = deployment()
    server_form = tampered(built, lambda item: pod_spec(item).update(dnsPolicy="ClusterFirst"))
    stamped, stamped_canonical = workload.with_template_mac(built, STAMP_KEY, UID, server_form)
    mac = canonical.template_mac(STAMP_KEY, UID, pod_spec(server_form))

    for item in (stamped, stamped_canonical):
        assert item["spec"]["template"]["metadata"]["annotations"][canonical.TEMPLATE_MAC_ANNOTATION] == mac
        assert mtls.CERTIFICATE_ANNOTATION in item["spec"]["template"]["metadata"]["annotations"]
    assert pod_spec(stamped) == pod_spec(built)
    assert pod_spec(stamped_canonical) == pod_spec(server_form)
    assert canonical.TEMPLATE_MAC_ANNOTATION not in built["spec"]["template"]["metadata"]["annotations"]


def test_the_stamp_changes_with_the_pod_spec_only() -> None:
    first, _ = workload.with_template_mac(deployment(), STAMP_KEY, UID, deployment())
    replicas, _ = workload.with_template_mac(
        deployment(model={"replicas": 3}), STAMP_KEY, UID, deployment(model={"replicas": 3})
    )
    port, _ = workload.with_template_mac(
        deployment(model={"port": 9000}), STAMP_KEY, UID, deployment(model={"port": 9000})
    )

    def mac(item: dict[str, Any]) -> str:
        return str(item["spec"]["template"]["metadata"]["annotations"][canonical.TEMPLATE_MAC_ANNOTATION])

    assert mac(first) == mac(replicas)
    assert mac(first) != mac(port)


def test_no_dev_shm_volume_unless_declared() -> None:
    pod = pod_spec(deployment())

    assert workload.SHARED_MEMORY_VOLUME not in [volume["name"] for volume in pod["volumes"]]
    assert "/dev/shm" not in [
        mount["mountPath"] for mount in container(deployment(), "model")["volumeMounts"]
    ]


def test_dev_shm_is_memory_of_the_declared_size_for_the_model_only() -> None:
    spec = {
        "model": {
            "sharedMemorySize": "8Gi",
            "resources": {
                "requests": {"cpu": "4", "memory": "16Gi"},
                "limits": {"cpu": "8", "memory": "24Gi"},
            },
        }
    }
    built = deployment(**spec)

    assert {
        "name": workload.SHARED_MEMORY_VOLUME,
        "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"},
    } in pod_spec(built)["volumes"]
    assert {"name": workload.SHARED_MEMORY_VOLUME, "mountPath": "/dev/shm"} in container(built, "model")[
        "volumeMounts"
    ]
    assert "/dev/shm" not in [mount["mountPath"] for mount in container(built, mtls.SIDECAR)["volumeMounts"]]
