"""Control mtls: the sidecar, its Secret and ConfigMap, the Service, client certificates, and the check."""

from __future__ import annotations

import base64
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from securemodels.api.v1alpha1 import HEALTH_PORT, TLS_PORT, MTLSClient
from securemodels.config import OperatorConfig
from securemodels.desired import naming, status
from securemodels.desired.compare import selector_matches
from securemodels.desired.controls import mtls
from securemodels.desired.model import Context, ControlResult, Manifest, Observed
from securemodels.pki import KeyPair
from unit.builders import (
    BUNDLE,
    FINGERPRINT,
    NOW,
    SERVER,
    Mutation,
    certificate,
    container,
    context,
    observe,
    owner,
    pod_spec,
    tampered,
)

GATEWAY = MTLSClient(name="gateway", namespace="ml-gw")
CLIENTS: dict[str, Any] = {
    "mtls": {
        "clients": [{"name": "gateway", "namespace": "ml-gw"}, {"name": "batch", "namespace": "ml-jobs"}]
    }
}
CLIENT_PAIR = KeyPair(cert_pem=b"client-cert", key_pem=b"client-key")


def decoded(secret: Manifest) -> dict[str, bytes]:
    return {key: base64.b64decode(value) for key, value in secret["data"].items()}


def test_client_identity_is_name_dot_namespace() -> None:
    assert mtls.client_identity(GATEWAY) == "gateway.ml-gw"


def test_client_object_names_cannot_collide_across_smds() -> None:
    ctx = context()

    assert mtls.client_secret_name(ctx, GATEWAY) == "fraud.ml-prod.client-gateway"
    assert mtls.ca_bundle_name(ctx) == "fraud.ml-prod.ca-bundle"


def test_dns_names_use_the_configured_cluster_domain() -> None:
    assert mtls.dns_names(context(config=OperatorConfig(cluster_domain="corp.internal"))) == [
        "fraud",
        "fraud.ml-prod",
        "fraud.ml-prod.svc",
        "fraud.ml-prod.svc.corp.internal",
    ]


def test_sidecar_container_exposes_the_tls_and_health_ports_only() -> None:
    sidecar = mtls.sidecar_container(
        context(config=OperatorConfig(sidecar_image="r.io/nginx@sha256:" + "1" * 64))
    )

    assert sidecar["name"] == mtls.SIDECAR
    assert sidecar["image"] == "r.io/nginx@sha256:" + "1" * 64
    assert sidecar["ports"] == [
        {"name": "https", "containerPort": TLS_PORT, "protocol": "TCP"},
        {"name": "health", "containerPort": HEALTH_PORT, "protocol": "TCP"},
    ]
    command = sidecar["command"]
    assert command[0] == "nginx"
    assert command[command.index("-c") + 1] == f"{mtls.CONFIG_DIR}/nginx.conf"
    assert sidecar["securityContext"]["readOnlyRootFilesystem"] is True
    assert sidecar["resources"]["limits"]


def test_sidecar_mounts_certificates_and_config_read_only() -> None:
    mounts = {item["name"]: item for item in mtls.sidecar_container(context())["volumeMounts"]}

    assert mounts["mtls-tls"] == {
        "name": "mtls-tls",
        "mountPath": mtls.SIDECAR_PATHS.tls_dir,
        "readOnly": True,
    }
    assert mounts["mtls-config"] == {"name": "mtls-config", "mountPath": mtls.CONFIG_DIR, "readOnly": True}
    assert mounts["mtls-tmp"]["mountPath"] == mtls.SIDECAR_PATHS.tmp_dir
    assert not mounts["mtls-tmp"].get("readOnly")


def test_sidecar_volumes() -> None:
    assert mtls.sidecar_volumes(context()) == [
        {"name": "mtls-tls", "secret": {"secretName": "fraud-tls", "defaultMode": 0o440}},
        {"name": "mtls-config", "configMap": {"name": "fraud-sidecar"}},
        {"name": "mtls-tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
    ]


def test_service_exposes_only_the_tls_port_inside_the_cluster() -> None:
    service = mtls.service(context())

    assert service["metadata"]["name"] == "fraud"
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"}
    ]
    assert selector_matches({"matchLabels": service["spec"]["selector"]}, naming.labels(owner(), "model"))


def test_tls_secret_holds_the_pair_and_the_bundle() -> None:
    secret = mtls.tls_secret(context(), SERVER)

    assert (secret["metadata"]["name"], secret["type"]) == ("fraud-tls", "kubernetes.io/tls")
    assert decoded(secret) == {"ca.crt": BUNDLE, "tls.crt": b"server-cert", "tls.key": b"server-key"}


