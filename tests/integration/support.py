"""Helpers for tests against a real API server: a client, the operator as a subprocess, waiting."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import kubernetes

from tests.chart.tools import run
from tests.integration.waiting import wait_for
from tritonops.devcluster.launcher import free_ports

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "modeldeployments.tritonops.io.yaml"
T = TypeVar("T")


def wait_until(what: str, probe: Callable[[], T | None], timeout: float = 60.0, interval: float = 0.2) -> T:
    """``wait_for`` with the description first (reads better in long predicates)."""
    return wait_for(probe, timeout, what, interval)


@dataclass
class Api:
    """Typed-enough access to the objects the tests look at."""

    client: Any

    @classmethod
    def from_kubeconfig(cls, path: str) -> Api:
        return cls(kubernetes.config.new_client_from_config(config_file=path))

    @property
    def core(self) -> Any:
        return kubernetes.client.CoreV1Api(self.client)

    @property
    def apps(self) -> Any:
        return kubernetes.client.AppsV1Api(self.client)

    @property
    def custom(self) -> Any:
        return kubernetes.client.CustomObjectsApi(self.client)

    @property
    def autoscaling(self) -> Any:
        return kubernetes.client.AutoscalingV2Api(self.client)

    @property
    def batch(self) -> Any:
        return kubernetes.client.BatchV1Api(self.client)

    def md(self, ns: str, name: str) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = self.custom.get_namespaced_custom_object(
                "tritonops.io", "v1alpha1", ns, "modeldeployments", name)
            return obj
        except kubernetes.client.ApiException as err:
            if err.status == 404:
                return None
            raise

    def create_md(self, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        obj: dict[str, Any] = self.custom.create_namespaced_custom_object(
            "tritonops.io", "v1alpha1", ns, "modeldeployments", body)
        return obj

    def patch_md(self, ns: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        obj: dict[str, Any] = self.custom.patch_namespaced_custom_object(
            "tritonops.io", "v1alpha1", ns, "modeldeployments", name, patch)
        return obj

    def delete_md(self, ns: str, name: str) -> None:
        self.custom.delete_namespaced_custom_object("tritonops.io", "v1alpha1", ns, "modeldeployments", name)

    def condition(self, ns: str, name: str, type_: str) -> dict[str, Any] | None:
        md = self.md(ns, name) or {}
        return next((c for c in md.get("status", {}).get("conditions", []) if c["type"] == type_), None)

    def deployments(self, ns: str, name: str) -> list[Any]:
        items: list[Any] = self.apps.list_namespaced_deployment(
            ns, label_selector=f"tritonops.io/modeldeployment={name}").items
        return items


def kubectl(cluster: Any, *args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the cluster's kubectl (ours, or the one on PATH for an external cluster)."""
    return run([cluster.tool("kubectl"), "--kubeconfig", str(cluster.kubeconfig), *args], stdin=stdin, check=check)


def helm(cluster: Any, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the cluster's helm against the cluster."""
    return run([cluster.tool("helm"), "--kubeconfig", str(cluster.kubeconfig), *args], check=check, timeout=240)


def install_crd(cluster: Any) -> None:
    kubectl(cluster, "apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    kubectl(cluster, "wait", "--for=condition=Established", "--timeout=60s",
            "crd/modeldeployments.tritonops.io")


def md_body(name: str, **overrides: Any) -> dict[str, Any]:
    """A small valid ModelDeployment; ``overrides`` replace top-level spec fields."""
    spec: dict[str, Any] = {
        "model": {"name": name.replace("-", "_"), "storageUri": f"s3://models/{name}/model.pt",
                  "format": "torchscript",
                  "inputs": [{"name": "INPUT0", "dataType": "TYPE_FP32", "dims": [4]}],
                  "outputs": [{"name": "OUTPUT0", "dataType": "TYPE_FP32", "dims": [3]}]},
        "runtime": {"triton": {"maxBatchSize": 8, "instanceGroups": [{"kind": "KIND_GPU", "count": 1}]}},
        "resources": {"limits": {"nvidia.com/gpu": 1, "memory": "1Gi"}, "requests": {"cpu": "100m"}},
        "replicas": 1,
    }
    spec.update(overrides)
    return {"apiVersion": "tritonops.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": name},
            "spec": spec}


_SAMPLE = re.compile(r'^tritonops_api_requests_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$', re.M)


