"""The pieces of the handshake tests: a stand-in model, the sidecar's nginx process, test constants.

The fixtures that put them together are in conftest.py; the tests import names from here.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from concurrent import futures
from dataclasses import dataclass, field, replace
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc

from securemodels import pki
from securemodels.desired.nginx import SidecarPaths
from securemodels.pki import CAState, KeyPair

REPO = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"
ALGORITHM: pki.KeyAlgorithm = "ECDSA-P256"
IDENTITY = "gateway.ml-gw"
SERVER_NAMES = ("fraud", "fraud.ml-prod.svc", "fraud.ml-prod.svc.cluster.local")
MODEL_HEALTH_PATH = "/health/ready"
SERVER_NAME = SERVER_NAMES[1]
MODEL_LIVENESS_PATH = "/health/live"
START_TIMEOUT = 10.0
EVENTS = 10
EVENT_INTERVAL_SECONDS = 0.1


def nginx_environment() -> dict[str, str]:
    """The environment without $NGINX: nginx reads that variable as listening sockets handed over by a
    binary upgrade, and a path there breaks its reloads."""
    return {name: value for name, value in os.environ.items() if name != "NGINX"}


class ModelHandler(BaseHTTPRequestHandler):
    """Stands in for the model: answers with what it received, so tests see what nginx forwarded.

    GET /v1/stream?kind=sse|chunked|buffer-me  ten events 100 ms apart, each in its own chunk; the
                                                moment each is written is kept in `written`
    GET /v1/slow?seconds=S                      answers after S seconds
    POST /v1/digest                             the body's length and SHA-256, read as it arrives
    any other GET                               the path and identity headers it got, as JSON
    any other POST                              the body, echoed
    """

    server: ModelServer
    protocol_version = "HTTP/1.1"  # kept-alive connections and chunked answers, as model servers do
    # Headers and body leave in separate writes; with Nagle's algorithm the body would wait for the
    # delayed ACK of the previous write.
    disable_nagle_algorithm = True

    def _record(self) -> None:
        self.server.seen.append({"method": self.command, "path": self.path, "headers": dict(self.headers)})

    def _reply(self, body: bytes, content_type: str = "application/octet-stream") -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._record()
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        if url.path == "/v1/stream":
            self._stream(query.get("kind", ["sse"])[0])
            return
        if url.path == "/v1/slow":
            time.sleep(float(query["seconds"][0]))
        received = {
            "path": self.path,
            "identity": self.headers.get_all("X-Client-Identity"),
            "underscored_identity": self.headers.get_all("X_Client_Identity"),
        }
        self._reply(json.dumps(received).encode(), "application/json")

    def do_POST(self) -> None:
        self._record()
        length = int(self.headers.get("Content-Length", "0"))
        if urllib.parse.urlsplit(self.path).path != "/v1/digest":
            self._reply(self.rfile.read(length))
            return
        digest, remaining = hashlib.sha256(), length
        while remaining:
            chunk = self.rfile.read1(min(remaining, 1 << 16))
            if not chunk:
                break
            digest.update(chunk)
            remaining -= len(chunk)
            self.server.body_arriving.set()
        answer = {"length": length - remaining, "sha256": digest.hexdigest()}
        self._reply(json.dumps(answer).encode(), "application/json")

    def _stream(self, kind: str) -> None:
        self.send_response(200)
        if kind == "chunked":
            self.send_header("Content-Type", "application/octet-stream")
        else:
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            # What a model may send to nginx; "yes" asks for the buffering the sidecar must not do.
            self.send_header("X-Accel-Buffering", "yes" if kind == "buffer-me" else "no")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for number in range(EVENTS):
            event = f"id: {number}\ndata: token-{number}\n\n".encode()
            self.server.written.append(time.monotonic())
            self.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
            self.wfile.flush()
            time.sleep(EVENT_INTERVAL_SECONDS)
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, format: str, *args: object) -> None:
        pass


class ModelServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__((LOOPBACK, 0), ModelHandler)
        self.seen: list[dict[str, object]] = []
        self.written: list[float] = []  # time.monotonic() of each streamed event, as it was written
        self.body_arriving = threading.Event()  # set once a /v1/digest body has started to arrive

    def reset(self) -> None:
        self.seen.clear()
        self.written.clear()
        self.body_arriving.clear()

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class GrpcModel:
    """Stands in for a gRPC model (Triton, KServe v2): plain HTTP/2 on loopback, as behind the sidecar.

    /test.Model/Echo answers "<request>|<x-client-identity metadata>"; /test.Model/Stream answers three
    messages. Bytes in and out, so no generated code: the sidecar sees the same frames either way.
    """

    SERVICE = "test.Model"

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []
        handlers = grpc.method_handlers_generic_handler(
            self.SERVICE,
            {
                "Echo": grpc.unary_unary_rpc_method_handler(self._echo),
                "Stream": grpc.unary_stream_rpc_method_handler(self._stream),
            },
        )
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self.server.add_generic_rpc_handlers((handlers,))
        self.port = self.server.add_insecure_port(f"{LOOPBACK}:0")
        self.server.start()

    def _metadata(self, context: grpc.ServicerContext) -> dict[str, str]:
        found = {key: str(value) for key, value in context.invocation_metadata()}
        self.seen.append(found)
        return found

    def _echo(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        identity = self._metadata(context).get("x-client-identity", "")
        return request + b"|" + identity.encode()

    def _stream(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        self._metadata(context)
        for number in range(3):
            yield request + f"-{number}".encode()

    def stop(self) -> None:
        self.server.stop(grace=None)


@dataclass(frozen=True)
class Certificates:
    """The operator's CA and the certificates it issued, valid now (the real clock, as nginx uses)."""

    now: datetime
    ca: CAState
    server: KeyPair
    client: KeyPair


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def _accepts(port: int) -> bool:
    try:
        socket.create_connection((LOOPBACK, port), timeout=0.2).close()
    except OSError:
        return False
    return True


