"""Fake (KWOK) nodes: CPU nodes and GPU nodes that advertise ``nvidia.com/gpu`` capacity.

A Node object annotated ``kwok.x-k8s.io/node: fake`` is adopted by our kwok controller, which marks it
Ready and keeps its lease renewed; the real scheduler then places pods on it by its ``status.allocatable``
(so ``nvidia.com/gpu`` requests are counted exactly as on a GPU cluster with the NVIDIA device plugin).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes

from tritonops.devcluster.components import KWOK_NODE_ANNOTATION

GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT = "NVIDIA-A100-SXM4-40GB"
NOT_READY_TAINT = "node.kubernetes.io/not-ready"


@dataclass(frozen=True)
class NodePool:
    """How many fake nodes of each kind to create."""

    cpu_nodes: int = 2
    gpu_nodes: int = 2
    gpus_per_node: int = 2
    gpu_product: str = GPU_PRODUCT
    prefix: str = "kwok"

    def __post_init__(self) -> None:
        if self.cpu_nodes < 0 or self.gpu_nodes < 0:
            raise ValueError("node counts must not be negative")
        if self.gpu_nodes and not 1 <= self.gpus_per_node <= 8:
            raise ValueError("gpus_per_node must be between 1 and 8")


def node_manifest(name: str, *, gpus: int = 0, gpu_product: str = GPU_PRODUCT) -> dict[str, Any]:
    """A Node for kwok to manage; with ``gpus`` > 0 it is a tainted GPU node with NVIDIA labels."""
    labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
              "type": "kwok"}
    capacity = {"cpu": "16", "memory": "64Gi", "pods": "110", "ephemeral-storage": "500Gi"}
    taints: list[dict[str, str]] = []
    if gpus:
        labels |= {"nvidia.com/gpu.present": "true", "nvidia.com/gpu.product": gpu_product,
                   "nvidia.com/gpu.count": str(gpus)}
        capacity |= {"cpu": "64", "memory": "512Gi", GPU_RESOURCE: str(gpus)}
        taints.append({"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"})
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels, "annotations": {KWOK_NODE_ANNOTATION: "fake"}},
        "spec": {"taints": taints} if taints else {},
        "status": {"capacity": capacity, "allocatable": dict(capacity)},
    }


def pool_manifests(pool: NodePool) -> list[dict[str, Any]]:
    """The Node manifests of ``pool``: ``<prefix>-cpu-<i>`` then ``<prefix>-gpu-<i>``."""
    cpu = [node_manifest(f"{pool.prefix}-cpu-{i}") for i in range(pool.cpu_nodes)]
    gpu = [node_manifest(f"{pool.prefix}-gpu-{i}", gpus=pool.gpus_per_node, gpu_product=pool.gpu_product)
           for i in range(pool.gpu_nodes)]
    return cpu + gpu


def node_is_ready(node: Any) -> bool:
    """Ready=True and no longer carrying the not-ready taint that admission puts on new nodes."""
    conditions = node.status.conditions or []
    ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
    return ready and not any(t.key == NOT_READY_TAINT for t in node.spec.taints or [])


def _apply_node(core: Any, manifest: dict[str, Any]) -> None:
    """Create the node (status included); re-post the status if the server dropped it on create."""
    name = manifest["metadata"]["name"]
    try:
        core.create_node(manifest)
    except kubernetes.client.ApiException as err:
        if err.status != 409:
            raise
    node = core.read_node(name)
    if not (node.status.allocatable or {}).get("pods"):
        core.patch_node_status(name, {"status": manifest["status"]})


def wait_nodes_ready(core: Any, names: list[str], timeout: float = 90.0) -> None:
    """Poll until every named node is Ready (see :func:`node_is_ready`)."""
    deadline = time.monotonic() + timeout
    pending = set(names)
    while pending:
        nodes = {n.metadata.name: n for n in core.list_node(label_selector="type=kwok").items}
        pending = {n for n in pending if n not in nodes or not node_is_ready(nodes[n])}
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"nodes not Ready after {timeout:.0f}s: {sorted(pending)}")
        time.sleep(0.2)


def create_nodes(kubeconfig: Path, pool: NodePool, timeout: float = 90.0) -> list[str]:
    """Create (idempotently) the nodes of ``pool`` and wait until they are Ready; return their names."""
    api = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    try:
        core = kubernetes.client.CoreV1Api(api)
        manifests = pool_manifests(pool)
        for manifest in manifests:
            _apply_node(core, manifest)
        names = [m["metadata"]["name"] for m in manifests]
        wait_nodes_ready(core, names, timeout)
        return names
    finally:
        api.close()
