"""The client side of the real-node tests and the benchmark, run inside pods with `kubectl exec`.

Each subcommand prints JSON, so a test reads exactly what happened rather than an exit code:
  tcp HOST PORT          {"result": "open" | "refused" | "timeout"}
  dns NAME               {"addresses": [...]} or {"error": ...}
  get URL                {"status", "body", "server_serial"} or {"stage": "connect" | "tls", "error"}
  stream URL             {"status", "events": [{"data", "at"}]}: each server-sent event and when it came
  watch URL --seconds S  one line per request, every --interval, re-reading the certificate files;
                         a refused connection is retried once
  bench URL --seconds S  requests per second and latency percentiles over --connections connections
TLS options (--cert, --key, --ca) are file paths, e.g. a mounted client Secret; without --ca, plain HTTP.
Only the standard library: the image needs nothing but Python.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import ssl
import statistics
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

RETRY_PAUSE_SECONDS = 0.2


@dataclass(frozen=True)
class Target:
    url: urllib.parse.SplitResult
    cert: str | None
    key: str | None
    ca: str | None
    timeout: float

    @property
    def path(self) -> str:
        return (self.url.path or "/") + (f"?{self.url.query}" if self.url.query else "")

    def connection(self) -> http.client.HTTPConnection:
        host, port = self.url.hostname or "", self.url.port
        if self.url.scheme != "https":
            return http.client.HTTPConnection(host, port or 80, timeout=self.timeout)
        # Certificates are read for every connection: a rotated Secret is picked up at once.
        context = ssl.create_default_context(cafile=self.ca)
        if self.cert:
            context.load_cert_chain(self.cert, self.key)
        return http.client.HTTPSConnection(host, port or 443, timeout=self.timeout, context=context)


def _server_serial(connection: http.client.HTTPConnection) -> str | None:
    sock = connection.sock
    if isinstance(sock, ssl.SSLSocket):
        peer = sock.getpeercert()
        return str(peer.get("serialNumber")) if peer else None
    return None


def _failure(connection: http.client.HTTPConnection, error: Exception) -> dict[str, Any]:
    """Where a request failed. A TLS alert (a refused client certificate) can arrive after the handshake
    seemed done, with the first read: any SSL error counts as the TLS stage."""
    if isinstance(error, ssl.SSLError):
        stage = "tls"
    elif isinstance(error, ConnectionRefusedError):
        stage = "refused"
    elif isinstance(error, TimeoutError | socket.timeout) and connection.sock is None:
        stage = "connect-timeout"
    elif connection.sock is None:
        stage = "connect"
    else:
        stage = "http"
    return {"stage": stage, "error": f"{type(error).__name__}: {error}"}


def get(target: Target) -> dict[str, Any]:
    connection = target.connection()
    try:
        connection.request("GET", target.path)
        reply = connection.getresponse()
        body = reply.read().decode(errors="replace")
        return {"status": reply.status, "body": body, "server_serial": _server_serial(connection)}
    except (OSError, http.client.HTTPException) as error:
        return _failure(connection, error)
    finally:
        connection.close()


def stream(target: Target) -> dict[str, Any]:
    connection = target.connection()
    started = time.monotonic()
    events: list[dict[str, Any]] = []
    try:
        connection.request("GET", target.path, headers={"Accept": "text/event-stream"})
        reply = connection.getresponse()
        for line in reply:  # http.client undoes the chunking; lines arrive as the server sends them
            text = line.decode().rstrip("\r\n")
            if text.startswith("data: "):
                events.append({"data": json.loads(text[6:]), "at": time.monotonic() - started})
        return {"status": reply.status, "events": events, "headers": dict(reply.getheaders())}
    except (OSError, http.client.HTTPException) as error:
        return {**_failure(connection, error), "events": events}
    finally:
        connection.close()


def watch(target: Target, seconds: float, interval: float) -> None:
    """Like a client with one retry: a refused connection is tried once more, and the reply says so.
    A pod being replaced refuses connections until the Service stops sending them to it."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        reply = get(target)
        if reply.get("stage") == "refused":
            time.sleep(RETRY_PAUSE_SECONDS)
            reply = {**get(target), "retried_after": reply["error"]}
        print(json.dumps({"time": time.time(), **reply}), flush=True)
        time.sleep(interval)


