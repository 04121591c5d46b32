"""The mTLS sidecar's complete nginx.conf.

nginx is the only listener of a model pod that other pods can reach: it terminates TLS, requires a
client certificate from the operator's CA, admits only the declared client identities and hands the
request to the model on 127.0.0.1 with the verified identity in a header. The file rendered here is the
whole configuration, with no includes and nothing taken from the image, so the handshake tests run
exactly what the pod runs. The container's root filesystem is read-only: everything nginx writes goes
under one temporary directory.

Between the client and the model nothing is held back: bodies and answers stream, so a token reaches the
client when the model writes it. What the sidecar refuses itself (no certificate, an undeclared
identity, a body too large, a client over its rate, a model down or too slow) it answers with a fixed
message, and every request leaves one JSON log line that names the client and holds no query string,
header value or body.

Pure: it returns text; the caller puts it in a ConfigMap.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from securemodels import pki
from securemodels.api.v1alpha1 import (
    DEFAULT_MAX_REQUEST_BODY,
    DEFAULT_RESPONSE_TIMEOUT,
    HEALTH_PORT,
    TLS_PORT,
    ServingProtocol,
    byte_size,
    seconds,
)

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
QUARANTINE_FILE = "quarantined"

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
    config_dir: str = "/etc/securemodels/nginx"  # nginx.conf, and QUARANTINE_FILE during a quarantine


@dataclass(frozen=True)
class RateLimit:
    """A token bucket per client identity: refilled at `requests_per_second`, holding `burst`."""

    requests_per_second: int
    burst: int


@dataclass(frozen=True)
class Traffic:
    """How requests pass the door, resolved from spec.serving, with the API's defaults."""

    protocol: ServingProtocol = "HTTP"
    max_body_bytes: int = byte_size(DEFAULT_MAX_REQUEST_BODY)
    response_timeout_seconds: int = seconds(DEFAULT_RESPONSE_TIMEOUT)
    rate_limit: RateLimit | None = None
    access_log: bool = True
    # The model's HTTP port for the health path, when it is not the serving port (gRPC).
    health_port: int | None = None


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


@dataclass(frozen=True)
class Refusal:
    """An answer the sidecar gives itself, never the model: a fixed message and nothing about the model,
    the upstream or nginx. `codes` are what nginx raises (495 and 496 are its client-certificate
    errors, sent as 400); gRPC clients get the same as a gRPC status in a trailers-only response."""

    codes: tuple[int, ...]
    status: int
    message: str
    grpc_status: int

    @property
    def location(self) -> str:
        return f"@securemodels_refused_{self.codes[0]}"


# gRPC status codes: 3 INVALID_ARGUMENT, 4 DEADLINE_EXCEEDED, 7 PERMISSION_DENIED, 8 RESOURCE_EXHAUSTED,
# 13 INTERNAL, 14 UNAVAILABLE, 16 UNAUTHENTICATED.
REFUSALS = (
    Refusal((400, 494, 497), 400, "bad request", 3),
    Refusal((495,), 400, "client certificate not accepted", 16),
    Refusal((496,), 400, "client certificate required", 16),
    Refusal((403,), 403, "client not allowed", 7),
    Refusal((413,), 413, "request body too large", 8),
    Refusal((414,), 414, "request line too long", 3),
    Refusal((429,), 429, "rate limit exceeded", 8),
    Refusal((500,), 500, "internal error", 13),
    Refusal((502,), 502, "model unavailable", 14),
    Refusal((504,), 504, "model did not answer in time", 4),
)
RATE_LIMITED = 429
# Headers a model could send to steer nginx: turn buffering back on, redirect internally, slow the answer.
MODEL_CONTROL_HEADERS = (
    "X-Accel-Redirect",
    "X-Accel-Buffering",
    "X-Accel-Limit-Rate",
    "X-Accel-Charset",
    "X-Accel-Expires",
)


def _refusal_pages(protocol: ServingProtocol) -> str:
    """error_page directives and their named locations, for the TLS server."""
    pages = []
    for refusal in REFUSALS:
        codes = " ".join(str(code) for code in refusal.codes)
        retry = '            add_header Retry-After "1" always;\n' if refusal.status == RATE_LIMITED else ""
        if protocol == "GRPC":
            # A gRPC answer is HTTP 200 with the gRPC status; the access log keeps the real one.
            pages.append(
                f"        error_page {codes} =200 {refusal.location};\n"
                f"        location {refusal.location} {{\n"
                f"            set $securemodels_refused {refusal.status};\n"
                "            default_type application/grpc;\n"
                f'            add_header grpc-status "{refusal.grpc_status}" always;\n'
                f'            add_header grpc-message "{refusal.message}" always;\n'
                f"{retry}"
                "            return 200;\n"
                "        }\n"
            )
        else:
            pages.append(
                f"        error_page {codes} {refusal.location};\n"
                f"        location {refusal.location} {{\n"
                "            default_type application/json;\n"
                f"{retry}"
                f'            return {refusal.status} \'{{"error":"{refusal.message}"}}\\n\';\n'
                "        }\n"
            )
    return "".join(pages)


