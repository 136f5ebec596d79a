"""A real S3 server for tests: versitygw (posix backend), built from Go modules by ``hack/build-s3.sh``.

Cached under ``~/.cache/tritonops``; ``TRITONOPS_S3_SERVER`` may point to a binary instead. It listens on
one address of this machine: loopback for the runtime tier, the real node's bridge address for pods (e2e).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tritonops_runtime import localtriton

ROOT = Path(__file__).resolve().parents[1]


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


def s3_binary() -> Path | None:
    """The versitygw binary (built and cached on first use), or None without Go."""
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


@contextlib.contextmanager
def running_s3(root: Path, host: str = "127.0.0.1", metadata: bool = False) -> Iterator[S3Server]:
    """versitygw serving ``root`` on a free port of ``host``, with one root key pair; skips without a binary.
    ``metadata``: with its (xattr) metadata store, which conditional writes (``If-None-Match``) need."""
    binary = s3_binary()
    if binary is None or not binary.is_file():
        pytest.skip("no S3 server: run hack/build-s3.sh (needs Go) or set TRITONOPS_S3_SERVER")
    port = localtriton.free_port()
    server = S3Server(f"http://{host}:{port}", "TRITONOPSTESTKEY", "tritonops-test-secret-0123456789", root)
    with (root.parent / f"versitygw-{port}.log").open("wb") as log:
        proc = subprocess.Popen([str(binary), "--access", server.access_key, "--secret", server.secret_key,
                                 "--port", f"{host}:{port}", "--quiet", "posix",
                                 *([] if metadata else ["--nometa"]), str(root)],
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_http(server.endpoint, proc, 30)
            yield server
        finally:
            proc.terminate()
            proc.wait(10)
