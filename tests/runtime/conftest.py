"""Fixtures for the runtime tests: the example model, local HTTP and S3 servers, the tritonserver binary.

Everything listens on 127.0.0.1 only. The S3 server is versitygw (a real S3 implementation) built from Go
modules by ``hack/build-s3.sh`` and cached under ``~/.cache/tritonops``; ``TRITONOPS_S3_SERVER`` may point to
a binary instead.
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.runtime.support import Env, make_env
from tritonops_runtime import localtriton

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class ExampleModel:
    """The generated example model (see examples/model/make_model.py)."""

    dir: Path
    torchscript: Path
    onnx: Path | None
    sample_inputs: list[list[float]]
    summary: dict[str, Any]


@pytest.fixture(scope="session")
def example_model(tmp_path_factory: pytest.TempPathFactory) -> ExampleModel:
    """Train and export the example model once per session (a few seconds on CPU)."""
    spec = importlib.util.spec_from_file_location("make_model", ROOT / "examples" / "model" / "make_model.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path_factory.mktemp("example-model")
    summary = module.make(out)
    sample = json.loads((out / "sample.json").read_text())
    onnx = Path(summary["onnx"]) if summary["onnx"] else None
    return ExampleModel(out, Path(summary["torchscript"]), onnx, sample["inputs"], summary)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


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
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield HttpServer(root, f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()


@dataclass(frozen=True)
class S3Server:
    """A running S3 server: its endpoint, credentials and the directory that backs its buckets."""

    endpoint: str
    access_key: str
    secret_key: str
    root: Path

    def env(self, **overrides: str) -> dict[str, str]:
        """Fetcher environment for this server."""
        base = {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_REGION": "us-east-1"}
        return {**base, **overrides}

    def put(self, bucket: str, key: str, source: Path) -> None:
        """Place an object (the posix backend serves files under <root>/<bucket>/<key>)."""
        dest = self.root / bucket / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)


def _s3_binary() -> Path | None:
    override = os.environ.get("TRITONOPS_S3_SERVER")
    if override:
        return Path(override)
    if shutil.which("go") is None:
        return None
    out = subprocess.run(["bash", str(ROOT / "hack" / "build-s3.sh")], capture_output=True, text=True, check=False)
    return Path(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else None


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"S3 server exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # it answers (403 for an anonymous ListBuckets)
        except (urllib.error.URLError, OSError):
            time.sleep(0.05)
    raise RuntimeError(f"S3 server not answering at {url} after {timeout}s")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """versitygw (posix backend) on a loopback port with one root key pair."""
    binary = _s3_binary()
    if binary is None or not binary.is_file():
        pytest.skip("no S3 server: run hack/build-s3.sh (needs Go) or set TRITONOPS_S3_SERVER")
    root = tmp_path_factory.mktemp("s3-root")
    port = localtriton.free_port()
    server = S3Server(f"http://127.0.0.1:{port}", "TRITONOPSTESTKEY", "tritonops-test-secret-0123456789", root)
    log = (root.parent / "versitygw.log").open("wb")
    proc = subprocess.Popen([str(binary), "--access", server.access_key, "--secret", server.secret_key,
                             "--port", f"127.0.0.1:{port}", "--quiet", "posix", "--nometa", str(root)],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_http(server.endpoint, proc, 30)
        yield server
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


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
