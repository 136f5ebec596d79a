"""Start, watch and stop the control-plane processes of one local cluster.

The processes run in their own sessions (``start_new_session``), so they outlive the Python process
that started them (``tritonops dev up``) until :meth:`ControlPlane.stop`; with ``detach=False`` (tests)
Linux kills them when that process dies, so a killed test run leaves nothing behind.
Their PIDs, ports and binary paths live in ``cluster.json`` in the state directory; a PID is only ever
signalled after checking ``/proc/<pid>/cmdline`` still names our binary and our state directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tritonops.devcluster import components as comps
from tritonops.devcluster.components import Component, Layout, Ports
from tritonops.devcluster.pki import make_pki

START_GROUPS = (("etcd",), ("kube-apiserver",), ("kube-controller-manager", "kube-scheduler", "kwok"))
_DROPPED_ENV = ("KUBECONFIG", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy")


class ClusterError(RuntimeError):
    """The control plane could not be started (the message carries the relevant log tail)."""


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that were free a moment ago (all bound at once, then released)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for s in socks:
            s.bind((comps.LOOPBACK, 0))
        return [int(s.getsockname()[1]) for s in socks]


def tail(path: Path, lines: int = 80) -> str:
    """The last ``lines`` lines of a (possibly large) text file; empty if it does not exist."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 256 * lines))
            data = f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded up front: the forked child only makes one plain call
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: ask Linux to SIGKILL it when the starting thread exits.

    SIGKILL, not SIGTERM: every component gets it at once, and kube-apiserver does not finish a graceful
    shutdown once etcd is gone.
    """
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _component_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}


def spawn(argv: list[str], log_path: Path, cwd: Path, *, detach: bool,
          env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session with stdout and stderr appended to ``log_path``.

    ``detach=False``: Linux kills it when the calling thread exits (see :func:`_die_with_parent`).
    ``env`` adds to (or overrides) the component environment.
    """
    with log_path.open("ab") as log:
        log.write(f"\n==== {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(argv)}\n".encode())
        log.flush()
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                cwd=cwd, env={**_component_env(), **(env or {})}, start_new_session=True,
                                # the hook only calls prctl(2): no locks, no allocation
                                preexec_fn=None if detach else _die_with_parent)  # noqa: PLW1509


def gone(pid: int) -> bool:
    """Whether ``pid`` no longer runs (exited, or a zombie waiting to be reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] in ("Z", "X")
    except OSError:
        return True


def terminate(pids: list[int], grace: float) -> None:
    """SIGTERM ``pids``, SIGKILL what still runs after ``grace`` seconds, and wait (5 s) until all are gone."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if not gone(p)]
            time.sleep(0.05)
        if not pids:
            return


