"""Fixtures of the end-to-end tier: real pods on the local cluster's real node, a real S3 model store.

- ``real_node`` (session): containerd + kubelet + kube-proxy joined to the session's control plane, with the
  locally built images imported (``tritonops.devcluster``). At the end of the session it is *crashed*
  (SIGKILL to every node component, pods left running) and cleared with ``tritonops dev down --force``;
  the fixture then asserts that nothing of it is left on the host (``hostclean.footprint``).
  Needs the local control plane: against a ``$KUBECONFIG`` cluster the tier is skipped.
- ``model_store`` (session): versitygw on the bridge's gateway address, which pods reach and nothing
  beyond this machine does, holding the example model (ONNX) and a file Triton cannot load.
- ``e2e_operator``: ``tritonops run`` for the test's namespace (restricted Pod Security) with the chart's RBAC,
  using the runtime image imported into the node.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ExampleModel
from tests.integration.rbac import operator_kubeconfig
from tests.integration.support import Api, OperatorProcess
from tests.s3 import S3Server, running_s3
from tritonops.devcluster import hostclean
from tritonops.devcluster.images import RUNTIME_IMAGE, TRITON_IMAGE
from tritonops.devcluster.nodeconf import GATEWAY, REAL_NODE_LABEL, REAL_NODE_TOLERATION
from tritonops.devcluster.realnode import RealNode
from tritonops.devcluster.session import ClusterHandle

BUCKET = "models"
SECRET = "model-store"


@dataclass(frozen=True)
class ModelStore:
    """The S3 server pods fetch from and what it holds."""

    s3: S3Server
    example: ExampleModel
    digest: str  # sha256:<hex> of the example's ONNX file

    def uri(self, key: str) -> str:
        return f"s3://{BUCKET}/{key}"


def _crash_and_force_down(node: RealNode, dev_home: Path) -> None:
    """Kill the node like a crashed run would, then clear it with the CLI; the host must be clean."""
    before = hostclean.load_record()
    assert before and before["root"] == str(node.layout.root), f"no machine record of the node: {before}"
    for pid in node.pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc = subprocess.run([sys.executable, "-m", "tritonops", "dev", "down", "--force"], capture_output=True,
                          text=True, timeout=300, check=False, env={**os.environ, "TRITONOPS_DEV_HOME": str(dev_home)})
    left = hostclean.footprint([str(node.layout.root)], before)
    assert proc.returncode == 0 and not left, (
        f"`tritonops dev down --force` exited {proc.returncode}:\n{proc.stdout}{proc.stderr}\nleft on the host:\n  "
        + "\n  ".join(left))


@pytest.fixture(scope="session")
def real_node(cluster: ClusterHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealNode]:
    if not cluster.owned:
        pytest.skip("the e2e tier runs on the real node of the local control plane; $KUBECONFIG is set")
    node = cluster.start_real_node()
    yield node
    cluster.real_node = None
    _crash_and_force_down(node, tmp_path_factory.mktemp("dev-home"))


@pytest.fixture(scope="session")
def model_store(real_node: RealNode, example_model: ExampleModel,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelStore]:
    assert example_model.onnx, f"the example model has no ONNX export: {example_model.summary}"
    with running_s3(tmp_path_factory.mktemp("s3-root"), host=GATEWAY) as s3:
        s3.put(BUCKET, "classifier/model.onnx", example_model.onnx)
        broken = tmp_path_factory.mktemp("broken") / "model.onnx"
        broken.write_bytes(b"this is not an ONNX graph\n" * 64)
        s3.put(BUCKET, "broken/model.onnx", broken)
        digest = "sha256:" + hashlib.sha256(example_model.onnx.read_bytes()).hexdigest()
        yield ModelStore(s3, example_model, digest)


@pytest.fixture
def store_secret(api: Api, namespace: str, model_store: ModelStore) -> str:
    """The credentials Secret of the model store in the test's namespace."""
    data = {k: base64.b64encode(v.encode()).decode() for k, v in model_store.s3.env().items()}
    api.core.create_namespaced_secret(namespace, {"metadata": {"name": SECRET}, "data": data})
    return SECRET


@contextlib.contextmanager
def running_operator(cluster: ClusterHandle, namespace: str, tmp_path: Path,
                     prometheus: str = "") -> Iterator[OperatorProcess]:
    """The operator under the chart's RBAC with the real node's runtime image (and a Prometheus, if given);
    its log's tail is printed at the end (pytest shows it when the test fails)."""
    kubeconfig = operator_kubeconfig(cluster, namespace, tmp_path)
    proc = OperatorProcess(str(kubeconfig), namespace, tmp_path / "operator.log", runtime_image=RUNTIME_IMAGE,
                           extra_args=["--prometheus-url", prometheus] if prometheus else [])
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
        print((tmp_path / "operator.log").read_text()[-8000:])


@pytest.fixture
def e2e_operator(cluster: ClusterHandle, api: Api, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    with running_operator(cluster, namespace, tmp_path) as proc:
        yield proc


def local_md(name: str, storage_uri: str, **model: Any) -> dict[str, Any]:
    """The example as a ModelDeployment for the real node: ONNX through the Python-backend wrapper on CPU."""
    return {
        "apiVersion": "tritonops.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": name},
        "spec": {
            "model": {"name": "classifier", "storageUri": storage_uri, "format": "onnx",
                      "credentials": {"secretName": SECRET},
                      "inputs": [{"name": "INPUT0", "dataType": "TYPE_FP32", "dims": [4]}],
                      "outputs": [{"name": "OUTPUT0", "dataType": "TYPE_FP32", "dims": [3]}], **model},
            "runtime": {"image": TRITON_IMAGE, "imagePullPolicy": "IfNotPresent", "startupTimeoutSeconds": 120,
                        "triton": {"backend": "PythonWrapper", "maxBatchSize": 8,
                                   "instanceGroups": [{"kind": "KIND_CPU", "count": 1}]}},
            "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "2Gi"}},
            "nodeSelector": {REAL_NODE_LABEL: "true"},
            "tolerations": [REAL_NODE_TOLERATION],
            "replicas": 1,
            "rollout": {"strategy": "Rolling", "progressDeadlineSeconds": 180},
        },
    }
