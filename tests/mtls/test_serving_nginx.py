"""The door under load, with real nginx running the rendered configuration and real client certificates.

spec.serving claims: streamed answers reach the client as the model writes them and request bodies reach
the model as they arrive; a body over the limit, a model that is down or too slow, and a client over its
rate get a fixed answer from the sidecar itself; gRPC passes with the same certificates and allow-list as
HTTP; and every request leaves one log line naming the client and never the query, a header or the body.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import ssl
import time
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

import grpc
import pytest

from mtls.sidecar import (
    ALGORITHM,
    EVENT_INTERVAL_SECONDS,
    EVENTS,
    IDENTITY,
    LOOPBACK,
    SERVER_NAME,
    Certificates,
    Client,
    GrpcModel,
    ModelServer,
    Sidecar,
    StartSidecar,
    free_port,
    plain_get,
)
from securemodels import pki
from securemodels.desired.nginx import RateLimit, Traffic
from securemodels.pki import KeyPair

# The issue's bound: the first event within 150 ms of its being written. Loopback takes well under 5 ms.
FIRST_EVENT_WITHIN = 0.150
OTHER = "batch.ml-jobs"
SECRETS = ("query-secret-4e1d", "body-secret-9b7a", "header-secret-c3f0")
DEFAULT_BODY_LIMIT = Traffic().max_body_bytes


def issue(certificates: Certificates, identity: str) -> KeyPair:
    return pki.issue_client_certificate(
        certificates.ca, identity, certificates.now, timedelta(days=1), ALGORITHM
    )


def tls_connection(certificates: Certificates, port: int, pair: KeyPair, directory: Path) -> ssl.SSLSocket:
    context = ssl.create_default_context(cadata=certificates.ca.bundle_pem().decode())
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tls.crt").write_bytes(pair.cert_pem)
    (directory / "tls.key").write_bytes(pair.key_pem)
    context.load_cert_chain(directory / "tls.crt", directory / "tls.key")
    raw = socket.create_connection((LOOPBACK, port), timeout=10)
    return context.wrap_socket(raw, server_hostname=SERVER_NAME)


def wait_for_log(sidecar: Sidecar, lines: int) -> list[dict[str, object]]:
    """nginx writes a line once the answer has gone out: wait for it."""
    deadline = time.monotonic() + 5
    while len(sidecar.access_log()) < lines and time.monotonic() < deadline:
        time.sleep(0.02)
    return sidecar.access_log()


# ----------------------------------------------------------------------------------------- streaming


@dataclass(frozen=True)
class Event:
    data: str
    arrived: float


def stream(certificates: Certificates, port: int, path: str, directory: Path) -> tuple[int, list[Event]]:
    """Each server-sent event with the moment it reached the client (time.monotonic, as the model's)."""
    with tls_connection(certificates, port, certificates.client, directory) as tls:
        connection = http.client.HTTPConnection(SERVER_NAME, port, timeout=10)
        connection.sock = tls
        connection.request("GET", path, headers={"Accept": "text/event-stream"})
        response = connection.getresponse()
        events, pending = [], b""
        while chunk := response.read1(65536):
            arrived = time.monotonic()
            pending += chunk
            while b"\n\n" in pending:
                raw, pending = pending.split(b"\n\n", 1)
                data = next(line for line in raw.decode().splitlines() if line.startswith("data: "))
                events.append(Event(data.removeprefix("data: "), arrived))
        return response.status, events


@pytest.mark.parametrize(
    "kind",
    ["sse", "chunked", "buffer-me"],
    ids=["server-sent events", "plain chunked answer", "model asks nginx to buffer"],
)
def test_every_streamed_event_reaches_the_client_when_the_model_writes_it(
    start_sidecar: StartSidecar, certificates: Certificates, model: ModelServer, tmp_path: Path, kind: str
) -> None:
    sidecar = start_sidecar()

    status, events = stream(certificates, sidecar.tls_port, f"/v1/stream?kind={kind}", tmp_path)

    assert status == 200
    assert [event.data for event in events] == [f"token-{number}" for number in range(EVENTS)]
    delays = [event.arrived - written for event, written in zip(events, model.written, strict=True)]
    assert delays[0] < FIRST_EVENT_WITHIN, delays
    assert max(delays) < FIRST_EVENT_WITHIN, delays


def test_the_streaming_check_fails_when_nginx_buffers(
    start_sidecar: StartSidecar, certificates: Certificates, model: ModelServer, tmp_path: Path
) -> None:
    """The control for the test above: the same stream through nginx with buffering on comes late."""
    sidecar = start_sidecar(edit=lambda conf: conf.replace("proxy_buffering off;", "proxy_buffering on;"))

    status, events = stream(certificates, sidecar.tls_port, "/v1/stream?kind=buffer-me", tmp_path)

    assert status == 200
    assert len(events) == EVENTS
    assert events[0].arrived - model.written[0] > (EVENTS - 2) * EVENT_INTERVAL_SECONDS


def test_a_request_body_reaches_the_model_while_it_is_still_being_sent(
    start_sidecar: StartSidecar, certificates: Certificates, model: ModelServer, tmp_path: Path
) -> None:
    sidecar = start_sidecar()
    first, rest = os.urandom(256 * 1024), os.urandom(256 * 1024)

    with tls_connection(certificates, sidecar.tls_port, certificates.client, tmp_path) as tls:
        tls.sendall(
            f"POST /v1/digest HTTP/1.1\r\nHost: {SERVER_NAME}\r\n"
            f"Content-Length: {len(first) + len(rest)}\r\n\r\n".encode()
            + first
        )
        # Held back until the model has bytes: a buffering sidecar would wait for the whole body.
        streamed = model.body_arriving.wait(timeout=5)
        tls.sendall(rest)
        response = http.client.HTTPResponse(tls)
        response.begin()
        answer = json.loads(response.read())

    assert streamed
    assert response.status == 200
    assert answer == {"length": len(first) + len(rest), "sha256": hashlib.sha256(first + rest).hexdigest()}


# ------------------------------------------------------------------------------------ request size


def test_a_body_of_the_limit_passes_and_one_byte_more_is_refused_with_413(
    start_sidecar: StartSidecar, certificates: Certificates, model: ModelServer, tmp_path: Path
) -> None:
    sidecar = start_sidecar()  # the default limit, 64 MiB
    client = Client(tmp_path, certificates.ca.bundle_pem(), certificates.client)
    body = os.urandom(DEFAULT_BODY_LIMIT)

    accepted = client.request(sidecar.tls_port, "POST", "/v1/digest", body=body)
    refused = client.request(sidecar.tls_port, "POST", "/v1/digest", body=body + b"x")

    assert accepted.status == 200, accepted
    assert accepted.json() == {"length": DEFAULT_BODY_LIMIT, "sha256": hashlib.sha256(body).hexdigest()}
    assert refused.status == 413, refused
    assert json.loads(refused.body) == {"error": "request body too large"}
    assert [request["path"] for request in model.seen] == ["/v1/digest"]


def test_the_limit_follows_the_spec(
    start_sidecar: StartSidecar, certificates: Certificates, model: ModelServer, tmp_path: Path
) -> None:
    sidecar = start_sidecar(traffic=Traffic(max_body_bytes=1024))
    client = Client(tmp_path, certificates.ca.bundle_pem(), certificates.client)

    statuses = [
        client.request(sidecar.tls_port, "POST", "/v1/digest", body=b"x" * size).status
        for size in (1024, 1025)
    ]

    assert statuses == [200, 413]


# ------------------------------------------------------------------------------ the sidecar's answers


def assert_says_nothing_about_the_model(body: bytes, *details: str) -> None:
    text = body.decode()
    for detail in ("nginx", "upstream", LOOPBACK, *details):
        assert detail not in text


def test_a_model_that_is_down_gets_502_without_details(
    start_sidecar: StartSidecar, certificates: Certificates, tmp_path: Path
) -> None:
    closed = free_port()
    sidecar = start_sidecar(model_port=closed)

    reply = Client(tmp_path, certificates.ca.bundle_pem(), certificates.client).get(sidecar.tls_port)

    assert reply.status == 502, reply
    assert json.loads(reply.body) == {"error": "model unavailable"}
    assert_says_nothing_about_the_model(reply.body, str(closed))


def test_a_model_slower_than_the_timeout_gets_504(
    start_sidecar: StartSidecar, certificates: Certificates, model: ModelServer, tmp_path: Path
) -> None:
    sidecar = start_sidecar(traffic=Traffic(response_timeout_seconds=1))
    client = Client(tmp_path, certificates.ca.bundle_pem(), certificates.client)

    slow = client.get(sidecar.tls_port, "/v1/slow?seconds=3")
    in_time = client.get(sidecar.tls_port, "/v1/slow?seconds=0.2")

    assert slow.status == 504, slow
    assert json.loads(slow.body) == {"error": "model did not answer in time"}
    assert_says_nothing_about_the_model(slow.body)
    assert in_time.status == 200, in_time


def test_refusals_are_the_sidecars_own_answers(
    start_sidecar: StartSidecar, certificates: Certificates, model: ModelServer, tmp_path: Path
) -> None:
    sidecar = start_sidecar()
    trust = certificates.ca.bundle_pem()

    without_certificate = Client(tmp_path / "none", trust).get(sidecar.tls_port)
    undeclared = Client(tmp_path / "other", trust, issue(certificates, "scraper.ml-gw")).get(sidecar.tls_port)

    assert (without_certificate.status, json.loads(without_certificate.body)) == (
        400,
        {"error": "client certificate required"},
    )
    assert (undeclared.status, json.loads(undeclared.body)) == (403, {"error": "client not allowed"})
    assert model.seen == []


# ---------------------------------------------------------------------------------------- rate limit


def test_a_client_over_its_rate_gets_429_while_another_is_unaffected(
    start_sidecar: StartSidecar, certificates: Certificates, model: ModelServer, tmp_path: Path
) -> None:
    # One request a second with a burst of two: three at once pass, the fourth is refused.
    sidecar = start_sidecar(
        identities=(IDENTITY, OTHER), traffic=Traffic(rate_limit=RateLimit(requests_per_second=1, burst=2))
    )
    trust = certificates.ca.bundle_pem()
    greedy = Client(tmp_path / "greedy", trust, certificates.client)
    other = Client(tmp_path / "other", trust, issue(certificates, OTHER))

    greedy_replies = [greedy.get(sidecar.tls_port) for _ in range(5)]
    other_replies = [other.get(sidecar.tls_port) for _ in range(3)]

    assert [reply.status for reply in greedy_replies] == [200, 200, 200, 429, 429]
    assert json.loads(greedy_replies[3].body) == {"error": "rate limit exceeded"}
    assert [reply.status for reply in other_replies] == [200, 200, 200]
    identities = [dict(request["headers"]).get("X-Client-Identity") for request in model.seen]  # type: ignore[call-overload]
    assert identities == [IDENTITY] * 3 + [OTHER] * 3
    statuses = {(entry["client"], entry["status"]) for entry in wait_for_log(sidecar, 8)}
    assert statuses == {(IDENTITY, 200), (IDENTITY, 429), (OTHER, 200)}


def test_the_bucket_refills(
    start_sidecar: StartSidecar, certificates: Certificates, model: ModelServer, tmp_path: Path
) -> None:
    sidecar = start_sidecar(traffic=Traffic(rate_limit=RateLimit(requests_per_second=2, burst=0)))
    client = Client(tmp_path, certificates.ca.bundle_pem(), certificates.client)

    at_once = [client.get(sidecar.tls_port).status for _ in range(2)]
    time.sleep(1.0)  # four times the 0.5 s a request costs at 2 per second
    later = client.get(sidecar.tls_port).status

    assert at_once == [200, 429]
    assert later == 200


# ---------------------------------------------------------------------------------------- access log


def test_log_lines_name_the_client_and_never_the_query_headers_or_body(
    start_sidecar: StartSidecar, certificates: Certificates, model: ModelServer, tmp_path: Path
) -> None:
    query, body_secret, header_secret = SECRETS
    sidecar = start_sidecar(
        identities=(IDENTITY,), traffic=Traffic(rate_limit=RateLimit(requests_per_second=1, burst=1))
    )
    trust = certificates.ca.bundle_pem()
    client = Client(tmp_path / "client", trust, certificates.client)
    stranger = Client(tmp_path / "stranger", trust, issue(certificates, "scraper.ml-gw"))
    body = json.dumps({"prompt": f"my card number is {body_secret}"}).encode()
    path = f"/v1/predict?api_key={query}&user=alice"
    headers = {"Authorization": f"Bearer {header_secret}", "X-Prompt": header_secret}

    replies = [client.request(sidecar.tls_port, "POST", path, headers=headers, body=body) for _ in range(3)]
    refused = stranger.request(sidecar.tls_port, "POST", path, headers=headers, body=body)
    lines = wait_for_log(sidecar, 4)

    # The secrets did pass the sidecar: a log that held them would show them.
    assert [reply.status for reply in replies] == [200, 200, 429]
    assert model.seen[0]["path"] == path
    assert replies[0].body == body
    assert refused.status == 403
    assert [(line["client"], line["status"]) for line in lines] == [
        (IDENTITY, 200),
        (IDENTITY, 200),
        (IDENTITY, 429),
        ("", 403),
    ]
    first = lines[0]
    assert (first["method"], first["path"], first["protocol"]) == ("POST", "/v1/predict", "HTTP/1.1")
    assert first["client_verify"] == "SUCCESS"
    assert isinstance(first["request_bytes"], int) and first["request_bytes"] > len(body)
    assert isinstance(first["response_bytes"], int) and first["response_bytes"] > len(body)
    assert isinstance(first["duration"], float) and first["duration"] >= 0
    assert lines[3]["client_dn"] == "CN=scraper.ml-gw"
    everything = sidecar.output.read_text() + sidecar.errors.read_text()
    for secret in SECRETS:
        assert secret not in everything
    assert "alice" not in everything


def test_nothing_is_logged_when_the_access_log_is_off(
    start_sidecar: StartSidecar, certificates: Certificates, model: ModelServer, tmp_path: Path
) -> None:
    logging = start_sidecar()
    silent = start_sidecar(traffic=Traffic(access_log=False))
    client = Client(tmp_path, certificates.ca.bundle_pem(), certificates.client)

    assert client.get(logging.tls_port).status == client.get(silent.tls_port).status == 200

    assert len(wait_for_log(logging, 1)) == 1
    assert silent.output.read_text() == ""


def test_errors_of_the_model_path_leave_no_query_in_the_error_log(
    start_sidecar: StartSidecar, certificates: Certificates, tmp_path: Path
) -> None:
    """nginx writes the request line into its error messages: they must not reach the container log."""
    sidecar = start_sidecar(model_port=free_port())
    client = Client(tmp_path, certificates.ca.bundle_pem(), certificates.client)

    reply = client.get(sidecar.tls_port, f"/v1/predict?api_key={SECRETS[0]}")
    [line] = wait_for_log(sidecar, 1)

    assert reply.status == 502
    assert (line["status"], line["path"]) == (502, "/v1/predict")
    assert SECRETS[0] not in sidecar.errors.read_text() + sidecar.output.read_text()


# ---------------------------------------------------------------------------------------------- gRPC


def grpc_channel(certificates: Certificates, port: int, pair: KeyPair | None) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        certificates.ca.bundle_pem(),
        pair.key_pem if pair else None,
        pair.cert_pem if pair else None,
    )
    options = (("grpc.ssl_target_name_override", SERVER_NAME),)
    return grpc.secure_channel(f"{LOOPBACK}:{port}", credentials, options=options)


