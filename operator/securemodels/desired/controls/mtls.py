"""Control `mtls`: every connection to the model is mutual TLS from a declared client.

"Lock down communication, check ID cards at the door", without a service mesh: an nginx sidecar
terminates TLS 1.3, requires a client certificate from the operator's CA and admits only the identities
declared in spec.mtls.clients; the model itself listens on localhost and the Service exposes only the
TLS port. Certificates are rotated before expiry by replacing the pods, not by changing them in place.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any

from securemodels.api.v1alpha1 import HEALTH_PORT, TLS_PORT, MTLSClient
from securemodels.desired import naming
from securemodels.desired.controls import pod_security
from securemodels.desired.model import Context, ControlResult, Manifest
from securemodels.desired.nginx import SIDECAR_HEALTH_PATH, SidecarPaths, render_nginx_conf
from securemodels.pki import CA_BUNDLE_KEY, CERT_KEY, PRIVATE_KEY_KEY, CertificateInfo, KeyPair

NAME = "mtls"
CONDITION = "MTLSReady"
SIDECAR = "mtls-proxy"
TLS_PURPOSE = "tls"
SIDECAR_PURPOSE = "sidecar"
SERVICE_PORT = 443
TLS_12 = "TLS12"
CONFIG_DIR = "/etc/securemodels/nginx"
CERTIFICATE_ANNOTATION = "securemodels.io/certificate-sha256"
CONFIG_ANNOTATION = "securemodels.io/sidecar-config-sha256"
SIDECAR_PATHS = SidecarPaths()


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
    return f"{client.name}.{client.namespace}"


def dns_names(context: Context) -> list[str]:
    name, namespace = context.owner.name, context.owner.namespace
    return [
        name,
        f"{name}.{namespace}",
        f"{name}.{namespace}.svc",
        f"{name}.{namespace}.svc.{context.config.cluster_domain}",
    ]


def nginx_conf(context: Context) -> str:
    mtls = context.spec.mtls
    return render_nginx_conf(
        model_port=context.spec.model.port,
        health_path=context.spec.model.health_path,
        min_tls_version=mtls.min_tls_version,
        client_identities=sorted(client_identity(client) for client in mtls.clients),
        paths=SIDECAR_PATHS,
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def sidecar_config_map(context: Context) -> Manifest:
    owner = context.owner
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": naming.metadata(owner, owner.child(SIDECAR_PURPOSE), "mtls"),
        "data": {"nginx.conf": nginx_conf(context)},
    }


def tls_secret(context: Context, server: ServerTLS) -> Manifest:
    owner = context.owner
    data = {CA_BUNDLE_KEY: _b64(server.bundle_pem)}
    if server.pair is not None:
        data |= {CERT_KEY: _b64(server.pair.cert_pem), PRIVATE_KEY_KEY: _b64(server.pair.key_pem)}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": naming.metadata(owner, owner.child(TLS_PURPOSE), "mtls"),
        "type": "kubernetes.io/tls",
        "data": data,
    }


def client_secret_name(context: Context, client: MTLSClient) -> str:
    """Unambiguous across SMDs: namespaces and SMD names are DNS labels, so the dots separate them."""
    return f"{context.owner.name}.{context.owner.namespace}.client-{client.name}"


def ca_bundle_name(context: Context) -> str:
    return f"{context.owner.name}.{context.owner.namespace}.ca-bundle"


def client_secret(context: Context, client: MTLSClient, pair: KeyPair, bundle_pem: bytes) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": naming.remote_metadata(
            context.owner, client_secret_name(context, client), client.namespace, "mtls-client"
        ),
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
        "metadata": naming.remote_metadata(context.owner, ca_bundle_name(context), namespace, "mtls-client"),
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
        "imagePullPolicy": "Always",
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
        "livenessProbe": {
            "httpGet": {"path": SIDECAR_HEALTH_PATH, "port": "health"},
            "periodSeconds": 20,
            "failureThreshold": 3,
        },
        "volumeMounts": [
            {"name": "mtls-tls", "mountPath": SIDECAR_PATHS.tls_dir, "readOnly": True},
            {"name": "mtls-config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "mtls-tmp", "mountPath": SIDECAR_PATHS.tmp_dir},
        ],
    }


def sidecar_volumes(context: Context) -> list[dict[str, Any]]:
    owner = context.owner
    return [
        {"name": "mtls-tls", "secret": {"secretName": owner.child(TLS_PURPOSE), "defaultMode": 0o440}},
        {"name": "mtls-config", "configMap": {"name": owner.child(SIDECAR_PURPOSE)}},
        {"name": "mtls-tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
    ]


def service(context: Context) -> Manifest:
    owner = context.owner
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": naming.metadata(owner, owner.name, "service"),
        "spec": {
            "type": "ClusterIP",
            "selector": naming.selector_labels(owner),
            "ports": [{"name": "https", "port": SERVICE_PORT, "targetPort": "https", "protocol": "TCP"}],
        },
    }


def weakenings(context: Context) -> tuple[str, ...]:
    return (TLS_12,) if context.spec.mtls.min_tls_version == "1.2" else ()


def check(
    context: Context,
    deployment: Manifest | None,
    live_service: Manifest | None,
    sidecar_config: Manifest | None,
    certificate: CertificateInfo | None,
) -> ControlResult:
    problems = []
    if ((sidecar_config or {}).get("data") or {}).get("nginx.conf") != nginx_conf(context):
        problems.append(
            f"ConfigMap {context.owner.child(SIDECAR_PURPOSE)} does not hold the operator's nginx.conf"
        )
    if deployment is None:
        problems.append("the model's Deployment does not exist")
    else:
        containers = deployment["spec"]["template"]["spec"].get("containers") or []
        sidecar = next((item for item in containers if item.get("name") == SIDECAR), None)
        if sidecar is None:
            problems.append(f"the pods have no {SIDECAR} sidecar")
        elif sidecar.get("image") != context.config.sidecar_image:
            problems.append(f"the {SIDECAR} sidecar runs {sidecar.get('image')}, not the configured image")
    if live_service is None:
        problems.append(f"Service {context.owner.name} does not exist")
    else:
        spec = live_service.get("spec") or {}
        ports = spec.get("ports") or []
        if spec.get("type", "ClusterIP") != "ClusterIP":
            problems.append(f"Service {context.owner.name} is exposed as {spec.get('type')}")
        if [(port.get("port"), port.get("targetPort")) for port in ports] != [(SERVICE_PORT, "https")]:
            problems.append(f"Service {context.owner.name} exposes ports other than the TLS port")
    if certificate is None:
        problems.append(f"Secret {context.owner.child(TLS_PURPOSE)} holds no readable certificate")
    elif certificate.not_after <= context.now:
        problems.append(f"the server certificate expired at {certificate.not_after.isoformat()}")
    if problems:
        return ControlResult(NAME, "Fail", "MTLSNotEnforced", "; ".join(problems))
    if weakened := weakenings(context):
        return ControlResult(
            NAME,
            "Weakened",
            TLS_12,
            "spec.mtls.minTLSVersion 1.2 accepts TLS 1.2 (AEAD ciphers only)",
            weakened,
        )
    return ControlResult(
        NAME, "Pass", "MutualTLS", "TLS 1.3, client certificates required, declared clients only"
    )
