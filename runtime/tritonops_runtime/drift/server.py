"""The drift monitor's HTTP endpoint (``contract.DRIFT_PORT``): metrics, status, health and feedback.

Routes (paths from :mod:`tritonops_runtime.contract`):

- ``GET /metrics``: Prometheus text exposition of the monitor's own registry;
- ``GET /v1/status``: JSON (see :meth:`App.status`);
- ``GET /healthz``: 200 ``ok`` while the monitor's loop is alive and turning, else 503 with the reason
  (a liveness probe restarts a stuck sidecar);
- ``POST /v1/feedback``: ground-truth labels, ``{"id", "label"}`` or ``{"items": [...]}`` -> 200
  ``{"joined", "unknown", "invalid"}``; 400 naming the malformed field; 411 without a Content-Length; 413 over
  :data:`MAX_BODY` (1 MiB; the body is read and dropped, up to :data:`MAX_DISCARD`, so that the answer is not
  lost to a connection reset); 404 when quality is not configured.

Design choices: a ``ThreadingHTTPServer`` (one daemon thread per connection) so a slow client never holds
up another; the handler does no I/O beyond its socket and calls only the lock-protected snapshot methods of
the :class:`App`, so it never blocks the collector loop for longer than a copy. Each connection has a socket
timeout (:data:`TIMEOUT_S`), which bounds how long idle or trickling clients hold a thread. Errors are JSON
``{"error": "..."}``. Access logs are off (a scrape every few seconds would drown the log).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final, Protocol

from prometheus_client.exposition import CONTENT_TYPE_LATEST

from tritonops_runtime import contract as c

MAX_BODY: Final = 1 << 20
MAX_DISCARD: Final = 8 << 20  # of a body over MAX_BODY, read and dropped before answering 413
TIMEOUT_S: Final = 10.0
JSON_TYPE: Final = "application/json"
log = logging.getLogger("tritonops.drift")


class App(Protocol):
    """What the server serves (the monitor implements it)."""

    def metrics(self) -> bytes:
        """The Prometheus text exposition."""
        ...

    def status(self) -> dict[str, Any]:
        """The status document (JSON-able; non-finite floats are sent as null)."""
        ...

    def health(self) -> tuple[bool, str]:
        """(healthy, reason)."""
        ...

    def feedback(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON answer) for a feedback body."""
        ...


def finite(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None, recursively (strict JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


class _Handler(BaseHTTPRequestHandler):
    server: MonitorHTTPServer
    timeout = TIMEOUT_S
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, doc: dict[str, Any]) -> None:
        body = json.dumps(finite(doc), allow_nan=False, sort_keys=True).encode() + b"\n"
        self._send(status, body, JSON_TYPE)

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def do_GET(self) -> None:
        app, path = self.server.app, self.path.split("?", 1)[0]
        if path == c.METRICS_PATH:
            self._send(200, app.metrics(), CONTENT_TYPE_LATEST)
        elif path == c.DRIFT_STATUS_PATH:
            self._json(200, app.status())
        elif path == c.DRIFT_HEALTH_PATH:
            healthy, reason = app.health()
            self._send(200 if healthy else 503, (reason + "\n").encode(), "text/plain; charset=utf-8")
        elif path == c.FEEDBACK_PATH:
            self._error(405, f"use POST for {c.FEEDBACK_PATH}")
        else:
            self._error(404, f"no such path: {path[:200]}")

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        body = self._body()
        if body is None:
            return
        if path == c.FEEDBACK_PATH:
            status, answer = self.server.app.feedback(body)
            self._json(status, answer)
        elif path in (c.METRICS_PATH, c.DRIFT_STATUS_PATH, c.DRIFT_HEALTH_PATH):
            self._error(405, f"POST is accepted only on {c.FEEDBACK_PATH}")
        else:
            self._error(404, f"no such path: {path[:200]}")

    def _body(self) -> bytes | None:
        """The request body, or None after answering 411/413/400."""
        length_text = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding") or length_text is None:
            self.close_connection = True
            self._error(411, "a Content-Length is required (no chunked transfer)")
            return None
        try:
            length = int(length_text)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            self._error(400, f"bad Content-Length {length_text[:50]!r}")
            return None
        if length > MAX_BODY:
            self._discard(length)
            self.close_connection = True
            self._error(413, f"body of {length} bytes is over the limit of {MAX_BODY} bytes: send fewer items "
                             "per request")
            return None
        return self.rfile.read(length)

    def _discard(self, length: int) -> None:
        """Read and drop up to :data:`MAX_DISCARD` bytes of an unwanted body, so that closing the connection
        does not reset it (a reset can destroy the answer before the client reads it)."""
        left = min(length, MAX_DISCARD)
        with contextlib.suppress(OSError):
            while left > 0 and (chunk := self.rfile.read(min(left, 1 << 16))):
                left -= len(chunk)


class MonitorHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server bound to one :class:`App`."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], app: App) -> None:
        self.app = app
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)


def parse_listen(text: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``, ``:port`` for all interfaces) -> (host, port); ValueError otherwise."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"--listen must be HOST:PORT, got {text!r}")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return host or "0.0.0.0", int(port_text)


def serve(loop: Callable[[threading.Event], None], server: MonitorHTTPServer, stop: threading.Event) -> int:
    """Run ``loop(stop)`` and the server on daemon threads until ``stop`` is set (a signal handler sets it);
    returns 0, or 1 when the loop returned or raised on its own. The server is shut down either way."""
    threads = [threading.Thread(target=loop, args=(stop,), name="drift-loop", daemon=True),
               threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="drift-http",
                                daemon=True)]
    for thread in threads:
        thread.start()
    code = 0
    while not stop.wait(0.2):
        if not threads[0].is_alive():
            log.error("the monitor loop stopped unexpectedly")
            code = 1
            break
    stop.set()
    server.shutdown()
    server.server_close()
    threads[0].join(timeout=5)
    return code
