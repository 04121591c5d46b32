"""Fixtures for the handshake tests: a real nginx running the sidecar configuration the operator renders.

nginx comes from $NGINX, or from hack/fetch-nginx.sh (Debian's package, cached). Each sidecar gets its
own directories and free loopback ports, passed to the renderer through its parameters: the file nginx
runs is exactly what render_nginx_conf returned. Certificates come from securemodels.pki with clocks set
in the past where a test needs expired or rotated certificates, so nothing waits for time to pass.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import pytest

from mtls.sidecar import (
    ALGORITHM,
    IDENTITY,
    LOOPBACK,
    MODEL_HEALTH_PATH,
    REPO,
    SERVER_NAMES,
    Certificates,
    GrpcModel,
    ModelServer,
    Sidecar,
    StartSidecar,
    free_port,
)
from securemodels import pki
from securemodels.desired.nginx import SidecarPaths, Traffic, render_nginx_conf
from securemodels.pki import KeyPair

DEFAULT_TRAFFIC = Traffic()


@pytest.fixture(scope="session")
def nginx_binary() -> Path:
    configured = os.environ.get("NGINX")
    if configured:
        binary = Path(configured)
    else:
        fetched = subprocess.run(
            ["bash", str(REPO / "hack" / "fetch-nginx.sh")], capture_output=True, text=True, check=False
        )
        if fetched.returncode != 0:
            pytest.fail(f"hack/fetch-nginx.sh failed:\n{fetched.stderr}")
        binary = Path(fetched.stdout.strip().splitlines()[-1])
    assert binary.is_file(), f"no nginx binary at {binary}"
    return binary


@pytest.fixture(scope="session")
def model_server() -> Iterator[ModelServer]:
    server = ModelServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture(scope="session")
def grpc_server() -> Iterator[GrpcModel]:
    server = GrpcModel()
    yield server
    server.stop()


@pytest.fixture
def grpc_model(grpc_server: GrpcModel) -> GrpcModel:
    """The stand-in gRPC model, with this test's calls only."""
    grpc_server.seen.clear()
    return grpc_server


@pytest.fixture
def model(model_server: ModelServer) -> ModelServer:
    """The stand-in model, with this test's requests only."""
    model_server.reset()
    return model_server


@pytest.fixture(scope="session")
def certificates() -> Certificates:
    now = datetime.now(UTC).replace(microsecond=0)
    # Started a month ago, so tests can issue certificates that expired in the past.
    ca = pki.plan_ca(None, now - timedelta(days=30), ALGORITHM, timedelta(days=365)).state
    server = pki.issue_server_certificate(ca, SERVER_NAMES, now, timedelta(days=2), ALGORITHM)
    client = pki.issue_client_certificate(ca, IDENTITY, now, timedelta(days=2), ALGORITHM)
    return Certificates(now, ca, server, client)


@pytest.fixture
def start_sidecar(
    nginx_binary: Path, model_server: ModelServer, certificates: Certificates
) -> Iterator[StartSidecar]:
    """Start nginx with a freshly rendered configuration; every one started is stopped at teardown."""
    started: list[Sidecar] = []
    bases: list[Path] = []

    def start(
        *,
        min_tls_version: Literal["1.3", "1.2"] = "1.3",
        identities: Sequence[str] = (IDENTITY,),
        server: KeyPair | None = None,
        bundle: bytes | None = None,
        traffic: Traffic = DEFAULT_TRAFFIC,
        model_port: int | None = None,
        edit: Callable[[str], str] | None = None,
        liveness_path: str | None = None,
        run: bool = True,
    ) -> Sidecar:
        base = Path(tempfile.mkdtemp(prefix="securemodels-nginx-"))
        bases.append(base)
        # Run as root, nginx's workers switch to "nobody" and must reach the request-buffer directories
        # (nginx creates and chowns those itself); the certificates are read by the master alone.
        base.chmod(0o755)
        (base / "tmp").mkdir(mode=0o755)
        (base / "tls").mkdir(mode=0o700)
        paths = SidecarPaths(tls_dir=str(base / "tls"), tmp_dir=str(base / "tmp"), config_dir=str(base))
        tls_port, health_port = free_port(), free_port()
        conf = render_nginx_conf(
            model_port=model_port or model_server.port,
            health_path=MODEL_HEALTH_PATH,
            liveness_path=liveness_path,
            min_tls_version=min_tls_version,
            client_identities=identities,
            traffic=traffic,
            tls_port=tls_port,
            health_port=health_port,
            paths=paths,
            listen_address=LOOPBACK,
        )
        if edit is not None:  # only for tests that show what a changed configuration would do
            conf = edit(conf)
        sidecar = Sidecar(nginx_binary, base, paths, tls_port, health_port, conf)
        sidecar.install(server or certificates.server, bundle or certificates.ca.bundle_pem())
        if run:
            started.append(sidecar)
            sidecar.start()
        return sidecar

    yield start
    for sidecar in started:
        sidecar.stop()
    for base in bases:
        shutil.rmtree(base, ignore_errors=True)
