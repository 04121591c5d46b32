"""Control mtls: the sidecar, its Secret and ConfigMap, the Service, client certificates, and the check."""

from __future__ import annotations

import base64
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from securemodels.api.v1alpha1 import HEALTH_PORT, TLS_PORT, MTLSClient
from securemodels.config import OperatorConfig
from securemodels.desired import judging, naming
from securemodels.desired.controls import mtls
from securemodels.desired.model import Context, ControlResult, Manifest, Observed
from securemodels.desired.naming import ChildRef
from securemodels.desired.nginx import RateLimit, Traffic
from securemodels.desired.selectors import selector_matches
from securemodels.pki import KeyPair
from unit.builders import (
    BUNDLE,
    FINGERPRINT,
    NOW,
    POD_NAME,
    SERVER,
    Mutation,
    altered,
    build,
    certificate,
    container,
    context,
    observe,
    owner,
    pod_spec,
    removed,
    with_pod,
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
    names = context(**CLIENTS).names

    assert names.client_secrets[mtls.client_identity(GATEWAY)] == ChildRef(
        "Secret", "ml-gw", "fraud.ml-prod.client-gateway"
    )
    assert names.ca_bundles["ml-gw"] == ChildRef("ConfigMap", "ml-gw", "fraud.ml-prod.ca-bundle")


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
    secret = mtls.client_secret(context(**CLIENTS), GATEWAY, CLIENT_PAIR, BUNDLE)

    assert (secret["metadata"]["name"], secret["metadata"]["namespace"]) == (
        "fraud.ml-prod.client-gateway",
        "ml-gw",
    )
    assert secret["metadata"]["labels"][naming.OWNER_NAME_LABEL] == "fraud"
    assert "ownerReferences" not in secret["metadata"]
    assert secret["type"] == "kubernetes.io/tls"
    assert decoded(secret) == {"tls.crt": b"client-cert", "tls.key": b"client-key", "ca.crt": BUNDLE}


def test_ca_bundle_config_map_holds_no_key() -> None:
    config_map = mtls.ca_bundle_config_map(context(**CLIENTS), "ml-gw", BUNDLE)

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
        (SERVER, {"serving": {"rateLimit": {"requestsPerSecond": 5}}}, mtls.CONFIG_ANNOTATION),
        (SERVER, {"serving": {"accessLog": False}}, mtls.CONFIG_ANNOTATION),
    ],
    ids=["renewed certificate", "new CA bundle", "clients", "TLS version", "model port", "rate", "log"],
)
def test_pod_annotations_change_with_what_nginx_loads(
    server: mtls.ServerTLS, spec: dict[str, Any], changed: str
) -> None:
    before, after = template_annotations(), template_annotations(server, **spec)

    assert before[changed] != after[changed]
    assert {key for key in before if before[key] != after[key]} == {changed}


def test_deployment_template_carries_the_annotations() -> None:
    ctx = context()
    deployment = build(ctx).by_ref()[ctx.names.deployment]

    assert deployment["spec"]["template"]["metadata"]["annotations"] == mtls.pod_annotations(ctx, SERVER)


def test_weakenings() -> None:
    assert mtls.weakenings(context()) == ()
    assert mtls.weakenings(context(mtls={"minTLSVersion": "1.2"})) == ("TLS12",)
    assert mtls.weakenings(context(serving={"accessLog": False})) == ("AccessLogOff",)


def test_traffic_is_spec_serving_in_bytes_and_seconds() -> None:
    assert mtls.traffic(context()) == Traffic(
        protocol="HTTP",
        max_body_bytes=64 << 20,
        response_timeout_seconds=300,
        rate_limit=None,
        access_log=True,
    )
    serving = {
        "protocol": "GRPC",
        "healthPort": 8000,
        "maxRequestBodySize": "512Ki",
        "responseTimeout": "1h",
        "rateLimit": {"requestsPerSecond": 20},
        "accessLog": False,
    }
    assert mtls.traffic(context(model={"port": 8001}, serving=serving)) == Traffic(
        protocol="GRPC",
        max_body_bytes=512 << 10,
        response_timeout_seconds=3600,
        rate_limit=RateLimit(requests_per_second=20, burst=20),
        access_log=False,
        health_port=8000,
    )
    explicit = {"rateLimit": {"requestsPerSecond": 20, "burst": 0}}
    assert mtls.traffic(context(serving=explicit)).rate_limit == RateLimit(20, 0)