@dataclass
class OperatorProcess:
    """``tritonops run`` as a subprocess against the test cluster (killable, restartable)."""

    kubeconfig: str
    namespace: str
    log_path: Path
    resync_seconds: float = 2.0
    runtime_image: str = "tritonops-runtime:test"  # KWOK pods never pull it; e2e passes the imported image
    extra_env: dict[str, str] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    metrics_port: int = 0

    def start(self) -> OperatorProcess:
        self.metrics_port, health = free_ports(2)
        env = {**os.environ, "KUBECONFIG": self.kubeconfig, **self.extra_env}
        cmd = [sys.executable, "-m", "tritonops", "run", "--namespace", self.namespace,
               "--metrics-port", str(self.metrics_port), "--health-port", str(health), "--listen-address", "127.0.0.1",
               "--resync-seconds", str(self.resync_seconds), "--runtime-image", self.runtime_image, *self.extra_args]
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until("operator metrics endpoint", self._metrics_text, timeout=60)
        return self

    def _metrics_text(self) -> str | None:
        if self.proc and self.proc.poll() is not None:
            raise AssertionError(f"operator exited with {self.proc.returncode}; see {self.log_path}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as r:
                text: str = r.read().decode()
                return text
        except OSError:
            return None

    def metrics_text(self) -> str:
        """The operator's /metrics page now."""
        return self._metrics_text() or ""

    def requests(self, verbs: set[str] | None = None, resource: str | None = None) -> float:
        """Sum of API requests made so far, filtered by verb and resource."""
        text = self._metrics_text() or ""
        total = 0.0
        for m in _SAMPLE.finditer(text):
            labels = dict(kv.split("=", 1) for kv in m.group("labels").split(","))
            labels = {k: v.strip('"') for k, v in labels.items()}
            if (verbs is None or labels["verb"] in verbs) and (resource is None or labels["resource"] == resource):
                total += float(m.group("value"))
        return total

    def writes(self) -> float:
        return self.requests({"apply", "patch", "create", "delete", "update"})

    def reconciles(self) -> float:
        """Reconcile cycles run so far (``tritonops_reconciles_total``; a cycle reads from the watch cache, so
        it need not make any request)."""
        text = self._metrics_text() or ""
        return sum(float(m.group(1)) for m in re.finditer(r'^tritonops_reconciles_total\{[^}]*\} (\S+)$', text, re.M))

    def kill(self) -> None:
        """SIGKILL: no chance to finish what it was doing."""
        kill_group(self.proc)

    def stop(self) -> None:
        stop_group(self.proc)


def kill_group(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL a process started with ``start_new_session`` and all its children."""
    if proc and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def stop_group(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM the group, SIGKILL it after 15 s."""
    if proc and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            kill_group(proc)


def ready(api: Api, ns: str, name: str) -> dict[str, Any] | None:
    """The ModelDeployment once Ready is True for its current generation."""
    cond = api.condition(ns, name, "Ready")
    md = api.md(ns, name) or {}
    if cond and cond["status"] == "True" and md["status"].get("observedGeneration") == md["metadata"]["generation"]:
        return md
    return None


def converged(api: Api, ns: str, name: str) -> dict[str, Any] | None:
    """Ready, with no revision left to roll out."""
    md = ready(api, ns, name)
    return md if md and not md["status"].get("canaryRevision") else None


def assert_no_writes_while_idle(operator: OperatorProcess) -> None:
    """Let in-flight cycles drain, then check that three more full cycles write nothing."""
    def reconciles() -> float:
        return operator.reconciles()

    start = reconciles()
    wait_until("two more reconciles", lambda: reconciles() >= start + 2, 30)
    writes, start = operator.writes(), reconciles()
    wait_until("three more reconciles", lambda: reconciles() >= start + 3, 30)
    assert operator.writes() == writes


def gpu_node(name: str, pool: str, gpus: int) -> dict[str, Any]:
    """A KWOK GPU node of its own pool (``tritonops.io/test-pool``): capacity no other test can take."""
    capacity = {"cpu": "16", "memory": "64Gi", "pods": "110", "nvidia.com/gpu": str(gpus)}
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "annotations": {"kwok.x-k8s.io/node": "fake"},
                         "labels": {"type": "kwok", "kubernetes.io/hostname": name, "tritonops.io/test-pool": pool,
                                    "nvidia.com/gpu.present": "true"}},
            "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]},
            "status": {"capacity": capacity, "allocatable": capacity}}
