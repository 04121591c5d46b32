"""The sidecar's rendered nginx.conf. What nginx does with it is proven in tests/mtls."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any

import pytest

from securemodels.desired import nginx
from securemodels.desired.nginx import RateLimit, SidecarPaths, Traffic, render_nginx_conf

IDENTITIES = ("gateway.ml-gw", "batch-scorer.ml-jobs")
MAP_OPENING = '    map "$ssl_client_verify $ssl_client_s_dn" $securemodels_client_identity'


def render(**overrides: Any) -> str:
    arguments: dict[str, Any] = {
        "model_port": 8080,
        "health_path": "/health/ready",
        "min_tls_version": "1.3",
        "client_identities": IDENTITIES,
    }
    return render_nginx_conf(**{**arguments, **overrides})


def directives(conf: str, name: str) -> list[str]:
    """Arguments of every `name ...;` directive, in order."""
    return [match.group(1) for match in re.finditer(rf"^\s*{name}\s+([^;{{]*);", conf, re.MULTILINE)]


def block(conf: str, opening: str) -> str:
    """The text of the block that starts with `opening {`, up to its matching brace."""
    start = conf.index(opening + " {")
    depth = 0
    for index in range(start, len(conf)):
        depth += {"{": 1, "}": -1}.get(conf[index], 0)
        if depth == 0 and conf[index] == "}":
            return conf[start : index + 1]
    raise AssertionError(f"unbalanced block {opening}")


def tls_server(conf: str) -> str:
    return block(conf[conf.index("    server {") :], "server")


def health_server(conf: str) -> str:
    second = conf.index("    server {", conf.index("    server {") + 1)
    return block(conf[second:], "server")


def test_main_context_fits_a_read_only_container() -> None:
    conf = render(paths=SidecarPaths(tls_dir="/certs", tmp_dir="/scratch"))

    assert directives(conf, "daemon") == ["off"]
    assert directives(conf, "pid") == ["/scratch/nginx.pid"]
    assert directives(conf, "error_log") == ["stderr crit"]  # below it, lines carry the query string
    assert directives(conf, "access_log")[0] == "/dev/stdout securemodels"
    temp_paths = {
        name: directives(conf, f"{name}_temp_path")
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    }
    assert temp_paths == {name: [f"/scratch/{name}"] for name in temp_paths}
    assert directives(conf, "server_tokens") == ["off"]
    assert "include" not in conf


def test_every_file_nginx_touches_is_under_the_given_directories() -> None:
    conf = render(paths=SidecarPaths(tls_dir="/run/x/tls/", tmp_dir="/var/tmp/ngx"))
    file_directives = ("pid", "ssl_certificate", "ssl_certificate_key", "ssl_client_certificate")
    files = [value for name in file_directives for value in directives(conf, name)]
    files += [value for value in directives(conf, r"\w+_temp_path")]

    assert sorted(files) == sorted(
        [
            "/var/tmp/ngx/nginx.pid",
            "/run/x/tls/tls.crt",
            "/run/x/tls/tls.key",
            "/run/x/tls/ca.crt",
            *(f"/var/tmp/ngx/{name}" for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")),
        ]
    )


def test_default_paths_are_the_pod_layout() -> None:
    conf = render()
    assert directives(conf, "ssl_certificate") == ["/etc/securemodels/tls/tls.crt"]
    assert directives(conf, "pid") == ["/tmp/nginx/nginx.pid"]


def test_tls_13_only_by_default() -> None:
    server = tls_server(render())

    assert directives(server, "ssl_protocols") == ["TLSv1.3"]
    assert directives(server, "ssl_ciphers") == []


def test_tls_12_option_allows_only_ecdhe_aead_ciphers() -> None:
    server = tls_server(render(min_tls_version="1.2"))
    [ciphers] = directives(server, "ssl_ciphers")

    assert directives(server, "ssl_protocols") == ["TLSv1.2 TLSv1.3"]
    assert ciphers.split(":") == list(nginx.TLS12_CIPHERS)
    for cipher in ciphers.split(":"):
        assert cipher.startswith(("ECDHE-ECDSA-", "ECDHE-RSA-"))
        assert cipher.endswith(("-GCM-SHA256", "-GCM-SHA384", "-CHACHA20-POLY1305"))


def test_client_certificate_is_required_and_sessions_are_not_resumed() -> None:
    server = tls_server(render(tls_port=9443, paths=SidecarPaths(tls_dir="/t")))

    assert directives(server, "listen") == ["9443 ssl"]
    assert directives(server, "ssl_verify_client") == ["on"]
    assert directives(server, "ssl_client_certificate") == ["/t/ca.crt"]
    assert directives(server, "ssl_verify_depth") == ["1"]
    assert directives(server, "ssl_session_tickets") == ["off"]
    assert directives(server, "ssl_session_cache") == ["off"]


def test_identities_map_matches_exact_verified_subjects() -> None:
    conf = render(client_identities=["gateway.ml-gw", "a-b.c", "gateway.ml-gw"])
    identity_map = block(conf, MAP_OPENING)

    entries = re.findall(r'^\s*("[^"]*")\s+("[^"]*");', identity_map, re.MULTILINE)
    assert entries == [
        ('"~^SUCCESS CN=a-b\\.c$"', '"a-b.c"'),
        ('"~^SUCCESS CN=gateway\\.ml-gw$"', '"gateway.ml-gw"'),
    ]
    assert directives(identity_map, "default") == ['""']


def test_identity_order_does_not_change_the_file() -> None:
    assert render(client_identities=IDENTITIES) == render(client_identities=tuple(reversed(IDENTITIES)))


def test_allow_list_is_always_enforced() -> None:
    for identities in ((), IDENTITIES):
        server = tls_server(render(client_identities=identities))
        assert 'if ($securemodels_client_identity = "") {\n            return 403;\n        }' in server


def test_without_clients_the_map_admits_nobody() -> None:
    identity_map = block(render(client_identities=()), MAP_OPENING)
    assert identity_map.splitlines()[1:] == ['        default "";', "    }"]


def test_model_gets_the_verified_identity_and_nothing_else_from_the_client() -> None:
    conf = render(model_port=7000)
    location = block(tls_server(conf), "location /")

    assert directives(location, "proxy_pass") == ["http://securemodels_model"]
    upstream = block(conf, "upstream securemodels_model")
    assert directives(upstream, "server") == ["127.0.0.1:7000"]
    assert directives(upstream, "keepalive") == ["16"]
    assert directives(location, "proxy_http_version") == ["1.1"]  # keep-alive to the model needs 1.1
    assert directives(location, "proxy_set_header") == [
        'Connection ""',
        "X-Client-Identity $securemodels_client_identity",
    ]
    assert directives(location, "proxy_buffering") == ["off"]  # streamed answers are not held back


def test_health_server_answers_three_paths_only() -> None:
    server = health_server(render(model_port=7000, health_port=9081, health_path="/v2/health/ready"))

    assert directives(server, "listen") == ["9081"]
    assert "ssl" not in server
    assert directives(block(server, "location = /healthz"), "proxy_pass") == [
        "http://securemodels_model/v2/health/ready"
    ]
    # Liveness asks the readiness path unless the model has a path of its own for it.
    assert directives(block(server, "location = /livez"), "proxy_pass") == [
        "http://securemodels_model/v2/health/ready"
    ]
    assert directives(block(server, "location = /sidecar-healthz"), "return") == ['200 "ok\\n"']
    assert directives(block(server, "location /"), "return") == ["404"]
    assert directives(server, "access_log") == ["off"]


def test_liveness_has_a_path_of_its_own_when_given() -> None:
    server = health_server(render(health_path="/v1/health/ready", liveness_path="/v1/health/live"))

    assert directives(block(server, "location = /healthz"), "proxy_pass") == [
        "http://securemodels_model/v1/health/ready"
    ]
    assert directives(block(server, "location = /livez"), "proxy_pass") == [
        "http://securemodels_model/v1/health/live"
    ]


def test_a_hung_model_fails_its_health_check_in_seconds() -> None:
    """Not after the long wait an inference request may get: the kubelet gives up first otherwise."""
    server = health_server(render())

    for directive in ("proxy_connect_timeout", "proxy_read_timeout", "proxy_send_timeout"):
        assert directives(server, directive) == [f"{nginx.HEALTH_TIMEOUT_SECONDS}s"]


@pytest.mark.parametrize(
    ("address", "tls_listen", "health_listen"),
    [("127.0.0.1", "127.0.0.1:8443 ssl", "127.0.0.1:8081"), ("::1", "[::1]:8443 ssl", "[::1]:8081")],
)
def test_listen_address(address: str, tls_listen: str, health_listen: str) -> None:
    conf = render(listen_address=address)
    assert directives(tls_server(conf), "listen") == [tls_listen]
    assert directives(health_server(conf), "listen") == [health_listen]


def test_default_ports_are_the_api_ones() -> None:
    conf = render()
    assert directives(tls_server(conf), "listen") == ["8443 ssl"]
    assert directives(health_server(conf), "listen") == ["8081"]


@pytest.mark.parametrize(
    "identity",
    [
        'gateway"; return 200; #',
        "gateway ml-gw",
        "Gateway.ml-gw",
        "gateway{x}",
        "gateway$host",
        "gateway\n",
        "gateway\\.x",
        "gateway;",
        "",
        "-gateway",
        "gateway.",
        ".*",
        "CN=gateway",
    ],
)
def test_identities_that_could_inject_nginx_syntax_are_refused(identity: str) -> None:
    with pytest.raises(ValueError, match="client identity"):
        render(client_identities=["gateway.ml-gw", identity])


@pytest.mark.parametrize(
    "overrides",
    [
        {"health_path": "healthz"},
        {"health_path": "/healthz; return 200"},
        {"health_path": "/$request_uri"},
        {"liveness_path": "/live; return 200"},
        {"liveness_path": "live"},
        {"paths": SidecarPaths(tls_dir="relative")},
        {"paths": SidecarPaths(tmp_dir="/tmp/a b")},
        {"paths": SidecarPaths(tls_dir="/etc/{x}")},
        {"model_port": 8443},
        {"health_port": 8080},
        {"model_port": 0},
        {"tls_port": 70000},
        {"listen_address": "localhost"},
        {"min_tls_version": "1.1"},
    ],
)
def test_invalid_parameters_are_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        render(**overrides)


def test_braces_balance() -> None:
    conf = render(min_tls_version="1.2")
    assert conf.count("{") == conf.count("}")
    assert block(conf, "http").endswith("}")


# ------------------------------------------------------------------------------- streaming and limits

GRPC = Traffic(protocol="GRPC", health_port=8000)


def model_location(conf: str) -> str:
    return block(tls_server(conf), "location /")


def test_streams_both_ways_and_the_model_cannot_turn_buffering_back_on() -> None:
    location = model_location(render())

    assert directives(location, "proxy_request_buffering") == ["off"]  # bodies stream, never to disk
    assert directives(location, "proxy_buffering") == ["off"]
    assert directives(location, "proxy_http_version") == ["1.1"]  # chunked answers pass as chunks
    [ignored] = directives(location, "proxy_ignore_headers")
    assert set(ignored.split()) == set(nginx.MODEL_CONTROL_HEADERS)
    assert {"X-Accel-Buffering", "X-Accel-Redirect"} <= set(ignored.split())
    assert "gzip" not in render()  # nginx's default, off: compression would hold bytes back


def test_request_body_limit_and_model_timeouts() -> None:
    default = tls_server(render())
    assert directives(default, "client_max_body_size") == [str(64 * 1024 * 1024)]
    assert directives(model_location(render()), "proxy_read_timeout") == ["300s"]

    conf = render(traffic=Traffic(max_body_bytes=1024, response_timeout_seconds=7))
    assert directives(tls_server(conf), "client_max_body_size") == ["1024"]
    assert directives(model_location(conf), "proxy_read_timeout") == ["7s"]
    assert directives(model_location(conf), "proxy_send_timeout") == ["7s"]
    grpc = model_location(render(model_port=8001, traffic=replace(GRPC, response_timeout_seconds=7)))
    assert directives(grpc, "grpc_read_timeout") == directives(grpc, "grpc_send_timeout") == ["7s"]


def test_grpc_mode_speaks_http2_to_the_client_and_grpc_to_the_model() -> None:
    conf = render(model_port=8001, traffic=GRPC)
    location = model_location(conf)

    assert directives(tls_server(conf), "listen") == ["8443 ssl http2"]
    assert directives(location, "grpc_pass") == ["grpc://securemodels_model"]
    assert directives(location, "grpc_set_header") == ["X-Client-Identity $securemodels_client_identity"]
    assert set(directives(location, "grpc_ignore_headers")[0].split()) == set(nginx.MODEL_CONTROL_HEADERS)
    assert "proxy_pass" not in tls_server(conf)
    assert directives(block(conf, "upstream securemodels_model"), "server") == ["127.0.0.1:8001"]


def tls_settings(conf: str) -> list[tuple[str, list[str]]]:
    server = tls_server(conf)
    names = ("ssl_[a-z_]+", "if")
    return [(name, directives(server, name)) for name in names] + [
        ("identity check", [line for line in server.splitlines() if "securemodels_client_identity =" in line])
    ]


@pytest.mark.parametrize("min_tls_version", ["1.3", "1.2"])
def test_grpc_mode_keeps_the_certificates_and_the_allow_list_of_http_mode(min_tls_version: str) -> None:
    http = render(model_port=8001, min_tls_version=min_tls_version)
    grpc = render(model_port=8001, min_tls_version=min_tls_version, traffic=GRPC)

    assert tls_settings(grpc) == tls_settings(http)
    assert block(grpc, MAP_OPENING) == block(http, MAP_OPENING)
    assert 'if ($securemodels_client_identity = "") {\n            return 403;\n        }' in tls_server(grpc)


def test_health_goes_to_its_own_port_when_given() -> None:
    conf = render(model_port=8001, health_path="/v2/health/ready", traffic=GRPC)

    assert directives(block(conf, "upstream securemodels_model_health"), "server") == ["127.0.0.1:8000"]
    assert directives(block(health_server(conf), "location = /healthz"), "proxy_pass") == [
        "http://securemodels_model_health/v2/health/ready"
    ]
    assert "securemodels_model_health" not in render()


def refusal_locations(conf: str) -> dict[int, str]:
    server = tls_server(conf)
    return {refusal.codes[0]: block(server, f"location {refusal.location}") for refusal in nginx.REFUSALS}


def test_every_error_the_sidecar_makes_has_its_own_answer() -> None:
    server = tls_server(render())
    pages = directives(server, "error_page")

    assert pages == [
        " ".join(str(code) for code in refusal.codes) + f" {refusal.location}" for refusal in nginx.REFUSALS
    ]
    raised = {code for refusal in nginx.REFUSALS for code in refusal.codes}
    assert {400, 403, 413, 429, 495, 496, 502, 504} <= raised
    assert directives(server, "limit_req_status") == ["429"]


def test_http_refusals_are_fixed_json_without_upstream_details() -> None:
    for code, location in refusal_locations(render()).items():
        [(status, body)] = re.findall(r"^\s*return (\d+) '(.*)';$", location, re.MULTILINE)
        refusal = next(item for item in nginx.REFUSALS if item.codes[0] == code)
        assert int(status) == refusal.status
        assert json.loads(body.removesuffix("\\n")) == {"error": refusal.message}
        assert "$" not in location  # no variable: nothing of the request, the model or nginx
        assert directives(location, "default_type") == ["application/json"]
    assert directives(refusal_locations(render())[429], "add_header") == ['Retry-After "1" always']


def test_grpc_refusals_are_grpc_statuses_logged_with_the_http_status() -> None:
    conf = render(model_port=8001, traffic=GRPC)
    assert directives(tls_server(conf), "error_page")[0] == "400 494 497 =200 @securemodels_refused_400"
    for code, location in refusal_locations(conf).items():
        refusal = next(item for item in nginx.REFUSALS if item.codes[0] == code)
        assert directives(location, "return") == ["200"]
        assert directives(location, "default_type") == ["application/grpc"]
        assert f'grpc-status "{refusal.grpc_status}" always' in directives(location, "add_header")
        assert directives(location, "set") == [f"$securemodels_refused {refusal.status}"]


def test_rate_limit_is_a_bucket_per_verified_identity() -> None:
    assert "limit_req" not in model_location(render())

    conf = render(traffic=Traffic(rate_limit=RateLimit(requests_per_second=20, burst=40)))
    assert directives(conf, "limit_req_zone") == [
        "$securemodels_client_identity zone=securemodels_clients:1m rate=20r/s"
    ]
    assert directives(model_location(conf), "limit_req") == ["zone=securemodels_clients burst=40 nodelay"]
    # Only the model's location counts requests: refusals and the health server do not.
    assert directives(conf, "limit_req") == directives(model_location(conf), "limit_req")
    strict = render(traffic=Traffic(rate_limit=RateLimit(requests_per_second=1, burst=0)))
    assert directives(model_location(strict), "limit_req") == ["zone=securemodels_clients nodelay"]


def log_format(conf: str) -> str:
    start = conf.index("log_format securemodels")
    return conf[start : conf.index(";\n", start)]


def test_access_log_names_the_client_and_never_the_query_headers_or_body() -> None:
    for conf in (render(), render(model_port=8001, traffic=GRPC)):
        # The line with every variable replaced by a value must be a JSON object.
        line = "".join(re.findall(r"'([^']*)'", log_format(conf)))
        fields = json.loads(re.sub(r"\$\w+", "0", line))
        assert set(fields) == {
            "time", "client", "client_verify", "client_dn", "remote_addr", "tls", "protocol", "method",
            "path", "status", "request_bytes", "response_bytes", "duration",
        }  # fmt: skip
        variables = set(re.findall(r"\$(\w+)", log_format(conf)))
        assert not variables & {"request", "request_uri", "args", "query_string", "request_body", "uri"}
        assert not [name for name in variables if name.startswith(("http_", "arg_", "cookie_", "sent_http"))]
        path_map = block(conf, "    map $request_uri $securemodels_path")
        assert '"~^(?<securemodels_path_only>[^?]*)" $securemodels_path_only;' in path_map
        assert directives(conf, "access_log")[0] == "/dev/stdout securemodels"


def test_access_log_can_be_turned_off() -> None:
    for traffic in (Traffic(access_log=False), replace(GRPC, access_log=False)):
        conf = render(model_port=8001, traffic=traffic)
        assert directives(conf, "access_log") == ["off", "off"]  # the http level and the health server
        assert "log_format" not in conf


@pytest.mark.parametrize(
    "traffic",
    [
        Traffic(protocol="GRPC"),
        Traffic(protocol="GRPC", health_port=8001),
        Traffic(health_port=0),
        Traffic(max_body_bytes=0),
        Traffic(response_timeout_seconds=0),
        Traffic(rate_limit=RateLimit(0, 1)),
        Traffic(rate_limit=RateLimit(1, -1)),
        Traffic(protocol="HTTP2"),  # type: ignore[arg-type]
    ],
    ids=["gRPC without health port", "gRPC health on the gRPC port", "health port 0", "no body", "no wait",
         "no rate", "negative burst", "unknown protocol"],
)  # fmt: skip
def test_invalid_traffic_is_refused(traffic: Traffic) -> None:
    with pytest.raises(ValueError):
        render(model_port=8001, traffic=traffic)
