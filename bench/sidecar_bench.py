"""What the mTLS sidecar adds to each request, on loopback, with the nginx.conf the operator renders.

The model stub (hack/images/modelstub/modelstub.py, its own process) is called over and over, directly
(plain HTTP) and through real nginx running the rendered configuration (TLS 1.3 with a client
certificate), alternating round by round in the same run: the sidecar's cost is the difference. Measured:
latency per request on a kept-alive connection (median and p99), the time to the first server-sent event
of a stream, and the throughput of a 100 MiB upload.

Run alone with `python -m bench.sidecar_bench` (rewrites only its section of BENCHMARKS.md); `make bench`
runs it with the others.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from securemodels import pki
from securemodels.desired.nginx import SidecarPaths, Traffic, render_nginx_conf

ROOT = Path(__file__).resolve().parents[1]
HEADING = "## The mTLS sidecar's own cost, on loopback"
LOOPBACK = "127.0.0.1"
IDENTITY = "bench.bench-clients"
SERVER_NAME = "bench.bench-models.svc"
ROUNDS = 5
REQUESTS_PER_ROUND = 2000
STREAMS_PER_ROUND = 10
UPLOAD_BYTES = 100 * 1024 * 1024
UPLOAD_ROUNDS = 3
UPLOAD_PIECE = 1024 * 1024
START_TIMEOUT = 10.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            socket.create_connection((LOOPBACK, port), timeout=0.2).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start") from None
            time.sleep(0.02)


def _nginx_binary() -> str:
    if configured := os.environ.get("NGINX"):
        return configured
    fetched = subprocess.run(
        ["bash", str(ROOT / "hack" / "fetch-nginx.sh")], capture_output=True, text=True, check=True
    )
    return fetched.stdout.strip().splitlines()[-1]


@dataclass(frozen=True)
class Paths:
    """The two ways to the model: direct, and through the sidecar with the client's TLS context."""

    model_port: int
    sidecar_port: int
    client_tls: ssl.SSLContext

    def connection(self, through_sidecar: bool) -> http.client.HTTPConnection:
        if through_sidecar:
            return http.client.HTTPSConnection(
                LOOPBACK, self.sidecar_port, timeout=30, context=self.client_tls
            )
        return http.client.HTTPConnection(LOOPBACK, self.model_port, timeout=30)


@contextmanager
def running(workdir: Path) -> Iterator[Paths]:
    """The model stub and nginx with the rendered sidecar configuration, stopped on the way out."""
    now = datetime.now(UTC)
    ca = pki.plan_ca(None, now - timedelta(hours=1), "ECDSA-P256", timedelta(days=2)).state
    server = pki.issue_server_certificate(ca, (SERVER_NAME,), now, timedelta(days=1), "ECDSA-P256")
    client = pki.issue_client_certificate(ca, IDENTITY, now, timedelta(days=1), "ECDSA-P256")
    tls_dir, tmp_dir = workdir / "tls", workdir / "tmp"
    tls_dir.mkdir()
    tmp_dir.mkdir()
    (tls_dir / "tls.crt").write_bytes(server.cert_pem)
    (tls_dir / "tls.key").write_bytes(server.key_pem)
    (tls_dir / "ca.crt").write_bytes(ca.bundle_pem())
    (workdir / "client.crt").write_bytes(client.cert_pem)
    (workdir / "client.key").write_bytes(client.key_pem)
    model_port, sidecar_port, health_port = _free_port(), _free_port(), _free_port()
    # The defaults of spec.serving, with room for the upload.
    traffic = Traffic(max_body_bytes=2 * UPLOAD_BYTES)
    conf = render_nginx_conf(
        model_port=model_port,
        health_path="/healthz",
        min_tls_version="1.3",
        client_identities=[IDENTITY],
        traffic=traffic,
        tls_port=sidecar_port,
        health_port=health_port,
        paths=SidecarPaths(tls_dir=str(tls_dir), tmp_dir=str(tmp_dir)),
        listen_address=LOOPBACK,
    )
    (workdir / "nginx.conf").write_text(conf)
    stub_env = {**os.environ, "SECUREMODELS_BIND_ADDRESS": LOOPBACK, "SECUREMODELS_PORT": str(model_port)}
    # nginx reads $NGINX as sockets inherited from a binary upgrade.
    nginx_env = {name: value for name, value in os.environ.items() if name != "NGINX"}
    with (workdir / "access.log").open("wb") as access_log:
        stub = subprocess.Popen(
            [sys.executable, str(ROOT / "hack" / "images" / "modelstub" / "modelstub.py")],
            env=stub_env,
            stdout=subprocess.DEVNULL,
        )
        nginx = subprocess.Popen(
            [_nginx_binary(), "-e", "stderr", "-p", str(workdir), "-c", str(workdir / "nginx.conf")],
            env=nginx_env,
            stdout=access_log,
        )
        try:
            _wait_for_port(model_port, stub, "the model stub")
            _wait_for_port(sidecar_port, nginx, "nginx")
            context = ssl.create_default_context(cadata=ca.bundle_pem().decode())
            context.load_cert_chain(workdir / "client.crt", workdir / "client.key")
            context.check_hostname = False  # the connection is to 127.0.0.1; the chain is still verified
            yield Paths(model_port, sidecar_port, context)
        finally:
            for process in (nginx, stub):
                process.terminate()
                process.wait(timeout=10)


