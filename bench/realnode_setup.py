"""Real pods for benches: the local control plane, its real node, an S3 model store, the operator.

- :func:`own_env` starts what the e2e tier's session fixtures start (``tests/conftest.py``'s ``cluster``,
  ``tests/e2e/conftest.py``'s ``real_node`` and ``model_store``) for a bench run from the command line: a
  private control plane without KWOK nodes in a temporary directory, the real node (containerd, kubelet,
  kube-proxy; images from ``hack/build-images.sh``'s cache, binaries resolved as ``tritonops.devcluster``
  does: ``$TRITONOPS_BIN_DIR`` / ``$TRITONOPS_NODE_BIN_DIR`` or the ``hack/build-*.sh`` caches), versitygw on
  the bridge's gateway address. It refuses to run with ``$KUBECONFIG`` set (the bench needs a node of its
  own) and beside another live real node (one per machine). At the end the node is stopped and every host
  change undone (:meth:`RealNode.stop`, i.e. ``hostclean.cleanup``); what is left is an error.
- A :class:`RealNodeEnv` can also be built from a session's cluster and store (``RealNodeEnv.of``): the e2e tier runs
  the bench's smoke size on its own node instead, as only one real node may run per machine.
- :func:`bench_namespace` (restricted Pod Security, with the store's credentials Secret), :func:`operator`
  (``tritonops run`` for that namespace, the runtime image imported into the node), :func:`real_node_md`
  (``examples/cpu-classifier.yaml`` made to run on the real node), and what a bench reads from a serving pod:
  :func:`serving_pod`, :func:`pod_cpu_s`, :func:`fetch_like_pod`, :func:`host_triton_args`, :func:`triton_ready`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.common import ROOT, BenchError, emit
from tests.integration.support import Api, OperatorProcess, converged, install_crd, wait_until
from tests.s3 import S3Server, running_s3, s3_binary
from tritonops.devcluster.images import RUNTIME_IMAGE, TRITON_IMAGE
from tritonops.devcluster.nodeconf import GATEWAY, REAL_NODE_LABEL, REAL_NODE_TOLERATION
from tritonops.devcluster.nodes import NodePool
from tritonops.devcluster.session import ClusterHandle, create_namespace, delete_namespace, open_cluster
from tritonops_runtime import contract as c

BUCKET = "models"
SECRET = "model-store"
EXAMPLE = ROOT / "examples" / "cpu-classifier.yaml"
MD_LABEL = "tritonops.io/modeldeployment"
CGROUP = Path("/sys/fs/cgroup")
# The triton container's flags that name pod paths and ports; a host server gets its own.
POD_ONLY_FLAGS = ("--model-repository=", "--http-port=", "--grpc-port=", "--metrics-port=", "--exit-timeout-secs=")


@dataclass(frozen=True)
class RealNodeEnv:
    """A cluster with a real node, an S3 store pods can reach, and a client of the cluster (CRD installed)."""

    cluster: ClusterHandle
    s3: S3Server
    api: Api

    @classmethod
    def of(cls, cluster: ClusterHandle, s3: S3Server) -> RealNodeEnv:
        if cluster.real_node is None:
            raise BenchError("the cluster has no real node: pods could not run")
        install_crd(cluster)
        return cls(cluster, s3, Api.from_kubeconfig(str(cluster.kubeconfig)))

    def put(self, key: str, source: Path) -> str:
        """Upload ``source`` to the store; its ``s3://`` URI."""
        self.s3.put(BUCKET, key, source)
        return f"s3://{BUCKET}/{key}"


@contextlib.contextmanager
def own_env(env: Mapping[str, str] = os.environ) -> Iterator[RealNodeEnv]:
    """A private control plane, its real node and an S3 store, all stopped (and the host cleaned) at the end."""
    if env.get("KUBECONFIG"):
        raise BenchError("this bench starts its own control plane and real node: unset KUBECONFIG")
    if (binary := s3_binary()) is None or not binary.is_file():
        raise BenchError("no S3 server: run hack/build-s3.sh (needs Go) or set TRITONOPS_S3_SERVER")
    with tempfile.TemporaryDirectory(prefix="tritonops-bench-realnode-", ignore_cleanup_errors=True) as tmp:
        t0 = time.monotonic()
        cluster = open_cluster(Path(tmp) / "cluster", NodePool(cpu_nodes=0, gpu_nodes=0), env={})
        try:
            cluster.start_real_node()  # refuses beside another live real node
            emit(f"control plane and real node up in {time.monotonic() - t0:.0f}s (state {tmp})")
            (Path(tmp) / "s3").mkdir()
            with running_s3(Path(tmp) / "s3", host=GATEWAY) as s3:
                yield RealNodeEnv.of(cluster, s3)
        finally:
            left = _stop(cluster)
        if left:
            raise BenchError("the real node left this on the host (`tritonops dev down --force` clears it):\n  "
                             + "\n  ".join(left))


def _stop(cluster: ClusterHandle) -> list[str]:
    """Stop the node (undoing its host changes) and the control plane; what the node left on the host."""
    node, cluster.real_node = cluster.real_node, None
    try:
        left = node.stop() if node else []
    finally:
        cluster.close()
    if left:
        emit("!! left on the host after stopping the real node:\n  " + "\n  ".join(left))
    return left


