"""A stand-in model server for the real-node tests: plain HTTP on the address the operator gives it.

It listens on SECUREMODELS_BIND_ADDRESS:SECUREMODELS_PORT (127.0.0.1:8080 unless told otherwise), as the
operator asks every model to, and answers what the tests need from a model behind the mTLS sidecar:
  GET /healthz      200 "ok", the health path the sidecar checks
  GET /v1/stream    server-sent events, one every 100 ms, each in its own HTTP chunk (?events=N, default 10)
  POST (any path)   the body read and dropped; 200 with its length, for uploads
  anything else     200 with a small JSON body naming the client identity the sidecar passed on
"""

from __future__ import annotations

import json
import os
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

EVENT_INTERVAL_SECONDS = 0.1
UPLOAD_CHUNK = 1 << 20
IDENTITY_HEADER = "X-Client-Identity"


class ModelHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, and chunked responses for the stream
    server_version = "modelstub"
    # Headers and body leave in separate writes; with Nagle's algorithm the body waits for the client's
    # delayed ACK (40 ms) on every kept-alive request.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/healthz":
            self._send(200, b"ok\n", "text/plain")
        elif url.path == "/v1/stream":
            events = int(urllib.parse.parse_qs(url.query).get("events", ["10"])[0])
            self._stream(events)
        else:
            body = {"model": "stub", "path": url.path, "client": self.headers.get(IDENTITY_HEADER, "")}
            self._send(200, json.dumps(body).encode() + b"\n", "application/json")

    def do_POST(self) -> None:
        remaining = int(self.headers.get("Content-Length", "0"))
        while remaining:
            chunk = self.rfile.read1(min(remaining, UPLOAD_CHUNK))
            if not chunk:
                break
            remaining -= len(chunk)
        received = int(self.headers.get("Content-Length", "0")) - remaining
        self._send(200, json.dumps({"received": received}).encode() + b"\n", "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, events: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        # Tells nginx not to buffer this response, the standard way for event streams behind it.
        self.send_header("X-Accel-Buffering", "no")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for number in range(events):
            event = f"id: {number}\ndata: {json.dumps({'n': number, 'sent': time.time()})}\n\n".encode()
            self.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
            self.wfile.flush()
            time.sleep(EVENT_INTERVAL_SECONDS)
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, format: str, *args: object) -> None:
        """Silent: a line per request would cost more than the request in the benchmark."""


def main() -> None:
    address = os.environ.get("SECUREMODELS_BIND_ADDRESS", "127.0.0.1")
    port = int(os.environ.get("SECUREMODELS_PORT", "8080"))
    server = ThreadingHTTPServer((address, port), ModelHandler)
    server.daemon_threads = True
    print(f"modelstub listening on {address}:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