def _model_location(protocol: ServingProtocol, traffic: Traffic) -> str:
    limit = ""
    if traffic.rate_limit is not None:
        # nodelay: a burst is served at once, not spread out; nginx refuses "burst=0", its default.
        burst = f" burst={traffic.rate_limit.burst}" if traffic.rate_limit.burst else ""
        limit = f"            limit_req zone=securemodels_clients{burst} nodelay;\n"
    timeout = f"{traffic.response_timeout_seconds}s"
    ignored = " ".join(MODEL_CONTROL_HEADERS)
    if protocol == "GRPC":
        return (
            "        location / {\n"
            f"{limit}"
            "            grpc_pass grpc://securemodels_model;\n"
            f"            grpc_set_header {IDENTITY_HEADER} $securemodels_client_identity;\n"
            f"            grpc_ignore_headers {ignored};\n"
            f"            grpc_read_timeout {timeout};\n"
            f"            grpc_send_timeout {timeout};\n"
            "        }\n"
        )
    return (
        "        location / {\n"
        f"{limit}"
        "            proxy_pass http://securemodels_model;\n"
        "            proxy_http_version 1.1;\n"
        '            proxy_set_header Connection "";\n'
        f"            proxy_set_header {IDENTITY_HEADER} $securemodels_client_identity;\n"
        "            # Streamed both ways: the body reaches the model as it arrives (and never the disk),\n"
        "            # the answer (server-sent events, tokens) reaches the client as the model writes it.\n"
        "            proxy_request_buffering off;\n"
        "            proxy_buffering off;\n"
        f"            proxy_ignore_headers {ignored};\n"
        f"            proxy_read_timeout {timeout};\n"
        f"            proxy_send_timeout {timeout};\n"
        "        }\n"
    )


def _access_log(protocol: ServingProtocol, enabled: bool) -> str:
    """One JSON line per request on stdout. The path is the request's own without its query, and no
    header value or body is logged: prompts and tokens are personal data."""
    if not enabled:
        return "    access_log off;\n"
    # gRPC refusals go out as HTTP 200 with a gRPC status: log the status the sidecar meant.
    status = "$securemodels_status" if protocol == "GRPC" else "$status"
    status_map = (
        '    map $securemodels_refused $securemodels_status {\n        "" $status;\n'
        "        default $securemodels_refused;\n    }\n"
        if protocol == "GRPC"
        else ""
    )
    return (
        '    map $request_uri $securemodels_path {\n        "~^(?<securemodels_path_only>[^?]*)" '
        "$securemodels_path_only;\n    }\n"
        f"{status_map}"
        '    log_format securemodels escape=json \'{"time":"$time_iso8601",'
        '"client":"$securemodels_client_identity",\'\n'
        '        \'"client_verify":"$ssl_client_verify","client_dn":"$ssl_client_s_dn",'
        '"remote_addr":"$remote_addr",\'\n'
        '        \'"tls":"$ssl_protocol","protocol":"$server_protocol",'
        '"method":"$request_method","path":"$securemodels_path",\'\n'
        f'        \'"status":{status},"request_bytes":$request_length,'
        '"response_bytes":$bytes_sent,"duration":$request_time}\';\n'
        "    access_log /dev/stdout securemodels;\n"
    )


def _check_traffic(traffic: Traffic, model_port: int) -> None:
    if traffic.protocol not in ("HTTP", "GRPC"):
        raise ValueError(f"unsupported protocol {traffic.protocol!r}")
    if traffic.max_body_bytes < 1:
        raise ValueError(f"max_body_bytes {traffic.max_body_bytes} must be positive")
    if traffic.response_timeout_seconds < 1:
        raise ValueError(f"response_timeout_seconds {traffic.response_timeout_seconds} must be positive")
    if traffic.rate_limit is not None and (
        traffic.rate_limit.requests_per_second < 1 or traffic.rate_limit.burst < 0
    ):
        raise ValueError(f"invalid rate limit {traffic.rate_limit}")
    if traffic.health_port is not None:
        _check_port(traffic.health_port, "health_port")
    if traffic.protocol == "GRPC" and traffic.health_port in (None, model_port):
        raise ValueError("a gRPC model needs an HTTP health port other than its gRPC port")