def owns(pid: int, argv0: str, root: Path) -> bool:
    """Whether ``pid`` is alive, runs ``argv0`` and names ``root`` in its arguments (so it is ours)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if gone(pid):
        return False
    mark = str(root).encode()
    return bool(argv) and argv[0].decode(errors="replace") == argv0 and any(mark in a for a in argv[1:])


def wait_started(name: str, ready: Callable[[], bool], alive: Callable[[], bool], log: Path, deadline: float,
                 what: str = "ready") -> None:
    """Poll ``ready`` until it holds; raise :class:`ClusterError` with ``log``'s tail if the process exits or
    ``deadline`` (monotonic) passes first."""
    while not ready():
        if not alive():
            raise ClusterError(f"{name} exited during start-up; last log lines:\n{tail(log, 40)}")
        if time.monotonic() > deadline:
            raise ClusterError(f"{name} not {what} in time; last log lines:\n{tail(log, 40)}")
        time.sleep(0.1)


class ControlPlane:
    """etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok for one state directory."""

    def __init__(self, state_dir: Path, bin_dir: Path, name: str = "dev", *, detach: bool = True) -> None:
        """``detach=False`` ties the components to this process: they are killed if it dies (tests)."""
        self.layout = Layout(state_dir.resolve())
        self.detach = detach
        self.bin_dir = bin_dir.resolve()
        self.name = name
        self.ports: Ports | None = None
        self.pids: dict[str, int] = {}
        self.argv0: dict[str, str] = {}
        self.started_at = 0.0
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def kubeconfig(self) -> Path:
        return self.layout.kubeconfig

    @property
    def logs_dir(self) -> Path:
        return self.layout.logs

    # -- persistence -------------------------------------------------------------------------------

    @classmethod
    def load(cls, state_dir: Path) -> ControlPlane | None:
        """The cluster recorded in ``state_dir`` (running or not), or None if there is no record."""
        try:
            data: dict[str, Any] = json.loads(Layout(state_dir).state.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        cp = cls(state_dir, Path(data["bin_dir"]), data.get("name", "dev"))
        cp.ports = Ports(**data["ports"]) if data.get("ports") else None
        cp.pids = {k: int(v) for k, v in data.get("pids", {}).items()}
        cp.argv0 = dict(data.get("argv0", {}))
        cp.started_at = float(data.get("started_at", 0.0))
        return cp

    def save(self) -> None:
        data = {"name": self.name, "bin_dir": str(self.bin_dir), "ports": asdict(self.ports) if self.ports else None,
                "pids": self.pids, "argv0": self.argv0, "started_at": self.started_at,
                "kubeconfig": str(self.kubeconfig)}
        tmp = self.layout.state.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(self.layout.state)

    # -- start -------------------------------------------------------------------------------------

    def start(self, timeout: float = 180.0, pod_ready_delay_ms: int = 300) -> None:
        """Write PKI, kubeconfig and kwok config, start every component and wait until each is healthy.

        Ports are picked free just before the start; if another process grabs one in between, the start
        is retried (twice) on fresh ports with a fresh etcd.
        """
        for attempt in range(3):
            try:
                self._start_once(timeout, pod_ready_delay_ms)
                return
            except ClusterError as err:
                if "address already in use" not in str(err) or attempt == 2:
                    raise
                shutil.rmtree(self.layout.etcd_data, ignore_errors=True)

    def _start_once(self, timeout: float, pod_ready_delay_ms: int) -> None:
        lay = self.layout
        lay.logs.mkdir(parents=True, exist_ok=True)
        if not lay.pki.complete():
            make_pki(lay.pki.dir)
        self.ports = Ports(*free_ports(6))
        self.started_at = time.time()
        lay.kubeconfig.write_text(comps.kubeconfig(lay.pki, self.ports.server, self.name))
        lay.kubeconfig.chmod(0o600)
        lay.kwok_config.write_text(comps.kwok_config(self.bin_dir / "kwok-stages", pod_ready_delay_ms))
        by_name = {c.name: c for c in comps.components(self.bin_dir, lay, self.ports)}
        deadline = time.monotonic() + timeout
        try:
            for group in START_GROUPS:
                for name in group:
                    self._spawn(by_name[name])
                for name in group:
                    self._wait_healthy(by_name[name], deadline)
        except BaseException:
            self.stop()
            raise

    def _spawn(self, comp: Component) -> None:
        proc = spawn(comp.argv, self.layout.log(comp.name), self.layout.root, detach=self.detach)
        self._procs[comp.name] = proc
        self.pids[comp.name] = proc.pid
        self.argv0[comp.name] = comp.argv[0]
        self.save()

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.layout.pki.ca_cert))
        ctx.load_cert_chain(str(self.layout.pki.admin_cert), str(self.layout.pki.admin_key))
        return ctx

    def probe(self, url: str) -> bool:
        """Whether ``url`` (one of our loopback health endpoints) answers 200 right now."""
        try:
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                                 urllib.request.HTTPSHandler(context=self._ssl_context()))
            with opener.open(url, timeout=2) as resp:
                return int(resp.status) == 200
        except (urllib.error.URLError, OSError, ssl.SSLError):
            return False

    def _wait_healthy(self, comp: Component, deadline: float) -> None:
        wait_started(comp.name, lambda: self.probe(comp.health_url), lambda: self.alive(comp.name),
                     self.layout.log(comp.name), deadline, f"healthy at {comp.health_url}")

    # -- observe -----------------------------------------------------------------------------------

    def alive(self, name: str) -> bool:
        """Whether component ``name`` is still running (and is really ours)."""
        proc = self._procs.get(name)
        if proc is not None:
            return proc.poll() is None
        pid = self.pids.get(name)
        return pid is not None and owns(pid, self.argv0.get(name, ""), self.layout.root)

    def status(self) -> dict[str, bool]:
        """Component name -> running, in start order."""
        return {name: self.alive(name) for group in START_GROUPS for name in group}

    def is_running(self) -> bool:
        """Every component is up and the apiserver reports ready."""
        if self.ports is None or not all(self.status().values()):
            return False
        return self.probe(f"{self.ports.server}/readyz")

    def log_tails(self, lines: int = 80) -> str:
        """The last lines of every component log, one section each (for test failure reports)."""
        parts = []
        for group in START_GROUPS:
            for name in group:
                text = tail(self.layout.log(name), lines)
                parts.append(f"---- {name} ({self.layout.log(name)}) ----\n{text}")
        return "\n".join(parts)

    # -- stop --------------------------------------------------------------------------------------

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM each component in reverse start order, SIGKILL it after ``grace`` seconds."""
        for group in reversed(START_GROUPS):
            for name in reversed(group):
                self._stop_one(name, grace)
        self.pids.clear()
        self._procs.clear()
        if self.layout.state.parent.is_dir():
            self.save()

    def _stop_one(self, name: str, grace: float) -> None:
        pid = self.pids.get(name)
        if pid is not None and self.alive(name):
            terminate([pid], grace)
