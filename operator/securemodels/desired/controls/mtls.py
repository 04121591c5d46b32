"""Control `mtls`: every connection to the model is mutual TLS from a declared client.

"Lock down communication, check ID cards at the door", without a service mesh: an nginx sidecar
terminates TLS 1.3, requires a client certificate from the operator's CA and admits only the identities
declared in spec.mtls.clients; the model itself listens on localhost and the Service exposes only the
TLS port. Certificates are rotated before expiry by replacing the pods, not by changing them in place.
Judged on the sidecar's live configuration, the Service, the certificate, and every running pod: a pod
without the sidecar serves the model in the clear.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from securemodels.api.v1alpha1 import HEALTH_PORT, TLS_PORT, MTLSClient, byte_size, seconds
from securemodels.desired import naming
from securemodels.desired.controls import pod_security
from securemodels.desired.controls.base import verdict
from securemodels.desired.controls.image_digest import SIDECAR_CONTAINER
from securemodels.desired.model import Blocker, Context, ControlResult, Manifest, Observed
from securemodels.desired.nginx import (
    QUARANTINE_FILE,
    SIDECAR_HEALTH_PATH,
    RateLimit,
    SidecarPaths,
    Traffic,
    render_nginx_conf,
)
from securemodels.pki import CA_BUNDLE_KEY, CERT_KEY, PRIVATE_KEY_KEY, KeyPair

NAME = "mtls"
CONDITION = "MTLSReady"
SIDECAR = SIDECAR_CONTAINER
SERVICE_PORT = 443
TLS_12 = "TLS12"
ACCESS_LOG_OFF = "AccessLogOff"
CERTIFICATE_ANNOTATION = "securemodels.io/certificate-sha256"
CONFIG_ANNOTATION = "securemodels.io/sidecar-config-sha256"
SIDECAR_PATHS = SidecarPaths()
CONFIG_DIR = SIDECAR_PATHS.config_dir
DRAIN_SECONDS = 5
TLS_VOLUME, CONFIG_VOLUME, TMP_VOLUME = "mtls-tls", "mtls-config", "mtls-tmp"


class Reason(StrEnum):
    MUTUAL_TLS = "MutualTLS"
    NOT_ENFORCED = "MTLSNotEnforced"
    TLS12 = TLS_12
    ACCESS_LOG_OFF = ACCESS_LOG_OFF


@dataclass(frozen=True)
class ServerTLS:
    """The model's server certificate and the CA bundle it trusts for client certificates.

    `pair` is None when rendering offline: the operator fills the Secret when it reconciles.
    """

    pair: KeyPair | None
    bundle_pem: bytes
    fingerprint: str


def client_identity(client: MTLSClient) -> str:
    """The client certificate's CN, and the name the sidecar's allow-list admits."""
    return naming.client_identity(client.name, client.namespace)


def dns_names(context: Context) -> list[str]:
    name, namespace = context.owner.name, context.owner.namespace
    return [
        name,
        f"{name}.{namespace}",
        f"{name}.{namespace}.svc",
        f"{name}.{namespace}.svc.{context.config.cluster_domain}",
    ]


def traffic(context: Context) -> Traffic:
    """spec.serving as the sidecar applies it."""
    serving = context.spec.serving
    limit = serving.rate_limit
    return Traffic(
        protocol=serving.protocol,
        max_body_bytes=byte_size(serving.max_request_body_size),
        response_timeout_seconds=seconds(serving.response_timeout),
        rate_limit=(
            None
            if limit is None
            else RateLimit(
                limit.requests_per_second, limit.requests_per_second if limit.burst is None else limit.burst
            )
        ),
        access_log=serving.access_log,
        health_port=serving.health_port,
    )


def nginx_conf(context: Context) -> str:
    mtls = context.spec.mtls
    return render_nginx_conf(
        model_port=context.spec.model.port,
        health_path=context.spec.model.health_path,
        liveness_path=context.spec.model.liveness_path,
        min_tls_version=mtls.min_tls_version,
        client_identities=sorted(client_identity(client) for client in mtls.clients),
        traffic=traffic(context),
        paths=SIDECAR_PATHS,
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def sidecar_config_map(context: Context) -> Manifest:
    """nginx.conf, and during a quarantine the flag file nginx looks for at every request: the running
    sidecar refuses every client as soon as the kubelet updates the volume, without a restart."""
    data = {"nginx.conf": nginx_conf(context)}
    if context.spec.quarantine is not None:
        data[QUARANTINE_FILE] = context.spec.quarantine.reason
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": naming.metadata(context.owner, context.names.sidecar_config, "mtls"),
        "data": data,
    }


def tls_secret(context: Context, server: ServerTLS) -> Manifest:
    data = {CA_BUNDLE_KEY: _b64(server.bundle_pem)}
    if server.pair is not None:
        data |= {CERT_KEY: _b64(server.pair.cert_pem), PRIVATE_KEY_KEY: _b64(server.pair.key_pem)}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": naming.metadata(context.owner, context.names.tls_secret, "mtls"),
        "type": "kubernetes.io/tls",
        "data": data,
    }


def client_secret(context: Context, client: MTLSClient, pair: KeyPair, bundle_pem: bytes) -> Manifest:
    ref = context.names.client_secrets[client_identity(client)]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": naming.metadata(context.owner, ref, naming.CLIENT_COMPONENT),
        "type": "kubernetes.io/tls",
        "data": {
            CERT_KEY: _b64(pair.cert_pem),
            PRIVATE_KEY_KEY: _b64(pair.key_pem),
            CA_BUNDLE_KEY: _b64(bundle_pem),
        },
    }


def ca_bundle_config_map(context: Context, namespace: str, bundle_pem: bytes) -> Manifest:
    """The CA bundle, for clients that verify the model's server certificate."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": naming.metadata(
            context.owner, context.names.ca_bundles[namespace], naming.CLIENT_COMPONENT
        ),
        "data": {CA_BUNDLE_KEY: bundle_pem.decode()},
    }


