"""A real Prometheus (Debian's package) for the tests: started on a loopback port with a given config."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.waiting import wait_for
from tritonops_runtime.contract import METRICS_PORT
from tritonops_runtime.localtriton import free_port


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as resp:
            return int(resp.status) == 200
    except OSError:
        return False


def _exited(proc: subprocess.Popen[bytes], workdir: Path) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"prometheus exited {proc.returncode}: "
                             f"{(workdir / 'prometheus.log').read_text()[-1500:]}")
    return False


@contextmanager
def running_prometheus(config: dict[str, Any], workdir: Path) -> Iterator[str]:
    """Prometheus with ``config`` (prometheus.yml as a dict); yields its base URL. Skips when not installed."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus not installed: bash hack/install-test-deps.sh (Debian's prometheus)")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    with (workdir / "prometheus.log").open("wb") as log:
        proc = subprocess.Popen([binary, f"--config.file={workdir / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={workdir / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda: _ready(url) or _exited(proc, workdir), 60, "Prometheus ready")
            yield url
        finally:
            proc.terminate()
            proc.wait(15)


def triton_pods_job(targets_file: Path, interval: str = "2s") -> dict[str, Any]:
    """A scrape job reading its targets from ``targets_file``, which :class:`PodTargets` keeps current.

    Debian's Prometheus is built without ``kubernetes_sd_configs`` ("field kubernetes_sd_configs not found"),
    so the test does the discovery itself and gives each pod the labels the chart's PodMonitor gives it
    (``namespace``, ``revision``, ``modeldeployment``, ``pod``): the labels canary analysis selects on.
    """
    return {"job_name": "triton", "scrape_interval": interval,
            "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": "1s"}]}


class PodTargets:
    """Writes the metrics endpoints of the Triton pods of ``namespace`` to a file_sd file every half second:
    each of ``ports`` a pod declares (Triton's metrics; the drift monitor's too when asked)."""

    def __init__(self, core: Any, namespace: str, path: Path, ports: tuple[int, ...] = (METRICS_PORT,)) -> None:
        self.core, self.namespace, self.path, self.ports = core, namespace, path, ports
        self.stop = threading.Event()
        self.path.write_text("[]")
        self.thread = threading.Thread(target=self._run, daemon=True)

    def targets(self) -> list[dict[str, Any]]:
        out = []
        pods = self.core.list_namespaced_pod(self.namespace, label_selector="app.kubernetes.io/managed-by=tritonops")
        for pod in pods.items:
            labels = pod.metadata.labels or {}
            if not pod.status.pod_ip or pod.metadata.deletion_timestamp:
                continue
            declared = {p.container_port for ctr in pod.spec.containers for p in ctr.ports or []}
            out.append({"targets": [f"{pod.status.pod_ip}:{port}" for port in self.ports if port in declared],
                        "labels": {"namespace": self.namespace, "pod": pod.metadata.name,
                                   "revision": labels.get("tritonops.io/revision", ""),
                                   "modeldeployment": labels.get("tritonops.io/modeldeployment", "")}})
        return out

    def _run(self) -> None:
        last = ""
        while not self.stop.wait(0.5):
            with contextlib.suppress(Exception):  # the API server may be briefly busy; the next pass catches up
                text = json.dumps(self.targets(), sort_keys=True)
                if text != last:
                    tmp = self.path.with_suffix(".tmp")
                    tmp.write_text(text)
                    tmp.replace(self.path)  # atomic: Prometheus never reads half a file
                    last = text

    def __enter__(self) -> PodTargets:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(10)