def render_nginx_conf(
    *,
    model_port: int,
    health_path: str,
    liveness_path: str | None = None,
    min_tls_version: Literal["1.3", "1.2"],
    client_identities: Sequence[str],
    traffic: Traffic = Traffic(),
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
    _check_traffic(traffic, model_port)
    health_path = _check_path(health_path, "health_path")
    liveness_path = _check_path(liveness_path or health_path, "liveness_path")
    tls_dir = _check_dir(paths.tls_dir, "tls_dir")
    tmp_dir = _check_dir(paths.tmp_dir, "tmp_dir")
    config_dir = _check_dir(paths.config_dir, "config_dir")
    identity_map = _identity_map(client_identities)
    protocol = traffic.protocol
    if min_tls_version == "1.2":
        tls_versions = (
            "        ssl_protocols TLSv1.2 TLSv1.3;\n"
            f"        ssl_ciphers {':'.join(TLS12_CIPHERS)};\n"
            "        ssl_prefer_server_ciphers on;\n"
        )
    else:
        tls_versions = "        ssl_protocols TLSv1.3;\n"
    rate_limit_zone = (
        "    # One bucket per verified identity; refused and undeclared requests never reach it.\n"
        "    limit_req_zone $securemodels_client_identity zone=securemodels_clients:1m "
        f"rate={traffic.rate_limit.requests_per_second}r/s;\n"
        if traffic.rate_limit is not None
        else ""
    )
    health_upstream, health_target = "", "http://securemodels_model"
    if traffic.health_port is not None:
        health_upstream = (
            "    upstream securemodels_model_health {\n"
            f"        server 127.0.0.1:{traffic.health_port};\n"
            "    }\n\n"
        )
        health_target = "http://securemodels_model_health"
    # HTTP/2 on the TLS port for gRPC; "listen ... http2" is the form nginx before 1.25 knows.
    http2 = " http2" if protocol == "GRPC" else ""
    # One worker: a sidecar in front of one model does not need one per node CPU, which is what
    # "auto" would start regardless of the pod's CPU limit.
    # The error log stays at "crit": nginx adds the request line, query string included, to every
    # message below it. The access log says what failed and for whom.
    # Session caches and tickets are off, so every connection presents and verifies its client
    # certificate: a rotated or expired certificate cannot ride on an older session.
    # The health server has no access log: kubelet probes every few seconds would drown the requests.
    return f"""\
# nginx.conf of the secure-model-operator mTLS sidecar. Generated: edit the SecureModelDeployment instead.
daemon off;
worker_processes 1;
pid {tmp_dir}/nginx.pid;
error_log stderr crit;

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

{identity_map}
{_access_log(protocol, traffic.access_log)}{rate_limit_zone}
    # Kept-alive connections to the model: no TCP handshake per request on the pod's loopback.
    upstream securemodels_model {{
        server 127.0.0.1:{model_port};
        keepalive 16;
    }}

{health_upstream}    server {{
        listen {_listen(listen_address, tls_port)} ssl{http2};
        ssl_certificate {tls_dir}/{CERT_FILE};
        ssl_certificate_key {tls_dir}/{KEY_FILE};
{tls_versions}        ssl_session_cache off;
        ssl_session_tickets off;
        ssl_client_certificate {tls_dir}/{CLIENT_CA_FILE};
        ssl_verify_client on;
        ssl_verify_depth 1;
        client_max_body_size {traffic.max_body_bytes};
        limit_req_status {RATE_LIMITED};

        if ($securemodels_client_identity = "") {{
            return 403;
        }}
        # Looked for at every request, so a quarantine takes effect without a restart.
        if (-f {config_dir}/{QUARANTINE_FILE}) {{
            return 403;
        }}

{_model_location(protocol, traffic)}
{_refusal_pages(protocol)}    }}

    server {{
        listen {_listen(listen_address, health_port)};
        access_log off;

        proxy_connect_timeout {HEALTH_TIMEOUT_SECONDS}s;
        proxy_read_timeout {HEALTH_TIMEOUT_SECONDS}s;
        proxy_send_timeout {HEALTH_TIMEOUT_SECONDS}s;

        location = {MODEL_HEALTH_PATH} {{
            proxy_pass {health_target}{health_path};
        }}

        location = {MODEL_LIVENESS_PATH} {{
            proxy_pass {health_target}{liveness_path};
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
