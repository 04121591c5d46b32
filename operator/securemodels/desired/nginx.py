"""The mTLS sidecar's complete nginx.conf.

nginx is the only listener of a model pod that other pods can reach: it terminates TLS, requires a
client certificate from the operator's CA, admits only the declared client identities and hands the
request to the model on 127.0.0.1 with the verified identity in a header. The file rendered here is the
whole configuration, with no includes and nothing taken from the image, so the handshake tests run
exactly what the pod runs. The container's root filesystem is read-only: everything nginx writes goes
under one temporary directory.

Pure: it returns text; the caller puts it in a ConfigMap.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from securemodels import pki
from securemodels.api.v1alpha1 import HEALTH_PORT, TLS_PORT

# The TLS Secret is mounted as a directory: its keys are the file names.
CERT_FILE = pki.CERT_KEY
KEY_FILE = pki.PRIVATE_KEY_KEY
CLIENT_CA_FILE = pki.CA_BUNDLE_KEY
SIDECAR_HEALTH_PATH = "/sidecar-healthz"
# What the kubelet asks the health server about the model: readiness (and startup), and liveness.
MODEL_HEALTH_PATH = "/healthz"
MODEL_LIVENESS_PATH = "/livez"
# A health check the model does not answer within this long fails; the kubelet gives up a second later.
HEALTH_TIMEOUT_SECONDS = 4
IDENTITY_HEADER = "X-Client-Identity"

# ECDHE key exchange with AEAD ciphers only, for TLS 1.2 when the SMD opts into it. TLS 1.3 suites are
# all AEAD already; this list does not affect them.
TLS12_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
)

# Identities appear inside an nginx string and a regular expression; this alphabet has no character
# that means anything to either, except the dot, which is escaped.
_IDENTITY = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?")
# Paths appear unquoted in directives: no spaces, quotes, semicolons, braces or variables.
_PATH = re.compile(r"/[A-Za-z0-9/._-]*")


@dataclass(frozen=True)
class SidecarPaths:
    """Where the sidecar finds its certificates and writes its files. The defaults are the pod layout."""

    tls_dir: str = "/etc/securemodels/tls"  # tls.crt, tls.key and ca.crt (the client-CA bundle)
    tmp_dir: str = "/tmp/nginx"  # must exist and be writable: pid file and request buffers


def _check_path(path: str, what: str) -> str:
    if not _PATH.fullmatch(path):
        raise ValueError(f"{what} {path!r} must be an absolute path of letters, digits and ._-/")
    return path


def _check_dir(path: str, what: str) -> str:
    """The directory without its trailing slash, ready to have "/<file>" appended."""
    return _check_path(path, what).rstrip("/")


def _check_port(port: int, what: str) -> int:
    if not 1 <= port <= 65535:
        raise ValueError(f"{what} {port} is not a TCP port")
    return port


def _listen(address: str | None, port: int) -> str:
    if address is None:
        return str(port)  # nginx's default: every IPv4 address of the pod
    parsed = ipaddress.ip_address(address)
    return f"[{parsed}]:{port}" if parsed.version == 6 else f"{parsed}:{port}"


def _regex_literal(identity: str) -> str:
    # The dot is the only character of the identity alphabet that a regular expression reads specially.
    return identity.replace(".", "\\.")


def _identity_map(identities: Sequence[str]) -> str:
    """nginx `map` from the verified client certificate to the identity, "" for anything not allowed.

    The key joins the verification result and the subject DN, so only a verified certificate can match.
    Regular expressions rather than plain strings because nginx compares plain map keys without regard
    to case, and the identity must match exactly.
    """
    for identity in identities:
        if len(identity) > 253 or not _IDENTITY.fullmatch(identity):
            raise ValueError(f"client identity {identity!r} must be lowercase letters, digits, '.' and '-'")
    entries = "".join(
        f'        "~^SUCCESS CN={_regex_literal(identity)}$" "{identity}";\n'
        for identity in sorted(set(identities))
    )
    return (
        '    map "$ssl_client_verify $ssl_client_s_dn" $securemodels_client_identity {\n'
        '        default "";\n'
        f"{entries}"
        "    }\n"
    )


def render_nginx_conf(
    *,
    model_port: int,
    health_path: str,
    liveness_path: str | None = None,
    min_tls_version: Literal["1.3", "1.2"],
    client_identities: Sequence[str],
    tls_port: int = TLS_PORT,
    health_port: int = HEALTH_PORT,
    paths: SidecarPaths = SidecarPaths(),
    listen_address: str | None = None,
) -> str:
    """The sidecar's nginx.conf.

    `client_identities` are the CNs allowed through (e.g. "gateway.ml-gw"); with none, every request is
    refused with 403. `health_path` answers readiness, `liveness_path` (by default the same) liveness.
    `listen_address` is the one address both servers listen on; by default they listen on every
    address, since other pods and the kubelet connect to the pod IP.
    """
    ports = {
        "model_port": _check_port(model_port, "model_port"),
        "tls_port": _check_port(tls_port, "tls_port"),
        "health_port": _check_port(health_port, "health_port"),
    }
    if len(set(ports.values())) != len(ports):
        raise ValueError(f"the sidecar's ports must differ: {ports}")
    if min_tls_version not in ("1.3", "1.2"):
        raise ValueError(f"unsupported minimum TLS version {min_tls_version!r}")
    health_path = _check_path(health_path, "health_path")
    liveness_path = _check_path(liveness_path or health_path, "liveness_path")
    tls_dir = _check_dir(paths.tls_dir, "tls_dir")
    tmp_dir = _check_dir(paths.tmp_dir, "tmp_dir")
    identity_map = _identity_map(client_identities)
    model = "http://securemodels_model"
    if min_tls_version == "1.2":
        tls_versions = (
            "        ssl_protocols TLSv1.2 TLSv1.3;\n"
            f"        ssl_ciphers {':'.join(TLS12_CIPHERS)};\n"
            "        ssl_prefer_server_ciphers on;\n"
        )
    else:
        tls_versions = "        ssl_protocols TLSv1.3;\n"
    # One worker: a sidecar in front of one model does not need one per node CPU, which is what
    # "auto" would start regardless of the pod's CPU limit.
    # Session caches and tickets are off, so every connection presents and verifies its client
    # certificate: a rotated or expired certificate cannot ride on an older session.
    # The health server has no access log: kubelet probes every few seconds would drown the requests.
    return f"""\
