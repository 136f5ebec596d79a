"""Scripted HTTP(S) servers on loopback for the fetcher tests: fixed answers per path, every request recorded.

A :class:`Recorder` answers each GET from its ``routes`` (status, headers, body; 404 otherwise) and keeps the
path and the headers it received, so a test can check what a redirect target was sent. ``tls_pair`` makes
a self-signed certificate for 127.0.0.1 (trusted by the fetcher through ``SSL_CERT_FILE``).
"""

from __future__ import annotations

import datetime as dt
import http.server
import ipaddress
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass
class Route:
    """One scripted answer; ``length=False`` sends no Content-Length (the body ends when the connection does)."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    length: bool = True


@dataclass
class Seen:
    """One request as received: path (with query) and headers (names lower-cased)."""

    path: str
    headers: dict[str, str]


class _Server(http.server.ThreadingHTTPServer):
    recorder: Recorder

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client hanging up early (the fetcher refusing a redirect or a body) is not a test failure


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        recorder = cast(_Server, self.server).recorder
        recorder.seen.append(Seen(self.path, {k.lower(): v for k, v in self.headers.items()}))
        route = recorder.routes.get(self.path.split("?")[0], Route(404, body=b"no such route"))
        self.send_response(route.status)
        for name, value in route.headers.items():
            self.send_header(name, value)
        if route.length:
            self.send_header("Content-Length", str(len(route.body)))
        self.end_headers()
        self.wfile.write(route.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Recorder:
    """A scripted HTTP (or HTTPS) server on 127.0.0.1 that records every request."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.routes: dict[str, Route] = {}
        self.seen: list[Seen] = []
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.recorder = self
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        """Answer ``path`` with a redirect to ``location``."""
        self.routes[path] = Route(status, {"Location": location})

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()


def tls_pair(directory: Path) -> tuple[ssl.SSLContext, Path]:
    """A server TLS context for 127.0.0.1 and the PEM file of its self-signed certificate (the CA to trust)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context, cert_file