@contextlib.contextmanager
def bench_namespace(bed: RealNodeEnv, prefix: str) -> Iterator[str]:
    """A fresh namespace (restricted Pod Security) holding the store's credentials as Secret ``SECRET``."""
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    create_namespace(bed.cluster.kubeconfig, name)
    try:
        bed.api.core.create_namespaced_secret(name, {"metadata": {"name": SECRET}, "stringData": bed.s3.env()})
        yield name
    finally:
        delete_namespace(bed.cluster.kubeconfig, name)


@contextlib.contextmanager
def operator(bed: RealNodeEnv, namespace: str, log_path: Path) -> Iterator[OperatorProcess]:
    """``tritonops run`` for ``namespace`` (admin credentials, the production resync period)."""
    proc = OperatorProcess(str(bed.cluster.kubeconfig), namespace, log_path, resync_seconds=300.0,
                           runtime_image=RUNTIME_IMAGE)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def real_node_md(name: str, model: Mapping[str, Any], drift: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``examples/cpu-classifier.yaml`` as ``name`` on the real node: ``model`` overrides ``spec.model`` fields
    (the node's Triton image has onnxruntime, no torch: serve ONNX), the store's Secret, the local image."""
    doc = yaml.safe_load(EXAMPLE.read_text())
    spec = copy.deepcopy(doc["spec"])
    spec["model"].update(model, credentials={"secretName": SECRET})
    spec["runtime"].update(image=TRITON_IMAGE, imagePullPolicy="IfNotPresent", startupTimeoutSeconds=120)
    spec.update(nodeSelector={REAL_NODE_LABEL: "true"}, tolerations=[REAL_NODE_TOLERATION])
    if drift:
        spec["drift"] = dict(drift)
    return {"apiVersion": doc["apiVersion"], "kind": doc["kind"], "metadata": {"name": name}, "spec": spec}


def wait_converged(api: Api, namespace: str, names: list[str], timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    for name in names:
        wait_until(f"{name} Ready", lambda n=name: converged(api, namespace, n),  # type: ignore[misc]
                   timeout=max(1.0, deadline - time.monotonic()))


def serving_pod(api: Api, namespace: str, md: str) -> Any:
    """The one running pod of ModelDeployment ``md`` (V1Pod); BenchError if there is not exactly one."""
    pods = [p for p in api.core.list_namespaced_pod(namespace, label_selector=f"{MD_LABEL}={md}").items
            if p.status.phase == "Running" and not p.metadata.deletion_timestamp]
    if len(pods) != 1:
        raise BenchError(f"{md}: {len(pods)} running pods, expected 1")
    return pods[0]


def container_status(pod: Any, name: str = "triton") -> Any:
    return next(s for s in pod.status.container_statuses or [] if s.name == name)


def pod_cpu_s(uid: str) -> Callable[[], float | None]:
    """A reader of the pod's CPU time so far (s), all its containers together, from its cgroup (v1
    ``cpuacct.usage`` or v2 ``cpu.stat``); it returns None where the cgroup is not found."""
    found: list[Path] = []

    def read() -> float | None:
        if not found:
            found.extend(d for h in ("cpuacct", "cpu,cpuacct", ".")
                         for d in (CGROUP / h).glob(f"kubepods*/**/pod{uid}"))
        for d in found:
            if (d / "cpuacct.usage").is_file():
                return int((d / "cpuacct.usage").read_text()) / 1e9
            if (d / "cpu.stat").is_file():
                usage = dict(line.split() for line in (d / "cpu.stat").read_text().splitlines())
                return int(usage["usage_usec"]) / 1e6
        return None

    return read


def fetch_like_pod(api: Api, pod: Any, s3: S3Server, dest: Path) -> Path:
    """Run the pod's init container's fetch here: its environment (the Secret's keys from ``s3``) and the
    config.pbtxt the operator rendered into the pod's ConfigMap; the model repository under ``dest``."""
    init = next(ct for ct in pod.spec.init_containers if ct.command == ["tritonops-fetch"])
    env = {e.name: e.value for e in init.env or [] if e.value is not None}
    env.update({e.name: s3.env()[e.name] for e in init.env or [] if e.value_from and e.name in s3.env()})
    volume = next(v for v in pod.spec.volumes if v.name == "config")
    config = api.core.read_namespaced_config_map(volume.config_map.name, pod.metadata.namespace)
    dest.mkdir(parents=True)
    (dest / c.CONFIG_FILE).write_text(config.data[c.CONFIG_FILE])
    argv = ["--repository", str(dest / "repo"), "--config-file", str(dest / c.CONFIG_FILE),
            "--termination-log", str(dest / "termination-log"), "--scratch-dir", str(dest / "scratch")]
    (dest / "scratch").mkdir()
    proc = subprocess.run([sys.executable, "-m", "tritonops_runtime.fetch", *argv], env={"PATH": os.environ["PATH"],
                          **env}, capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise BenchError(f"the fetch of {env.get(c.ENV_STORAGE_URI)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return dest / "repo"


def triton_ready(host: str, port: int) -> bool:
    """Triton's ``/v2/health/ready`` answers 200 at ``host:port``."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{c.HEALTH_READY_PATH}", timeout=2) as resp:
            return int(resp.status) == 200
    except OSError:
        return False


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def host_triton_args(pod: Any) -> list[str]:
    """The pod's tritonserver flags but those naming pod paths and ports (``localtriton`` sets its own)."""
    triton = next(ct for ct in pod.spec.containers if ct.name == "triton")
    return [a for a in triton.args if not a.startswith(POD_ONLY_FLAGS)]