def echo(channel: grpc.Channel, request: bytes = b"hello") -> bytes | grpc.RpcError:
    call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(f"/{GrpcModel.SERVICE}/Echo")
    try:
        answer: bytes = call(request, timeout=10, metadata=(("x-client-identity", "admin.kube-system"),))
    except grpc.RpcError as error:
        return error
    return answer


def start_grpc_sidecar(
    start_sidecar: StartSidecar, model_server: ModelServer, grpc_model: GrpcModel, **traffic: object
) -> Sidecar:
    settings = replace(Traffic(protocol="GRPC", health_port=model_server.port), **traffic)  # type: ignore[arg-type]
    return start_sidecar(model_port=grpc_model.port, traffic=settings)


def test_grpc_call_with_a_declared_certificate_reaches_the_model_with_its_identity(
    start_sidecar: StartSidecar, certificates: Certificates, model: ModelServer, grpc_model: GrpcModel
) -> None:
    sidecar = start_grpc_sidecar(start_sidecar, model, grpc_model)

    with grpc_channel(certificates, sidecar.tls_port, certificates.client) as channel:
        answer = echo(channel)
        call: grpc.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(
            f"/{GrpcModel.SERVICE}/Stream"
        )
        streamed = list(call(b"tok", timeout=10))

    # The identity comes from the certificate; the one the client sent in its metadata is replaced.
    assert answer == b"hello|" + IDENTITY.encode()
    assert streamed == [b"tok-0", b"tok-1", b"tok-2"]
    assert [call["x-client-identity"] for call in grpc_model.seen] == [IDENTITY, IDENTITY]
    [line, _] = wait_for_log(sidecar, 2)
    assert (line["client"], line["protocol"], line["status"]) == (IDENTITY, "HTTP/2.0", 200)
    assert line["path"] == f"/{GrpcModel.SERVICE}/Echo"