@dataclass
class _BenchWorker:
    target: Target
    deadline: float
    latencies: list[float] = field(default_factory=list)
    errors: int = 0

    def run(self) -> None:
        connection = self.target.connection()  # one kept-alive connection per worker, like a client pool
        while time.monotonic() < self.deadline:
            started = time.perf_counter()
            try:
                connection.request("GET", self.target.path)
                reply = connection.getresponse()
                reply.read()
                if reply.status != 200:
                    self.errors += 1
                    continue
                self.latencies.append(time.perf_counter() - started)
            except (OSError, http.client.HTTPException):
                self.errors += 1
                connection.close()
                connection = self.target.connection()
        connection.close()


def bench(target: Target, seconds: float, connections: int) -> dict[str, Any]:
    get(target)  # warm up: name resolution, first handshake
    deadline = time.monotonic() + seconds
    workers = [_BenchWorker(target, deadline) for _ in range(connections)]
    threads = [threading.Thread(target=worker.run) for worker in workers]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    latencies = sorted(value for worker in workers for value in worker.latencies)
    if not latencies:
        return {"requests": 0, "errors": sum(worker.errors for worker in workers)}
    return {
        "requests": len(latencies),
        "errors": sum(worker.errors for worker in workers),
        "seconds": elapsed,
        "rps": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
    }


def tcp(host: str, port: int, timeout: float) -> dict[str, Any]:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return {"result": "open"}
    except ConnectionRefusedError:
        return {"result": "refused"}
    except TimeoutError:
        return {"result": "timeout"}
    except OSError as error:
        return {"result": "error", "error": f"{type(error).__name__}: {error}"}


def dns(name: str) -> dict[str, Any]:
    try:
        found = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
        return {"addresses": sorted({str(item[4][0]) for item in found})}
    except OSError as error:
        return {"error": f"{type(error).__name__}: {error}"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    probe = commands.add_parser("tcp")
    probe.add_argument("host")
    probe.add_argument("port", type=int)
    probe.add_argument("--timeout", type=float, default=3.0)
    commands.add_parser("dns").add_argument("name")
    for name in ("get", "stream", "watch", "bench"):
        command = commands.add_parser(name)
        command.add_argument("url")
        command.add_argument("--cert")
        command.add_argument("--key")
        command.add_argument("--ca")
        command.add_argument("--timeout", type=float, default=5.0)
        if name in ("watch", "bench"):
            command.add_argument("--seconds", type=float, required=True)
        if name == "watch":
            command.add_argument("--interval", type=float, default=0.5)
        if name == "bench":
            command.add_argument("--connections", type=int, default=4)
    return parser


def main(argv: list[str] | None = None) -> None:
    arguments = _parser().parse_args(argv)
    if arguments.command == "tcp":
        print(json.dumps(tcp(arguments.host, arguments.port, arguments.timeout)))
        return
    if arguments.command == "dns":
        print(json.dumps(dns(arguments.name)))
        return
    target = Target(
        urllib.parse.urlsplit(arguments.url), arguments.cert, arguments.key, arguments.ca, arguments.timeout
    )
    if arguments.command == "get":
        print(json.dumps(get(target)))
    elif arguments.command == "stream":
        print(json.dumps(stream(target)))
    elif arguments.command == "watch":
        watch(target, arguments.seconds, arguments.interval)
    else:
        print(json.dumps(bench(target, arguments.seconds, arguments.connections)))


if __name__ == "__main__":
    main()
