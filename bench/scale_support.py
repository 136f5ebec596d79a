"""What the operator-at-scale bench needs around the operator: a big KWOK cluster, the operator as a process,
its resource use sampled from ``/proc``, its request counters and the API server's, and a Deployment watch.

Nothing here measures by itself; ``bench/operator_scale.py`` drives the phases and turns these readings into
figures. Every reading is taken from the real thing: the operator's ``/metrics`` page (what it asked the API
server for, by verb and answer code), ``/proc/<pid>`` (RSS, user+system CPU), the API server's own
``apiserver_request_total`` (every client's requests, 429s included) and a watch on the Deployments the
operator owns (when each spec change reached its child, timestamped on arrival).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes

from bench.common import ROOT, BenchError
from tests.integration.support import kill_group, stop_group
from tritonops.builders.meta import LABEL_MANAGED_BY, LABEL_MD, MANAGED_BY
from tritonops.devcluster.launcher import free_ports

SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$', re.M)
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
WRITE_VERBS = frozenset({"apply", "patch", "create", "delete", "update"})
TICK = os.sysconf("SC_CLK_TCK")


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Prometheus text format → {(metric name, labels): value}."""
    samples = {}
    for m in SAMPLE.finditer(text):
        labels = frozenset(LABEL.findall(m.group("labels") or ""))
        with contextlib.suppress(ValueError):
            samples[(m.group("name"), labels)] = float(m.group("value"))
    return samples


def total(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
          where: Callable[[dict[str, str]], bool] = lambda _: True) -> float:
    """Sum of the samples of ``name`` whose labels satisfy ``where``."""
    return sum(v for (n, labels), v in samples.items() if n == name and where(dict(labels)))


def by_label(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
             label: str) -> dict[str, float]:
    """Sum of the samples of ``name`` grouped by one label's value."""
    out: dict[str, float] = defaultdict(float)
    for (n, labels), v in samples.items():
        if n == name:
            out[dict(labels).get(label, "")] += v
    return dict(out)


@dataclass
class OperatorRun:
    """``tritonops run`` over every namespace as a subprocess (killable, restartable) with its metrics port."""

    kubeconfig: Path
    log_path: Path
    resync_seconds: float
    source: Path = ROOT / "operator"  # the operator package's parent directory (another checkout's, to compare)
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    started: float = 0.0

    def start(self) -> None:
        self.port, health = free_ports(2)
        cmd = [sys.executable, "-m", "tritonops", "run", "--metrics-port", str(self.port), "--health-port",
               str(health), "--listen-address", "127.0.0.1", "--resync-seconds", str(self.resync_seconds),
               "--runtime-image", "tritonops-runtime:bench", *self.args]
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PYTHONPATH": str(self.source)}
        self.started = time.monotonic()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while not self.metrics_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"the operator did not start (exit {self.proc.poll()}); see {self.log_path}")
            time.sleep(0.2)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc and self.proc.poll() is None else None

    def metrics_text(self) -> str:
        if not self.port:
            return ""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as resp:
                text: str = resp.read().decode()
                return text
        except OSError:
            return ""

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        return parse_metrics(self.metrics_text())

    def kill(self) -> None:
        """SIGKILL: a crash, nothing finished or flushed."""
        kill_group(self.proc)

    def stop(self) -> None:
        stop_group(self.proc)


def proc_usage(pid: int) -> tuple[int, float] | None:
    """(RSS bytes, user+system CPU seconds) of a live process, None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14 and 15 of stat)
    rss = next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:"))
    return rss, cpu


@dataclass
class Sampler:
    """Samples the operator's RSS and CPU once a second, tagged with the bench's current phase."""

    operator: OperatorRun
    interval: float = 1.0
    phase: str = "start"
    samples: list[tuple[float, str, int, float]] = field(default_factory=list)  # (t, phase, rss, cpu seconds)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            pid = self.operator.pid
            usage = proc_usage(pid) if pid else None
            if usage:
                self.samples.append((time.monotonic(), self.phase, *usage))

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)

    def summary(self, phases: set[str] | None = None) -> dict[str, float | None]:
        """Peak and median RSS (MiB) and mean / peak CPU (cores) over the samples of ``phases``."""
        rows = [s for s in self.samples if phases is None or s[1] in phases]
        if len(rows) < 2:
            return {"rssPeakMiB": None, "rssMedianMiB": None, "cpuMeanCores": None, "cpuPeakCores": None}
        rss = sorted(r[2] for r in rows)
        rates = [(b[3] - a[3]) / (b[0] - a[0]) for a, b in itertools.pairwise(rows)
                 if b[0] > a[0] and b[3] >= a[3]]  # a restart resets the CPU counter: skip that pair
        return {"rssPeakMiB": rss[-1] / 2**20, "rssMedianMiB": rss[len(rss) // 2] / 2**20,
                "cpuMeanCores": sum(rates) / len(rates) if rates else None,
                "cpuPeakCores": max(rates) if rates else None}


def apiserver_requests(api: Any) -> dict[str, float]:
    """The API server's ``apiserver_request_total`` summed by answer code (all clients)."""
    method, url, headers, body, _ = api.param_serialize("GET", "/metrics", auth_settings=["BearerToken"])
    text = api.call_api(method, url, header_params=headers, body=body).read().decode()
    return by_label(parse_metrics(text), "apiserver_request_total", "code")


@dataclass
class DeploymentWatch:
    """Every version of our Deployments' ``spec.replicas`` as it arrives, per (namespace, ModelDeployment)."""

    api: Any
    seen: dict[tuple[str, str], list[tuple[float, int]]] = field(default_factory=lambda: defaultdict(list))
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        threading.Thread(target=self._run, name="deployment-watch", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        apps = kubernetes.client.AppsV1Api(self.api)
        while not self._stop.is_set():
            watch = kubernetes.watch.Watch()
            with contextlib.suppress(Exception):  # an expired watch (410) or a dropped stream: watch again
                for event in watch.stream(apps.list_deployment_for_all_namespaces, timeout_seconds=60,
                                          label_selector=f"{LABEL_MANAGED_BY}={MANAGED_BY}"):
                    self._record(event["object"])
                    if self._stop.is_set():
                        break
            watch.stop()

    def _record(self, obj: Any) -> None:
        owner = (obj.metadata.labels or {}).get(LABEL_MD)
        if owner:
            with self._lock:
                self.seen[(obj.metadata.namespace, owner)].append((time.monotonic(), obj.spec.replicas))

    def first(self, key: tuple[str, str], replicas: int, after: float) -> float | None:
        """When a Deployment of ``key`` was first seen asking for ``replicas`` at or after ``after``."""
        with self._lock:
            return next((t for t, r in self.seen.get(key, ()) if t >= after and r == replicas), None)


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (nearest rank) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def paced(rate: float, count: int) -> Iterator[int]:
    """Yield 0..count-1, the i-th at ``start + i / rate`` (late ticks are yielded at once, never skipped)."""
    start = time.monotonic()
    for i in range(count):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield i
