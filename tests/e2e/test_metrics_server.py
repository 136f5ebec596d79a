"""The resource metrics API on the real node: metrics-server (built from its Go module) scrapes the real kubelet.

What the HPA's CPU and Memory presets and ``kubectl top`` read: ``metrics.k8s.io`` through the API server lists the
real node with its CPU and memory use, and a pod running on it with the use of its container. The pod holds a
known amount of memory and burns a little CPU, so the numbers are the pod's own, not placeholders. metrics-server
authenticates to the kubelet with a ServiceAccount token that the kubelet reviews and authorizes (``nodes/metrics``)
with the API server: see tests/metrics_server.py.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.support import Api, kubectl, wait_until
from tests.metrics_server import node_metrics, nodes_have_metrics, pod_metrics, quantity, running_metrics_server
from tritonops.devcluster.images import RUNTIME_IMAGE, RUNTIME_UID
from tritonops.devcluster.nodeconf import REAL_NODE_LABEL, REAL_NODE_TOLERATION
from tritonops.devcluster.realnode import RealNode
from tritonops.devcluster.session import ClusterHandle

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.slow]

POD = "busy"
CONTAINER = "work"
BALLAST_MIB = 48
# About 10 % of a CPU (10 ms busy in every 100 ms) while holding BALLAST_MIB MiB written, so resident.
WORK = f"""
import time
ballast = b"x" * ({BALLAST_MIB} << 20)
while True:
    end = time.monotonic() + 0.01
    while time.monotonic() < end:
        pass
    time.sleep(0.09)
"""


def busy_pod(namespace: str) -> dict[str, Any]:
    """A pod for the real node (restricted Pod Security) running :data:`WORK` in the runtime image's Python."""
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": POD, "namespace": namespace},
        "spec": {
            "nodeSelector": {REAL_NODE_LABEL: "true"}, "tolerations": [REAL_NODE_TOLERATION],
            "securityContext": {"runAsNonRoot": True, "runAsUser": RUNTIME_UID,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": CONTAINER, "image": RUNTIME_IMAGE, "imagePullPolicy": "IfNotPresent",
                "command": ["python3", "-c", WORK],
                "resources": {"requests": {"cpu": "50m", "memory": "96Mi"}, "limits": {"memory": "128Mi"}},
                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
            }],
        },
    }


def running(api: Api, namespace: str) -> bool:
    pod = api.core.read_namespaced_pod(POD, namespace)
    return bool(pod.status.phase == "Running")


def test_metrics_api_serves_the_real_node_and_its_pods(cluster: ClusterHandle, api: Api, namespace: str,
                                                       real_node: RealNode, tmp_path: Path) -> None:
    api.core.create_namespaced_pod(namespace, busy_pod(namespace))
    t0 = time.monotonic()
    with running_metrics_server(cluster, tmp_path / "metrics-server") as server:
        registered = time.monotonic() - t0
        listed = nodes_have_metrics(api, [real_node.name], timeout=120)
        assert listed == [real_node.name], listed  # only the real node is scraped, never the KWOK ones
        node = node_metrics(api, real_node.name)
        assert node is not None
        assert quantity(node["usage"]["cpu"]) > 0, node
        assert quantity(node["usage"]["memory"]) > 0, node
        nodes_at = time.monotonic() - t0

        wait_until("the busy pod to run", lambda: running(api, namespace), timeout=120)
        pod = wait_until("metrics of the busy pod", lambda: pod_metrics(api, namespace, POD), timeout=120)
        pod_at = time.monotonic() - t0
        assert [c["name"] for c in pod["containers"]] == [CONTAINER], pod
        usage = pod["containers"][0]["usage"]
        assert quantity(usage["cpu"]) > 0, (pod, server.log_tail())
        assert quantity(usage["memory"]) >= BALLAST_MIB << 20, pod
        assert quantity(node["usage"]["memory"]) > quantity(usage["memory"]), (node, pod)

        # kubectl top reads the same API (and prints it the way users see it).
        top_node = kubectl(cluster, "top", "node", real_node.name, "--no-headers").stdout.split()
        assert top_node[0] == real_node.name and top_node[1].endswith("m"), top_node
        top_pod = kubectl(cluster, "top", "pod", POD, "-n", namespace, "--no-headers").stdout.split()
        assert top_pod[0] == POD and top_pod[2].endswith("Mi"), top_pod
        assert int(top_pod[2].removesuffix("Mi")) >= BALLAST_MIB, top_pod
        print(f"\nmetrics.k8s.io Available {registered:.1f}s after start, real node listed at {nodes_at:.1f}s, "
              f"pod metrics at {pod_at:.1f}s; node {node['usage']}, pod {usage}; top: {top_node} {top_pod}")