def test_nginx_conf_follows_spec_serving() -> None:
    conf = mtls.nginx_conf(
        context(model={"port": 8001}, serving={"protocol": "GRPC", "healthPort": 8000, "accessLog": False})
    )

    assert "grpc_pass grpc://securemodels_model;" in conf
    assert "server 127.0.0.1:8000;" in conf
    assert "access_log /dev/stdout" not in conf


def verdict(ctx: Context, observed: Observed) -> ControlResult:
    """The mtls control's verdict on `observed`, with the generic judges' findings, as judging gives it."""
    (result,) = [item for item in judging.judge(ctx, observed) if item.name == mtls.NAME]
    return result


def test_check_passes_the_built_objects_and_the_live_pod() -> None:
    ctx = context(**CLIENTS)
    result = mtls.check(ctx, observe(ctx))

    assert (result.name, result.status, result.reason) == ("mtls", "Pass", "MutualTLS")
    assert verdict(ctx, observe(ctx)) == result


def test_check_reports_tls_12_as_a_weakening() -> None:
    ctx = context(mtls={"minTLSVersion": "1.2"})
    result = mtls.check(ctx, observe(ctx))

    assert (result.status, result.reason, result.weakenings) == ("Weakened", "TLS12", ("TLS12",))
    assert "spec.mtls.minTLSVersion" in result.message


def test_check_reports_every_weakening() -> None:
    ctx = context(mtls={"minTLSVersion": "1.2"}, serving={"accessLog": False})
    result = mtls.check(ctx, observe(ctx))

    assert (result.status, result.reason) == ("Weakened", "TLS12,AccessLogOff")
    assert result.weakenings == ("TLS12", "AccessLogOff")
    assert "spec.mtls.minTLSVersion" in result.message
    assert "spec.serving.accessLog" in result.message


def test_a_failure_outranks_the_weakening() -> None:
    ctx = context(mtls={"minTLSVersion": "1.2"})
    result = mtls.check(ctx, replace(observe(ctx), server_certificate=None))

    assert (result.status, result.reason, result.weakenings) == ("Fail", "MTLSNotEnforced", ())


def without_sidecar(workload_object: Manifest) -> None:
    spec = pod_spec(workload_object)
    spec["containers"] = [item for item in spec["containers"] if item["name"] != mtls.SIDECAR]


def swap_sidecar_image(workload_object: Manifest) -> None:
    container(workload_object, mtls.SIDECAR)["image"] = "nginx@sha256:" + "2" * 64


def add_port(service: Manifest) -> None:
    service["spec"]["ports"].append({"name": "plain", "port": 80, "targetPort": 8080})


def on_ports(**fields: Any) -> Mutation:
    return lambda service: service["spec"]["ports"][0].update(fields)


def edit_conf(config_map: Manifest) -> None:
    conf = config_map["data"]["nginx.conf"]
    config_map["data"]["nginx.conf"] = conf.replace("ssl_verify_client on;", "ssl_verify_client optional;")


OBJECT_CHANGES: list[tuple[str, str, Mutation, str]] = [
    (
        "sidecar removed from the template",
        "Deployment",
        without_sidecar,
        f"the Deployment's pods have no {mtls.SIDECAR}",
    ),
    ("extra Service port", "Service", add_port, "Service fraud exposes ports other than the TLS port"),
    (
        "Service targets the model port",
        "Service",
        on_ports(targetPort=8080),
        "exposes ports other than the TLS port",
    ),
    ("Service on port 80", "Service", on_ports(port=80), "exposes ports other than the TLS port"),
    ("Service without ports", "Service", lambda item: item["spec"].pop("ports"), "exposes ports other than"),
    (
        "client verification made optional",
        "ConfigMap",
        edit_conf,
        "ConfigMap fraud-sidecar does not hold the operator's nginx.conf",
    ),
    ("config emptied", "ConfigMap", lambda item: item.pop("data"), "does not hold the operator's nginx.conf"),
]