def test_tls_secret_offline_holds_only_the_bundle() -> None:
    secret = mtls.tls_secret(context(), replace(SERVER, pair=None))

    assert decoded(secret) == {"ca.crt": BUNDLE}


def test_client_secret_lands_in_the_clients_namespace() -> None:
    secret = mtls.client_secret(context(), GATEWAY, CLIENT_PAIR, BUNDLE)

    assert (secret["metadata"]["name"], secret["metadata"]["namespace"]) == (
        "fraud.ml-prod.client-gateway",
        "ml-gw",
    )
    assert secret["metadata"]["labels"][naming.OWNER_NAME_LABEL] == "fraud"
    assert "ownerReferences" not in secret["metadata"]
    assert secret["type"] == "kubernetes.io/tls"
    assert decoded(secret) == {"tls.crt": b"client-cert", "tls.key": b"client-key", "ca.crt": BUNDLE}


def test_ca_bundle_config_map_holds_no_key() -> None:
    config_map = mtls.ca_bundle_config_map(context(), "ml-gw", BUNDLE)

    assert (config_map["metadata"]["name"], config_map["metadata"]["namespace"]) == (
        "fraud.ml-prod.ca-bundle",
        "ml-gw",
    )
    assert config_map["data"] == {"ca.crt": BUNDLE.decode()}


def test_sidecar_config_map_holds_the_rendered_conf_with_the_clients() -> None:
    ctx = context(**CLIENTS)
    config_map = mtls.sidecar_config_map(ctx)

    assert config_map["metadata"]["name"] == "fraud-sidecar"
    assert config_map["data"] == {"nginx.conf": mtls.nginx_conf(ctx)}
    assert "gateway.ml-gw" in config_map["data"]["nginx.conf"]
    assert "batch.ml-jobs" in config_map["data"]["nginx.conf"]
    assert "ssl_verify_client on;" in config_map["data"]["nginx.conf"]


def test_nginx_conf_follows_the_minimum_tls_version() -> None:
    assert "ssl_protocols TLSv1.3;" in mtls.nginx_conf(context())
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in mtls.nginx_conf(context(mtls={"minTLSVersion": "1.2"}))


def template_annotations(server: mtls.ServerTLS = SERVER, **spec: Any) -> dict[str, str]:
    return mtls.pod_annotations(context(**spec), server)


def test_pod_annotations_name_the_certificate_and_config() -> None:
    assert set(template_annotations()) == {mtls.CERTIFICATE_ANNOTATION, mtls.CONFIG_ANNOTATION}
    assert template_annotations()[mtls.CERTIFICATE_ANNOTATION] == FINGERPRINT
    assert template_annotations() == template_annotations()


@pytest.mark.parametrize(
    ("server", "spec", "changed"),
    [
        (replace(SERVER, fingerprint="cd" * 32), {}, mtls.CERTIFICATE_ANNOTATION),
        (replace(SERVER, bundle_pem=BUNDLE + BUNDLE), {}, mtls.CONFIG_ANNOTATION),
        (SERVER, CLIENTS, mtls.CONFIG_ANNOTATION),
        (SERVER, {"mtls": {"minTLSVersion": "1.2"}}, mtls.CONFIG_ANNOTATION),
        (SERVER, {"model": {"port": 9000}}, mtls.CONFIG_ANNOTATION),
    ],
    ids=["renewed certificate", "new CA bundle", "clients", "TLS version", "model port"],
)
def test_pod_annotations_change_with_what_nginx_loads(
    server: mtls.ServerTLS, spec: dict[str, Any], changed: str
) -> None:
    before, after = template_annotations(), template_annotations(server, **spec)

    assert before[changed] != after[changed]
    assert {key for key in before if before[key] != after[key]} == {changed}


def test_deployment_template_carries_the_annotations() -> None:
    ctx = context()
    deployment = observe(ctx).deployment or {}

    assert deployment["spec"]["template"]["metadata"]["annotations"] == mtls.pod_annotations(ctx, SERVER)


def test_weakenings() -> None:
    assert mtls.weakenings(context()) == ()
    assert mtls.weakenings(context(mtls={"minTLSVersion": "1.2"})) == ("TLS12",)


def verdict(ctx: Context, observed: Observed) -> ControlResult:
    """The mtls control's verdict on `observed`, as the status chain judges it."""
    (result,) = [item for item in status.judge(ctx, observed) if item.name == mtls.NAME]
    return result


