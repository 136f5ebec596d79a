"""A local Kubernetes control plane for development and integration tests.

Real ``etcd``, ``kube-apiserver``, ``kube-controller-manager`` and ``kube-scheduler`` binaries (built from Go
modules by ``hack/build-control-plane.sh``) plus ``kwok``, which stands in for kubelets: it marks fake
nodes Ready and walks pods through Pending -> Running -> Ready (and Job pods to Succeeded) via Stages.
Everything listens on 127.0.0.1 only. Entry points: :class:`ControlPlane` (start/stop/attach),
:func:`create_nodes`, and ``tritonops dev ...`` (:mod:`tritonops.devcluster.cli`).
"""

from __future__ import annotations

from tritonops.devcluster.launcher import ClusterError, ControlPlane
from tritonops.devcluster.nodes import NodePool, create_nodes

__all__ = ["ClusterError", "ControlPlane", "NodePool", "create_nodes"]