def pod_annotations(context: Context, server: ServerTLS) -> dict[str, str]:
    """Any change here replaces the pods, so nginx never runs with stale certificates or settings."""
    config_hash = hashlib.sha256(nginx_conf(context).encode() + server.bundle_pem).hexdigest()
    return {CERTIFICATE_ANNOTATION: server.fingerprint, CONFIG_ANNOTATION: config_hash}


def sidecar_container(context: Context) -> dict[str, Any]:
    return {
        "name": SIDECAR,
        "image": context.config.sidecar_image,
        "imagePullPolicy": context.config.image_pull_policy,
        "command": ["nginx", "-e", "stderr", "-c", f"{CONFIG_DIR}/nginx.conf"],
        "ports": [
            {"name": "https", "containerPort": TLS_PORT, "protocol": "TCP"},
            {"name": "health", "containerPort": HEALTH_PORT, "protocol": "TCP"},
        ],
        "securityContext": pod_security.container_security_context(),
        "resources": {
            "requests": {"cpu": "50m", "memory": "32Mi"},
            "limits": {"cpu": "500m", "memory": "128Mi"},
        },
        "readinessProbe": {"httpGet": {"path": SIDECAR_HEALTH_PATH, "port": "health"}, "periodSeconds": 10},
        # Endpoints are removed while the pod terminates, not before: keep serving until clients move on.
        "lifecycle": {"preStop": {"sleep": {"seconds": DRAIN_SECONDS}}},
        "livenessProbe": {
            "httpGet": {"path": SIDECAR_HEALTH_PATH, "port": "health"},
            "periodSeconds": 20,
            "failureThreshold": 3,
        },
        "volumeMounts": [
            {"name": TLS_VOLUME, "mountPath": SIDECAR_PATHS.tls_dir, "readOnly": True},
            {"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": TMP_VOLUME, "mountPath": SIDECAR_PATHS.tmp_dir},
        ],
    }


