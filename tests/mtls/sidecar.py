"""The pieces of the handshake tests: a stand-in model, the sidecar's nginx process, test constants.

The fixtures that put them together are in conftest.py; the tests import names from here.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from securemodels import pki
from securemodels.desired.nginx import SidecarPaths
from securemodels.pki import CAState, KeyPair

REPO = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"
ALGORITHM: pki.KeyAlgorithm = "ECDSA-P256"
IDENTITY = "gateway.ml-gw"
SERVER_NAMES = ("fraud", "fraud.ml-prod.svc", "fraud.ml-prod.svc.cluster.local")
MODEL_HEALTH_PATH = "/health/ready"
MODEL_LIVENESS_PATH = "/health/live"
START_TIMEOUT = 10.0


def nginx_environment() -> dict[str, str]:
    """The environment without $NGINX: nginx reads that variable as listening sockets handed over by a
    binary upgrade, and a path there breaks its reloads."""
    return {name: value for name, value in os.environ.items() if name != "NGINX"}


class ModelHandler(BaseHTTPRequestHandler):
    """Stands in for the model: answers with what it received, so tests see what nginx forwarded."""

    server: ModelServer

    def _reply(self, body: bytes) -> None:
        self.server.seen.append({"method": self.command, "path": self.path, "headers": dict(self.headers)})
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        received = {
            "path": self.path,
            "identity": self.headers.get_all("X-Client-Identity"),
            "underscored_identity": self.headers.get_all("X_Client_Identity"),
        }
        self._reply(json.dumps(received).encode())

    def do_POST(self) -> None:
        self._reply(self.rfile.read(int(self.headers.get("Content-Length", "0"))))

    def log_message(self, format: str, *args: object) -> None:
        pass


class ModelServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__((LOOPBACK, 0), ModelHandler)
        self.seen: list[dict[str, object]] = []

    @property
    def port(self) -> int:
        return int(self.server_address[1])


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