def _requests(paths: Paths, through_sidecar: bool) -> list[float]:
    """Seconds per GET on one kept-alive connection."""
    connection = paths.connection(through_sidecar)
    latencies = []
    try:
        for _ in range(REQUESTS_PER_ROUND):
            started = time.perf_counter()
            connection.request("GET", "/v1/predict")
            reply = connection.getresponse()
            reply.read()
            latencies.append(time.perf_counter() - started)
            if reply.status != 200:
                raise RuntimeError(f"GET answered {reply.status}")
    finally:
        connection.close()
    return latencies


def _first_events(paths: Paths, through_sidecar: bool) -> list[float]:
    """Seconds from sending the request to the first server-sent event, stream after stream on one
    kept-alive connection."""
    times = []
    connection = paths.connection(through_sidecar)
    try:
        for _ in range(STREAMS_PER_ROUND):
            started = time.perf_counter()
            connection.request("GET", "/v1/stream?events=2", headers={"Accept": "text/event-stream"})
            reply = connection.getresponse()
            if reply.status != 200:
                raise RuntimeError(f"stream answered {reply.status}")
            while not reply.readline().startswith(b"data: "):
                pass
            times.append(time.perf_counter() - started)
            reply.read()
    finally:
        connection.close()
    return times


def _upload(paths: Paths, through_sidecar: bool) -> float:
    """Seconds to send UPLOAD_BYTES and get the model's answer."""
    piece = os.urandom(UPLOAD_PIECE)
    connection = paths.connection(through_sidecar)
    try:
        started = time.perf_counter()
        connection.putrequest("POST", "/v1/upload")
        connection.putheader("Content-Length", str(UPLOAD_BYTES))
        connection.endheaders()
        for _ in range(UPLOAD_BYTES // UPLOAD_PIECE):
            connection.send(piece)
        reply = connection.getresponse()
        body = reply.read()
        elapsed = time.perf_counter() - started
    finally:
        connection.close()
    if reply.status != 200 or f'"received": {UPLOAD_BYTES}'.encode() not in body:
        raise RuntimeError(f"upload answered {reply.status}: {body[:200]!r}")
    return elapsed


def _alternating(measure: Callable[[bool], list[float]], rounds: int) -> tuple[list[float], list[float]]:
    direct: list[float] = []
    sidecar: list[float] = []
    for _ in range(rounds):
        direct += measure(False)
        sidecar += measure(True)
    return direct, sidecar


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


def measure() -> dict[str, float]:
    workdir = Path(tempfile.mkdtemp(prefix="securemodels-sidecar-bench-"))
    workdir.chmod(0o755)  # run as root, nginx's worker is "nobody" and needs its temp directory
    try:
        with running(workdir) as paths:
            for through in (False, True):  # warm up both paths
                _requests(paths, through)
            direct, sidecar = _alternating(lambda through: _requests(paths, through), ROUNDS)
            direct_events, sidecar_events = _alternating(
                lambda through: _first_events(paths, through), ROUNDS
            )
            uploads_direct, uploads_sidecar = _alternating(
                lambda through: [_upload(paths, through)], UPLOAD_ROUNDS
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    mib = UPLOAD_BYTES / (1024 * 1024)
    results = {
        "direct_p50_ms": 1000 * statistics.median(direct),
        "direct_p99_ms": 1000 * _p99(direct),
        "sidecar_p50_ms": 1000 * statistics.median(sidecar),
        "sidecar_p99_ms": 1000 * _p99(sidecar),
        "direct_first_event_ms": 1000 * statistics.median(direct_events),
        "sidecar_first_event_ms": 1000 * statistics.median(sidecar_events),
        "direct_upload_mib_s": mib / statistics.median(uploads_direct),
        "sidecar_upload_mib_s": mib / statistics.median(uploads_sidecar),
    }
    results["added_p50_ms"] = results["sidecar_p50_ms"] - results["direct_p50_ms"]
    results["added_p99_ms"] = results["sidecar_p99_ms"] - results["direct_p99_ms"]
    results["added_first_event_ms"] = results["sidecar_first_event_ms"] - results["direct_first_event_ms"]
    results["upload_ratio"] = results["sidecar_upload_mib_s"] / results["direct_upload_mib_s"]
    return results


def section(results: dict[str, float]) -> str:
    requests = ROUNDS * REQUESTS_PER_ROUND
    streams = ROUNDS * STREAMS_PER_ROUND
    return f"""{HEADING}

The model stub in its own process, called from this one over loopback: directly (plain HTTP), and
through real nginx running the configuration the operator renders (the spec.serving defaults but the
body limit, TLS 1.3 with a client certificate, the access log on). Same run, alternating rounds; no CPU
limit on nginx here, unlike the pod's 500m. Python's http.client is the client on both paths, so its own
TLS work is counted.

| measurement | direct | through the sidecar | added by the sidecar |
| --- | --- | --- | --- |
| latency per GET, kept-alive connection, median ({requests} requests) | \
{results["direct_p50_ms"]:.3f} ms | {results["sidecar_p50_ms"]:.3f} ms | {results["added_p50_ms"]:.3f} ms |
| latency per GET, p99 | {results["direct_p99_ms"]:.3f} ms | {results["sidecar_p99_ms"]:.3f} ms | \
{results["added_p99_ms"]:.3f} ms |
| time to the first server-sent event, median ({streams} streams, kept-alive connection) | \
{results["direct_first_event_ms"]:.2f} ms | {results["sidecar_first_event_ms"]:.2f} ms | \
{results["added_first_event_ms"]:.2f} ms |
| 100 MiB upload, median of {UPLOAD_ROUNDS} | {results["direct_upload_mib_s"]:.0f} MiB/s | \
{results["sidecar_upload_mib_s"]:.0f} MiB/s | ratio {results["upload_ratio"]:.2f} |

The upload streams through nginx to the model (no request buffering) and passes because the limit is
raised for it; the default `maxRequestBodySize` is 64Mi.
"""


def write_section(text: str) -> None:
    """Put the section into BENCHMARKS.md, replacing an earlier one, leaving the others as they are."""
    path = ROOT / "BENCHMARKS.md"
    report = path.read_text()
    pattern = re.compile(re.escape(HEADING) + r".*?(?=^## |\Z)", re.DOTALL | re.MULTILINE)
    report = pattern.sub(text, report) if pattern.search(report) else report.rstrip() + "\n\n" + text
    path.write_text(report)


def main() -> int:
    text = section(measure())
    write_section(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
