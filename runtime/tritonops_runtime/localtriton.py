"""Run the real ``tritonserver`` from the ``nvidia-pytriton`` wheel locally (tests, ``tritonops dev``).

The wheel ships Triton (``pytriton/tritonserver/bin/tritonserver``), the Python backend
(``backends/python/``) and one Python-backend stub per interpreter version
(``python_backend_stubs/3.X/triton_python_backend_stub``), but the stub is not where Triton looks for it.
:func:`prepare_backend_dir` builds a backend directory of our own, ``<dir>/python/`` with symlinks to
``libtriton_python.so``, ``triton_python_backend_utils.py`` and the stub matching the running interpreter,
without touching site-packages.

The stub embeds CPython (it links ``libpython3.X.so.1.0``) and runs ``model.py`` in *isolated* mode:
``PYTHONPATH`` and ``PYTHONHOME`` are ignored. Its interpreter finds its prefix from the program name
``python3`` looked up on ``PATH`` and, like any CPython, switches to a virtual environment when a
``pyvenv.cfg`` sits next to (or one level above) that executable. So that it sees the same Python as the
caller (torch, onnxruntime, numpy in the venv), :func:`stub_environment` sets:

- ``PATH``: the directory of ``sys.executable`` first (the venv's ``bin/``, whose ``python3`` and
  ``pyvenv.cfg`` make the stub use the venv's ``site-packages``, ``.pth`` files included);
- ``LD_LIBRARY_PATH``: the running interpreter's ``LIBDIR`` first (its own ``libpython``, matching the
  standard library the prefix points to, rather than the system one), then the wheel's
  ``nvidia_pytriton.libs``.

The interpreter must be built with ``--enable-shared`` (Debian's and pyenv's builds with
``PYTHON_CONFIGURE_OPTS=--enable-shared`` are; the official ``python:3.11`` images are too).

:func:`start_tritonserver` picks free loopback ports, binds HTTP/gRPC/metrics to 127.0.0.1, starts the server
with its log in a file and waits on ``/v2/health/ready`` (raising :class:`TritonStartError` with the log's
tail when it exits or times out). Use it as a context manager, or call :meth:`TritonServer.stop`.
"""

from __future__ import annotations

import contextlib
import json
import os
import site
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tritonops_runtime import contract as c

ENV_TRITONSERVER = "TRITONOPS_TRITONSERVER"  # path to a tritonserver binary (else the pytriton wheel's)
LOOPBACK = "127.0.0.1"


class TritonStartError(RuntimeError):
    """tritonserver exited or did not become ready; the message ends with the log's tail."""


def pytriton_root() -> Path | None:
    """``<site-packages>/pytriton/tritonserver`` when the nvidia-pytriton wheel is installed."""
    for base in [*site.getsitepackages(), site.getusersitepackages(), *sys.path]:
        root = Path(base) / "pytriton" / "tritonserver"
        if (root / "bin" / "tritonserver").is_file():
            return root
    return None


def find_tritonserver() -> Path | None:
    """The tritonserver binary: ``$TRITONOPS_TRITONSERVER`` or the pytriton wheel's; None if neither."""
    override = os.environ.get(ENV_TRITONSERVER)
    if override:
        return Path(override) if Path(override).is_file() else None
    root = pytriton_root()
    return root / "bin" / "tritonserver" if root else None


def stub_path(root: Path) -> Path:
    """The Python-backend stub for the running interpreter's major.minor version."""
    return root / "python_backend_stubs" / f"{sys.version_info.major}.{sys.version_info.minor}" / \
        "triton_python_backend_stub"


def prepare_backend_dir(dest: Path) -> Path:
    """Create ``dest/python/`` (links to the Python backend and the stub); returns ``dest``."""
    root = pytriton_root()
    if root is None:
        raise TritonStartError("nvidia-pytriton is not installed: no Python backend to link")
    stub = stub_path(root)
    if not stub.is_file():
        raise TritonStartError(f"no Python-backend stub for Python {sys.version_info.major}."
                               f"{sys.version_info.minor} in {stub.parent.parent}")
    python = dest / "python"
    python.mkdir(parents=True, exist_ok=True)
    backend = root / "backends" / "python"
    for target in (backend / "libtriton_python.so", backend / "triton_python_backend_utils.py", stub):
        link = python / target.name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
    return dest


def _join(*parts: str) -> str:
    return os.pathsep.join(p for p in parts if p)