def sidecar_volumes(context: Context) -> list[dict[str, Any]]:
    names = context.names
    return [
        {"name": TLS_VOLUME, "secret": {"secretName": names.tls_secret.name, "defaultMode": 0o440}},
        {"name": CONFIG_VOLUME, "configMap": {"name": names.sidecar_config.name}},
        {"name": TMP_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
    ]


def service(context: Context) -> Manifest:
    owner = context.owner
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": naming.metadata(owner, context.names.service, "service"),
        "spec": {
            "type": "ClusterIP",
            "selector": naming.selector_labels(owner),
            "ports": [{"name": "https", "port": SERVICE_PORT, "targetPort": "https", "protocol": "TCP"}],
        },
    }


_WEAKENING_MESSAGES = {
    TLS_12: "spec.mtls.minTLSVersion 1.2 accepts TLS 1.2 (AEAD ciphers only)",
    ACCESS_LOG_OFF: "spec.serving.accessLog false: the sidecar does not record who called",
}


def weakenings(context: Context) -> tuple[str, ...]:
    found = []
    if context.spec.mtls.min_tls_version == "1.2":
        found.append(TLS_12)
    if not context.spec.serving.access_log:
        found.append(ACCESS_LOG_OFF)
    return tuple(found)


def preflight(context: Context, observed: Observed) -> Blocker | None:
    return None


def _sidecar_of(pod_spec: Manifest) -> dict[str, Any] | None:
    return next((item for item in pod_spec.get("containers") or [] if item.get("name") == SIDECAR), None)


def check(context: Context, observed: Observed) -> ControlResult:
    names = context.names
    problems = list(observed.findings.get(NAME, ()))
    config_data = (observed.get(names.sidecar_config) or {}).get("data") or {}
    if config_data.get("nginx.conf") != nginx_conf(context):
        problems.append(f"ConfigMap {names.sidecar_config.name} does not hold the operator's nginx.conf")
    if context.spec.quarantine is not None and QUARANTINE_FILE not in config_data:
        problems.append(f"ConfigMap {names.sidecar_config.name} does not tell the sidecar to refuse clients")
    deployment = observed.get(names.deployment)
    if deployment is None:
        problems.append("the model's Deployment does not exist")
    elif _sidecar_of(deployment["spec"]["template"]["spec"]) is None:
        problems.append(f"the Deployment's pods have no {SIDECAR} sidecar")
    for pod in observed.pods:
        if _sidecar_of(pod.get("spec") or {}) is None:
            problems.append(f"pod {pod['metadata']['name']} runs without the {SIDECAR} sidecar")
    live_service = observed.get(names.service)
    if live_service is None:
        problems.append(f"Service {names.service.name} does not exist")
    else:
        ports = (live_service.get("spec") or {}).get("ports") or []
        if [(port.get("port"), port.get("targetPort")) for port in ports] != [(SERVICE_PORT, "https")]:
            problems.append(f"Service {names.service.name} exposes ports other than the TLS port")
    certificate = observed.server_certificate
    if certificate is None:
        problems.append(f"Secret {names.tls_secret.name} holds no readable certificate")
    elif certificate.not_after <= context.now:
        problems.append(f"the server certificate expired at {certificate.not_after.isoformat()}")
    if not problems and (weakened := weakenings(context)):
        return ControlResult(
            NAME,
            "Weakened",
            ",".join(weakened),
            "; ".join(_WEAKENING_MESSAGES[item] for item in weakened),
            weakened,
        )
    return verdict(
        NAME,
        problems,
        Reason.NOT_ENFORCED,
        Reason.MUTUAL_TLS,
        "TLS 1.3, client certificates required, declared clients only",
    )
