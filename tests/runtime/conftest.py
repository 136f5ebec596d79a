"""Fixtures for the runtime tests: the example model, local HTTP and S3 servers, the tritonserver binary.

Everything listens on 127.0.0.1 only. The S3 server is versitygw (a real S3 implementation) built from Go
modules by ``hack/build-s3.sh`` and cached under ``~/.cache/tritonops``; ``TRITONOPS_S3_SERVER`` may point to
a binary instead.
"""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.runtime.servers import Recorder, tls_pair
from tests.runtime.support import Env, make_env
from tests.s3 import S3Server, running_s3
from tritonops_runtime import localtriton

ROOT = Path(__file__).resolve().parents[2]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client hanging up early (the fetcher refusing an over-limit body) is not a test failure


@dataclass
class HttpServer:
    """A static file server on a loopback port."""

    root: Path
    url: str


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[HttpServer]:
    """Serve ``tmp_path/www`` over HTTP on 127.0.0.1 (a thread; stopped after the test)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = _QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield HttpServer(root, f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[[], Recorder]]:
    """Start scripted, recording HTTP servers on loopback (each on its own port; stopped after the test)."""
    started: list[Recorder] = []

    def start() -> Recorder:
        started.append(Recorder())
        return started[-1]

    yield start
    for recorder in started:
        recorder.close()


@pytest.fixture
def https_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    """A scripted HTTPS server on loopback whose self-signed certificate the fetcher trusts (SSL_CERT_FILE)."""
    context, cert = tls_pair(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    recorder = Recorder(context)
    try:
        yield recorder
    finally:
        recorder.close()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """versitygw (posix backend) on a loopback port with one root key pair."""
    with running_s3(tmp_path_factory.mktemp("s3-root")) as server:
        yield server


@pytest.fixture(scope="session")
def tritonserver_bin() -> Path:
    """The tritonserver binary, or skip (nvidia-pytriton not installed)."""
    binary = localtriton.find_tritonserver()
    if binary is None:
        pytest.skip("tritonserver not found: pip install nvidia-pytriton (or set TRITONOPS_TRITONSERVER)")
    return binary


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Env:
    """A sandboxed fetch: repository, config file, termination log and PVC root under tmp_path."""
    return make_env(tmp_path, monkeypatch, capsys)