@pytest.mark.parametrize(
    ("who", "code", "status"),
    [
        (None, grpc.StatusCode.UNAUTHENTICATED, 400),
        ("scraper.ml-gw", grpc.StatusCode.PERMISSION_DENIED, 403),
    ],
    ids=["no certificate", "undeclared identity"],
)
def test_grpc_call_without_a_declared_certificate_fails(
    start_sidecar: StartSidecar,
    certificates: Certificates,
    model: ModelServer,
    grpc_model: GrpcModel,
    who: str | None,
    code: grpc.StatusCode,
    status: int,
) -> None:
    sidecar = start_grpc_sidecar(start_sidecar, model, grpc_model)

    with grpc_channel(certificates, sidecar.tls_port, issue(certificates, who) if who else None) as channel:
        answer = echo(channel)

    assert isinstance(answer, grpc.RpcError)
    assert answer.code() == code
    assert grpc_model.seen == []
    [line] = wait_for_log(sidecar, 1)
    assert (line["client"], line["status"]) == ("", status)


def test_grpc_certificate_from_another_ca_fails(
    start_sidecar: StartSidecar, certificates: Certificates, model: ModelServer, grpc_model: GrpcModel
) -> None:
    sidecar = start_grpc_sidecar(start_sidecar, model, grpc_model)
    foreign = pki.plan_ca(None, certificates.now - timedelta(days=1), ALGORITHM, timedelta(days=30)).state
    impostor = pki.issue_client_certificate(foreign, IDENTITY, certificates.now, timedelta(days=1), ALGORITHM)

    with grpc_channel(certificates, sidecar.tls_port, impostor) as channel:
        answer = echo(channel)

    assert isinstance(answer, grpc.RpcError)
    assert answer.code() == grpc.StatusCode.UNAUTHENTICATED
    assert grpc_model.seen == []