@pytest.mark.parametrize(
    ("kind", "mutation", "problem"), [c[1:] for c in OBJECT_CHANGES], ids=[c[0] for c in OBJECT_CHANGES]
)
def test_check_fails_on_a_changed_object(kind: str, mutation: Mutation, problem: str) -> None:
    ctx = context(**CLIENTS)
    result = mtls.check(ctx, altered(observe(ctx), kind, mutation))

    assert (result.status, result.reason) == ("Fail", "MTLSNotEnforced")
    assert problem in result.message


@pytest.mark.parametrize(
    ("kind", "problem"),
    [
        ("Deployment", "the model's Deployment does not exist"),
        ("Service", "Service fraud does not exist"),
        ("ConfigMap", "ConfigMap fraud-sidecar does not hold the operator's nginx.conf"),
    ],
)
def test_check_fails_on_a_missing_object(kind: str, problem: str) -> None:
    ctx = context()
    result = mtls.check(ctx, removed(observe(ctx), kind))

    assert result.status == "Fail"
    assert problem in result.message


def test_check_fails_on_a_pod_without_the_sidecar() -> None:
    ctx = context()
    result = mtls.check(ctx, with_pod(observe(ctx), without_sidecar, stamp=True))

    assert result.status == "Fail"
    assert f"pod {POD_NAME} runs without the {mtls.SIDECAR} sidecar" in result.message


def test_judging_fails_mtls_for_a_pod_whose_sidecar_was_removed() -> None:
    ctx = context()
    result = verdict(ctx, with_pod(observe(ctx), without_sidecar))

    assert result.status == "Fail"
    assert f"pod {POD_NAME}: spec.containers[{mtls.SIDECAR}] (removed) differs" in result.message
    assert f"pod {POD_NAME} runs without the {mtls.SIDECAR} sidecar" in result.message


def test_judging_fails_mtls_for_a_pod_whose_sidecar_runs_another_image() -> None:
    ctx = context()
    result = verdict(ctx, with_pod(observe(ctx), swap_sidecar_image))

    assert result.status == "Fail"
    assert f"pod {POD_NAME}: spec.containers[{mtls.SIDECAR}].image differs from the operator's template" in (
        result.message
    )


def test_judging_fails_mtls_for_a_changed_service_port() -> None:
    ctx = context()
    observed = replace(observe(ctx), drift={ctx.names.service: ("spec.ports[https].targetPort",)})
    result = verdict(ctx, observed)

    assert result.status == "Fail"
    assert "Service fraud was changed outside the operator at spec.ports[https].targetPort" in result.message


@pytest.mark.parametrize(
    ("certificate_info", "problem"),
    [
        (None, "Secret fraud-tls holds no readable certificate"),
        (certificate(NOW - timedelta(days=2)), "the server certificate expired at"),
        (
            certificate(NOW, valid_for=timedelta(0)),
            "the server certificate expired at 2030-01-01T12:00:00+00:00",
        ),
    ],
    ids=["no certificate", "expired certificate", "expiring this second"],
)
def test_check_fails_on_the_server_certificate(certificate_info: Any, problem: str) -> None:
    ctx = context()
    result = mtls.check(ctx, replace(observe(ctx), server_certificate=certificate_info))

    assert result.status == "Fail"
    assert problem in result.message


def test_a_certificate_valid_for_one_more_second_passes() -> None:
    ctx = context()
    observed = replace(observe(ctx), server_certificate=certificate(NOW, valid_for=timedelta(seconds=1)))

    assert mtls.check(ctx, observed).status == "Pass"


def test_check_reports_every_problem_at_once() -> None:
    ctx = context()
    observed = replace(
        removed(observe(ctx), "Service"), server_certificate=None, findings={mtls.NAME: ("found by a judge",)}
    )
    message = mtls.check(ctx, observed).message

    assert message.split("; ") == [
        "found by a judge",
        "Service fraud does not exist",
        "Secret fraud-tls holds no readable certificate",
    ]


def test_preflight_has_nothing_to_block() -> None:
    assert mtls.preflight(context(**CLIENTS), Observed()) is None