def judge(ctx: Context | None = None, **changes: Any) -> tuple[str, str]:
    ctx = ctx or context()
    result = verdict(ctx, observe(ctx, **changes))
    return result.status, result.message


def test_check_passes_the_built_objects() -> None:
    ctx = context(**CLIENTS)
    result = verdict(ctx, observe(ctx))

    assert (result.name, result.status, result.reason) == ("mtls", "Pass", "MutualTLS")


def test_check_reports_tls_12_as_a_weakening() -> None:
    ctx = context(mtls={"minTLSVersion": "1.2"})
    result = verdict(ctx, observe(ctx))

    assert (result.status, result.reason, result.weakenings) == ("Weakened", "TLS12", ("TLS12",))
    assert "spec.mtls.minTLSVersion" in result.message


def remove_sidecar(deployment: Manifest) -> None:
    pod_spec(deployment)["containers"] = [
        item for item in pod_spec(deployment)["containers"] if item["name"] != mtls.SIDECAR
    ]


def swap_sidecar_image(deployment: Manifest) -> None:
    container(deployment, mtls.SIDECAR)["image"] = "nginx@sha256:" + "2" * 64


def add_port(service: Manifest) -> None:
    service["spec"]["ports"].append({"name": "plain", "port": 80, "targetPort": 8080})


def plain_target(service: Manifest) -> None:
    service["spec"]["ports"][0]["targetPort"] = 8080


DEPLOYMENT_CHANGES: list[tuple[str, Mutation, str]] = [
    ("sidecar removed", remove_sidecar, f"the pods have no {mtls.SIDECAR} sidecar"),
    ("sidecar image swapped", swap_sidecar_image, "not the configured image"),
]
SERVICE_CHANGES: list[tuple[str, Mutation, str]] = [
    ("NodePort", lambda item: item["spec"].update(type="NodePort"), "Service fraud is exposed as NodePort"),
    (
        "LoadBalancer",
        lambda item: item["spec"].update(type="LoadBalancer"),
        "Service fraud is exposed as LoadBalancer",
    ),
    ("extra port", add_port, "Service fraud exposes ports other than the TLS port"),
    ("target the model port", plain_target, "Service fraud exposes ports other than the TLS port"),
]


@pytest.mark.parametrize(
    ("mutation", "problem"), [c[1:] for c in DEPLOYMENT_CHANGES], ids=[c[0] for c in DEPLOYMENT_CHANGES]
)
def test_check_fails_on_a_tampered_sidecar(mutation: Mutation, problem: str) -> None:
    ctx = context()
    verdict, message = judge(ctx, deployment=tampered(observe(ctx).deployment, mutation))

    assert verdict == "Fail"
    assert problem in message


@pytest.mark.parametrize(
    ("mutation", "problem"), [c[1:] for c in SERVICE_CHANGES], ids=[c[0] for c in SERVICE_CHANGES]
)
def test_check_fails_on_a_tampered_service(mutation: Mutation, problem: str) -> None:
    ctx = context()
    verdict, message = judge(ctx, service=tampered(observe(ctx).service, mutation))

    assert verdict == "Fail"
    assert problem in message


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"deployment": None}, "the model's Deployment does not exist"),
        ({"service": None}, "Service fraud does not exist"),
        ({"server_certificate": None}, "Secret fraud-tls holds no readable certificate"),
        ({"server_certificate": certificate(NOW - timedelta(days=2))}, "the server certificate expired at"),
        (
            {"server_certificate": certificate(NOW, valid_for=timedelta(0))},
            "the server certificate expired at",
        ),
    ],
    ids=["no deployment", "no service", "no certificate", "expired certificate", "expiring this second"],
)
def test_check_fails_on_missing_pieces(changes: dict[str, Any], problem: str) -> None:
    verdict, message = judge(**changes)

    assert verdict == "Fail"
    assert problem in message


def test_check_fails_on_a_tampered_sidecar_config() -> None:
    # nginx.conf decides who gets through; an edit that drops client verification must not pass.
    ctx = context(**CLIENTS)
    observed = observe(ctx)

    def verify_optional(config_map: Manifest) -> None:
        conf = config_map["data"]["nginx.conf"]
        config_map["data"]["nginx.conf"] = conf.replace(
            "ssl_verify_client on;", "ssl_verify_client optional;"
        )

    weakened = tampered(observed.sidecar_config, verify_optional)
    assert weakened != observed.sidecar_config

    assert verdict(ctx, replace(observed, sidecar_config=weakened)).status == "Fail"