def test_grpc_limits_answer_with_grpc_statuses(
    start_sidecar: StartSidecar, certificates: Certificates, model: ModelServer, grpc_model: GrpcModel
) -> None:
    sidecar = start_grpc_sidecar(
        start_sidecar,
        model,
        grpc_model,
        max_body_bytes=1024,
        rate_limit=RateLimit(requests_per_second=1, burst=1),
    )

    with grpc_channel(certificates, sidecar.tls_port, certificates.client) as channel:
        too_large = echo(channel, b"x" * 2048)
        answers = [echo(channel) for _ in range(3)]

    assert isinstance(too_large, grpc.RpcError)
    assert too_large.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert too_large.details() == "request body too large"
    assert answers[0] == b"hello|" + IDENTITY.encode()
    assert [isinstance(answer, grpc.RpcError) for answer in answers].count(True) >= 1
    limited = next(answer for answer in answers if isinstance(answer, grpc.RpcError))
    assert limited.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert limited.details() == "rate limit exceeded"


def test_grpc_models_are_health_checked_over_http_on_their_health_port(
    start_sidecar: StartSidecar, model: ModelServer, grpc_model: GrpcModel
) -> None:
    sidecar = start_grpc_sidecar(start_sidecar, model, grpc_model)

    status, body = plain_get(sidecar.health_port, "/healthz")

    assert status == 200
    assert json.loads(body)["path"] == "/health/ready"
    assert grpc_model.seen == []