@dataclass
class Sidecar:
    """One nginx process running a rendered nginx.conf."""

    binary: Path
    base: Path
    paths: SidecarPaths
    tls_port: int
    health_port: int
    conf: str
    process: subprocess.Popen[bytes] | None = None
    secret_updates: int = 0
    output: Path = field(init=False)
    errors: Path = field(init=False)

    def __post_init__(self) -> None:
        self.output = self.base / "stdout.log"
        self.errors = self.base / "stderr.log"
        (self.base / "nginx.conf").write_text(self.conf)

    def command(self, *extra: str) -> list[str]:
        # -e stderr: the compiled-in error log path is consulted before the configuration is read.
        return [
            str(self.binary),
            "-e",
            "stderr",
            "-p",
            str(self.base),
            "-c",
            str(self.base / "nginx.conf"),
            *extra,
        ]

    def install(self, server: KeyPair, bundle: bytes) -> None:
        """Lay out the model's TLS Secret as the kubelet does for a Secret volume.

        Each update is a new directory behind the `..data` symlink, switched atomically, so every file is
        a new one. It matters: nginx 1.27.2 and later keep certificates across reloads while the file's
        inode and modification time are unchanged.
        """
        tls_dir = Path(self.paths.tls_dir)
        self.secret_updates += 1
        version = tls_dir / f"..{self.secret_updates}"
        version.mkdir()
        files = {"tls.crt": server.cert_pem, "tls.key": server.key_pem, "ca.crt": bundle}
        for name, content in files.items():
            (version / name).write_bytes(content)
        (tls_dir / "..data.new").symlink_to(version.name)
        (tls_dir / "..data.new").replace(tls_dir / "..data")
        for name in files:
            if not (tls_dir / name).is_symlink():
                (tls_dir / name).symlink_to(Path("..data") / name)

    def run(self, *extra: str) -> subprocess.CompletedProcess[str]:
        """A short-lived nginx acting on this sidecar's files: `-t` to test them, `-s reload` and such."""
        return subprocess.run(
            self.command(*extra), capture_output=True, text=True, check=False, env=nginx_environment()
        )

    def start(self) -> None:
        with self.output.open("wb") as stdout, self.errors.open("wb") as stderr:
            self.process = subprocess.Popen(
                self.command(), stdout=stdout, stderr=stderr, env=nginx_environment()
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not (_accepts(self.tls_port) and _accepts(self.health_port)):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"nginx did not start:\n{self.errors.read_text()}")
            time.sleep(0.02)

    def reload(self) -> None:
        signalled = self.run("-s", "reload")
        assert signalled.returncode == 0, signalled.stderr

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def access_log(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.output.read_text().splitlines() if line.startswith("{")]