# nginx.conf of the secure-model-operator mTLS sidecar. Generated: edit the SecureModelDeployment instead.
daemon off;
worker_processes 1;
pid {tmp_dir}/nginx.pid;
error_log stderr warn;

events {{
    worker_connections 1024;
}}

http {{
    server_tokens off;
    client_body_temp_path {tmp_dir}/client_body;
    proxy_temp_path {tmp_dir}/proxy;
    fastcgi_temp_path {tmp_dir}/fastcgi;
    uwsgi_temp_path {tmp_dir}/uwsgi;
    scgi_temp_path {tmp_dir}/scgi;

    log_format securemodels escape=json '{{"time":"$time_iso8601","remote_addr":"$remote_addr",'
        '"client":"$securemodels_client_identity","client_verify":"$ssl_client_verify",'
        '"client_dn":"$ssl_client_s_dn","tls":"$ssl_protocol","request":"$request",'
        '"status":$status,"bytes_sent":$body_bytes_sent,"duration":$request_time}}';
    access_log /dev/stdout securemodels;

{identity_map}
    # Kept-alive connections to the model: no TCP handshake per request on the pod's loopback.
    upstream securemodels_model {{
        server 127.0.0.1:{model_port};
        keepalive 16;
    }}

    server {{
        listen {_listen(listen_address, tls_port)} ssl;
        ssl_certificate {tls_dir}/{CERT_FILE};
        ssl_certificate_key {tls_dir}/{KEY_FILE};
{tls_versions}        ssl_session_cache off;
        ssl_session_tickets off;
        ssl_client_certificate {tls_dir}/{CLIENT_CA_FILE};
        ssl_verify_client on;
        ssl_verify_depth 1;

        if ($securemodels_client_identity = "") {{
            return 403;
        }}

        location / {{
            proxy_pass {model};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header {IDENTITY_HEADER} $securemodels_client_identity;
            # Streamed answers (server-sent events, tokens) reach the client as the model writes them.
            proxy_buffering off;
        }}
    }}

    server {{
        listen {_listen(listen_address, health_port)};
        access_log off;

        proxy_connect_timeout {HEALTH_TIMEOUT_SECONDS}s;
        proxy_read_timeout {HEALTH_TIMEOUT_SECONDS}s;
        proxy_send_timeout {HEALTH_TIMEOUT_SECONDS}s;

        location = {MODEL_HEALTH_PATH} {{
            proxy_pass {model}{health_path};
        }}

        location = {MODEL_LIVENESS_PATH} {{
            proxy_pass {model}{liveness_path};
        }}

        location = {SIDECAR_HEALTH_PATH} {{
            default_type text/plain;
            return 200 "ok\\n";
        }}

        location / {{
            return 404;
        }}
    }}
}}
"""