def stub_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for tritonserver so that the stub runs this interpreter with this site-packages."""
    env = dict(os.environ if base is None else base)
    root = pytriton_root()
    libs = str(root.parent.parent / "nvidia_pytriton.libs") if root else ""
    env["LD_LIBRARY_PATH"] = _join(str(sysconfig.get_config_var("LIBDIR") or ""), libs, env.get("LD_LIBRARY_PATH", ""))
    env["PATH"] = _join(str(Path(sys.executable).parent), env.get("PATH", ""))
    env.pop("PYTHONSTARTUP", None)
    return env


def free_port() -> int:
    """A currently free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class TritonServer:
    """A running tritonserver on loopback ports (see :func:`start_tritonserver`)."""

    process: subprocess.Popen[bytes]
    log_path: Path
    http_port: int
    grpc_port: int
    metrics_port: int
    _log: Any = field(default=None, repr=False)

    @property
    def http_url(self) -> str:
        """``127.0.0.1:<port>`` (tritonclient's URL form, no scheme)."""
        return f"{LOOPBACK}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        """``127.0.0.1:<port>`` for tritonclient.grpc."""
        return f"{LOOPBACK}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        """The Prometheus metrics endpoint."""
        return f"http://{LOOPBACK}:{self.metrics_port}{c.METRICS_PATH}"

    def log_text(self) -> str:
        """Everything the server logged so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        """(status, body) of a GET on the HTTP port; status 0 when the server does not answer."""
        try:
            with urllib.request.urlopen(f"http://{self.http_url}{path}", timeout=timeout) as resp:
                return resp.status, resp.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode("utf-8", "replace")
        except (urllib.error.URLError, OSError):
            return 0, ""

    def repository_index(self) -> list[dict[str, Any]]:
        """``POST /v2/repository/index``: every model with its state and reason."""
        req = urllib.request.Request(f"http://{self.http_url}/v2/repository/index", data=b"{}", method="POST")
        with urllib.request.urlopen(req, timeout=5) as resp:
            index: list[dict[str, Any]] = json.loads(resp.read())
            return index

    def metrics(self) -> str:
        """The metrics page text."""
        with urllib.request.urlopen(self.metrics_url, timeout=5) as resp:
            text: str = resp.read().decode("utf-8", "replace")
            return text

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Wait for ``/v2/health/ready`` = 200; TritonStartError if it exits or the deadline passes."""
        deadline = time.monotonic() + timeout
        delay = 0.05
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise TritonStartError(f"tritonserver exited with {self.process.returncode}:\n{self._tail()}")
            if self.get(c.HEALTH_READY_PATH, timeout=2)[0] == 200:
                return
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
        raise TritonStartError(f"tritonserver not ready after {timeout:.0f}s:\n{self._tail()}")

    def _tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (then SIGKILL after ``timeout``); returns the exit status."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.process.returncode

    def __enter__(self) -> TritonServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def launch(repository: Path, workdir: Path, args: Sequence[str] = (), binary: Path | None = None) -> TritonServer:
    """Start tritonserver (not waiting); ``workdir`` receives the backend dir and ``tritonserver.log``."""
    binary = binary or find_tritonserver()
    if binary is None:
        raise TritonStartError("tritonserver not found: install nvidia-pytriton or set TRITONOPS_TRITONSERVER")
    backend_dir = prepare_backend_dir(workdir / "backends")
    ports = [free_port() for _ in range(3)]
    cmd = [str(binary), f"--model-repository={repository}", f"--backend-directory={backend_dir}",
           f"--http-address={LOOPBACK}", f"--http-port={ports[0]}", f"--grpc-address={LOOPBACK}",
           f"--grpc-port={ports[1]}", f"--metrics-address={LOOPBACK}", f"--metrics-port={ports[2]}",
           "--exit-timeout-secs=10", *args]
    log_path = workdir / "tritonserver.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=stub_environment(), cwd=workdir,
                            start_new_session=True)
    return TritonServer(proc, log_path, ports[0], ports[1], ports[2], log)


def start_tritonserver(repository: Path, workdir: Path, args: Sequence[str] = (), timeout: float = 120.0,
                       attempts: int = 3) -> TritonServer:
    """Start tritonserver on free loopback ports and wait until ready (retrying on a port clash)."""
    workdir.mkdir(parents=True, exist_ok=True)
    for attempt in range(attempts):
        server = launch(repository, workdir, args)
        try:
            server.wait_ready(timeout)
        except TritonStartError as err:
            server.stop()
            if "address already in use" in str(err).lower() and attempt + 1 < attempts:
                continue
            raise
        return server
    raise TritonStartError("unreachable")  # pragma: no cover


@contextlib.contextmanager
def running_tritonserver(repository: Path, workdir: Path, args: Sequence[str] = (),
                         timeout: float = 120.0) -> Iterator[TritonServer]:
    """``with running_tritonserver(repo, tmp) as server:`` ready on entry, stopped on exit."""
    server = start_tritonserver(repository, workdir, args, timeout)
    try:
        yield server
    finally:
        server.stop()