StartSidecar = Callable[..., Sidecar]


@dataclass(frozen=True)
class Reply:
    """What a client got: an HTTP answer, or the TLS or connection error that stopped it."""

    status: int | None = None
    body: bytes = b""
    error: str | None = None
    tls_version: str | None = None
    cipher: str | None = None
    server_fingerprint: str | None = None
    resumed: bool = False

    def json(self) -> dict[str, object]:
        parsed = json.loads(self.body)
        assert isinstance(parsed, dict)
        return parsed


class Client:
    """A TLS client as a caller pod would be: it trusts the bundle from its Secret, presents its cert."""

    def __init__(
        self,
        directory: Path,
        trust: bytes,
        pair: KeyPair | None = None,
        *,
        maximum_version: ssl.TLSVersion | None = None,
        ciphers: str | None = None,
    ) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        # Strict RFC 5280 checks: the operator's certificates must pass them, not just OpenSSL's defaults.
        self.context.verify_flags |= ssl.VERIFY_X509_STRICT
        self.context.load_verify_locations(cadata=trust.decode())
        if pair is not None:
            directory.mkdir(parents=True, exist_ok=True)
            cert_file, key_file = directory / "tls.crt", directory / "tls.key"
            cert_file.write_bytes(pair.cert_pem)
            key_file.write_bytes(pair.key_pem)
            self.context.load_cert_chain(cert_file, key_file)
        if maximum_version is not None:
            self.context.maximum_version = maximum_version
        if ciphers is not None:
            self.context.set_ciphers(ciphers)
        self.session: ssl.SSLSession | None = None

    def get(self, port: int, path: str = "/v1/predict", headers: Mapping[str, str] | None = None) -> Reply:
        return self.request(port, "GET", path, headers=headers)

    def request(
        self,
        port: int,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
    ) -> Reply:
        try:
            raw = socket.create_connection((LOOPBACK, port), timeout=5)
            tls = self.context.wrap_socket(raw, server_hostname=SERVER_NAME, session=self.session)
        except (ssl.SSLError, OSError) as error:
            return Reply(error=f"{type(error).__name__}: {error}")
        with tls:
            peer = tls.getpeercert(binary_form=True)
            handshake = Reply(
                tls_version=tls.version(),
                cipher=(tls.cipher() or (None,))[0],
                server_fingerprint=hashlib.sha256(peer).hexdigest() if peer else None,
                resumed=bool(tls.session_reused),
            )
            connection = http.client.HTTPConnection(SERVER_NAME, port, timeout=5)
            connection.sock = tls
            try:
                connection.request(method, path, body=body or None, headers=dict(headers or {}))
                response = connection.getresponse()
                # TLS 1.3 session tickets arrive after the handshake: by now they would have.
                self.session = tls.session
                content = response.read()
            except (ssl.SSLError, OSError, http.client.HTTPException) as error:
                return replace(handshake, error=f"{type(error).__name__}: {error}")
            return replace(handshake, status=response.status, body=content)


def plain_get(port: int, path: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()
