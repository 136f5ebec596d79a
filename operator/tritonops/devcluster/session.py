"""What a test session needs: a cluster handle (ours or ``$KUBECONFIG``'s) and throw-away namespaces.

``open_cluster`` starts a private control plane with KWOK nodes in a directory of the caller's choosing,
unless ``KUBECONFIG`` is set, in which case that cluster (kind, a real one) is used as is and nothing is
created on it. ``ClusterHandle.owned`` tells the two apart.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import kubernetes

from tritonops.devcluster.binaries import resolve_bin_dir, resolve_node_bin_dir
from tritonops.devcluster.images import build_images
from tritonops.devcluster.launcher import ClusterError, ControlPlane
from tritonops.devcluster.nodes import NodePool, create_nodes
from tritonops.devcluster.realnode import RealNode

RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}


@dataclass
class ClusterHandle:
    """A cluster to test against. ``bin_dir`` is None for an external cluster (use tools from PATH)."""

    kubeconfig: Path
    bin_dir: Path | None
    logs_dir: Path | None
    owned: bool
    control_plane: ControlPlane | None = None
    start_seconds: float = 0.0
    real_node: RealNode | None = None

    def tool(self, name: str) -> str:
        """Path of ``kubectl``/``helm`` for this cluster: ours, or the bare name (PATH) when external."""
        return str(self.bin_dir / name) if self.bin_dir else name

    def log_tails(self, lines: int = 80) -> str:
        node = f"\n{self.real_node.log_tails(lines)}" if self.real_node else ""
        return (self.control_plane.log_tails(lines) if self.control_plane else "") + node

    def start_real_node(self) -> RealNode:
        """Add the real node to our control plane (built and imported images cached); one per machine."""
        if self.real_node:
            return self.real_node
        if self.control_plane is None:
            raise ClusterError("a real node joins only the local control plane, not a $KUBECONFIG cluster")
        node = RealNode(self.control_plane, resolve_node_bin_dir(), detach=False)
        node.start(build_images())
        self.real_node = node
        return node

    def close(self) -> None:
        if self.real_node:
            self.real_node.stop()
        if self.control_plane:
            self.control_plane.stop()


def open_cluster(state_dir: Path, pool: NodePool, env: Mapping[str, str] = os.environ) -> ClusterHandle:
    """Use ``$KUBECONFIG`` if set, else start a control plane in ``state_dir`` and create ``pool``'s nodes."""
    external = env.get("KUBECONFIG", "")
    if external:
        first = next(p for p in external.split(os.pathsep) if p)
        return ClusterHandle(Path(first).expanduser(), None, None, owned=False)
    t0 = time.monotonic()
    cp = ControlPlane(state_dir, resolve_bin_dir(), name="test", detach=False)
    cp.start()
    try:
        create_nodes(cp.kubeconfig, pool)
    except BaseException:
        cp.stop()
        raise
    return ClusterHandle(cp.kubeconfig, cp.bin_dir, cp.logs_dir, owned=True, control_plane=cp,
                         start_seconds=time.monotonic() - t0)


def _core(kubeconfig: Path) -> kubernetes.client.CoreV1Api:
    api = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    return kubernetes.client.CoreV1Api(api)


def create_namespace(kubeconfig: Path, name: str, labels: Mapping[str, str] = RESTRICTED,
                     timeout: float = 60.0) -> None:
    """Create namespace ``name`` and wait until its ``default`` ServiceAccount exists (pods need it)."""
    core = _core(kubeconfig)
    try:
        meta = kubernetes.client.V1ObjectMeta(name=name, labels=dict(labels))
        core.create_namespace(kubernetes.client.V1Namespace(metadata=meta))
        deadline = time.monotonic() + timeout
        while True:
            try:
                core.read_namespaced_service_account("default", name)
                return
            except kubernetes.client.ApiException as err:
                if err.status != 404 or time.monotonic() > deadline:
                    raise
            time.sleep(0.1)
    finally:
        core.api_client.close()


def delete_namespace(kubeconfig: Path, name: str) -> None:
    """Start deleting namespace ``name`` (the namespace controller finishes it in the background)."""
    core = _core(kubeconfig)
    try:
        core.delete_namespace(name)
    except kubernetes.client.ApiException as err:
        if err.status != 404:
            raise
    finally:
        core.api_client.close()
