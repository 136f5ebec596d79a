"""Smoke tests of the test cluster itself: KWOK GPU nodes, scheduling, pod lifecycle, garbage collection.

These pin down the behaviour the operator's integration tests rely on: the real scheduler counts
``nvidia.com/gpu``, KWOK walks scheduled pods to Running/Ready (and Job pods to Succeeded), the
controller-manager owns Deployments/ReplicaSets/Jobs/GC, and namespaces enforce restricted Pod Security.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest

from tests.integration.waiting import wait_for
from tritonops.devcluster.nodes import GPU_PRODUCT, GPU_RESOURCE
from tritonops.devcluster.session import ClusterHandle

pytestmark = pytest.mark.cluster
GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}


@pytest.fixture(scope="module")
def api(cluster: ClusterHandle) -> Iterator[Any]:
    client = kubernetes.config.new_client_from_config(config_file=str(cluster.kubeconfig))  # type: ignore[no-untyped-call]
    yield client
    client.close()


def _core(api: Any) -> Any:
    return kubernetes.client.CoreV1Api(api)


def gpu_nodes(api: Any) -> list[Any]:
    return [n for n in _core(api).list_node().items if int((n.status.allocatable or {}).get(GPU_RESOURCE, "0"))]


@pytest.fixture
def need_gpus(api: Any, cluster: ClusterHandle) -> None:
    if not cluster.owned and not gpu_nodes(api):
        pytest.skip("the external cluster has no node with nvidia.com/gpu")


def pod_spec(gpus: int = 0, restart: str = "Always") -> dict[str, Any]:
    """A pod spec that passes the restricted Pod Security level."""
    container: dict[str, Any] = {
        "name": "main", "image": "registry.k8s.io/pause:3.10",
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
    }
    spec: dict[str, Any] = {
        "restartPolicy": restart, "containers": [container], "terminationGracePeriodSeconds": 1,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 65534, "seccompProfile": {"type": "RuntimeDefault"}},
    }
    if gpus:
        container["resources"]["limits"] = {GPU_RESOURCE: str(gpus)}
        spec["tolerations"] = [GPU_TOLERATION]
    return spec


def deployment(name: str, replicas: int = 1, gpus: int = 0) -> dict[str, Any]:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": pod_spec(gpus)}}}


def condition(obj: Any, type_: str) -> Any:
    return next((c for c in obj.status.conditions or [] if c.type == type_), None)


def ready_pods(api: Any, ns: str, app: str, count: int) -> list[Any] | None:
    pods = _core(api).list_namespaced_pod(ns, label_selector=f"app={app}").items
    ready = [p for p in pods if p.status.phase == "Running" and (c := condition(p, "Ready")) and c.status == "True"]
    return ready if len(ready) == count else None


def test_nodes_are_ready_and_gpu_nodes_advertise_gpus(api: Any, cluster: ClusterHandle, need_gpus: None) -> None:
    nodes = _core(api).list_node().items
    assert nodes and all(condition(n, "Ready").status == "True" for n in nodes)
    gpus = gpu_nodes(api)
    assert gpus
    if not cluster.owned:
        return
    kwok = [n for n in nodes if n.metadata.labels.get("type") == "kwok"]  # the e2e tier may add a real node
    assert len(gpus) == 2 and len(kwok) == 4
    for node in gpus:
        assert node.status.capacity[GPU_RESOURCE] == node.status.allocatable[GPU_RESOURCE] == "2"
        assert node.metadata.labels["nvidia.com/gpu.present"] == "true"
        assert node.metadata.labels["nvidia.com/gpu.product"] == GPU_PRODUCT
        assert node.metadata.labels["nvidia.com/gpu.count"] == "2"
        assert node.metadata.annotations["kwok.x-k8s.io/node"] == "fake"
        assert [(t.key, t.effect) for t in node.spec.taints] == [(GPU_RESOURCE, "NoSchedule")]


def test_gpu_pod_lands_on_a_gpu_node_and_becomes_ready(api: Any, namespace: str, need_gpus: None) -> None:
    apps: Any = kubernetes.client.AppsV1Api(api)
    apps.create_namespaced_deployment(namespace, deployment("gpu", gpus=1))
    (pod,) = wait_for(lambda: ready_pods(api, namespace, "gpu", 1), 60, "the GPU pod to be Ready")
    node = _core(api).read_node(pod.spec.node_name)
    assert int(node.status.allocatable[GPU_RESOURCE]) >= 1
    assert pod.status.pod_ip and condition(pod, "PodScheduled").status == "True"
    wait_for(lambda: apps.read_namespaced_deployment(namespace=namespace, name="gpu").status.available_replicas == 1,
             60, "the Deployment to report 1 available replica")


def test_more_gpus_than_any_node_has_is_unschedulable(api: Any, namespace: str, need_gpus: None) -> None:
    most = max(int(n.status.allocatable[GPU_RESOURCE]) for n in gpu_nodes(api))
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "greedy"}, "spec": pod_spec(gpus=most + 1)}
    _core(api).create_namespaced_pod(namespace, pod)

    def unschedulable() -> Any:
        got = _core(api).read_namespaced_pod("greedy", namespace)
        cond = condition(got, "PodScheduled")
        return got if cond and cond.status == "False" and cond.reason == "Unschedulable" else None

    got = wait_for(unschedulable, 60, "PodScheduled=False/Unschedulable")
    assert got.status.phase == "Pending"
    assert f"Insufficient {GPU_RESOURCE}" in condition(got, "PodScheduled").message


def test_deleting_a_deployment_garbage_collects_its_pods(api: Any, namespace: str) -> None:
    apps: Any = kubernetes.client.AppsV1Api(api)
    apps.create_namespaced_deployment(namespace, deployment("web", replicas=2))
    wait_for(lambda: ready_pods(api, namespace, "web", 2), 60, "2 ready web pods")
    apps.delete_namespaced_deployment("web", namespace, propagation_policy="Background")
    wait_for(lambda: not _core(api).list_namespaced_pod(namespace, label_selector="app=web").items, 60,
             "the web pods to be gone")
    assert not apps.list_namespaced_replica_set(namespace, label_selector="app=web").items


def test_job_pod_runs_to_completion(api: Any, namespace: str) -> None:
    batch: Any = kubernetes.client.BatchV1Api(api)
    spec = pod_spec(restart="Never")
    # KWOK completes any Job pod; on a real cluster (KUBECONFIG) this container exits 0 by itself.
    spec["containers"][0] |= {"image": "registry.k8s.io/e2e-test-images/busybox:1.36.1-1", "command": ["true"]}
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "once"},
           "spec": {"backoffLimit": 0, "template": {"spec": spec}}}
    batch.create_namespaced_job(namespace, job)
    done = wait_for(lambda: (c := condition(batch.read_namespaced_job("once", namespace), "Complete"))
                    and c.status == "True", 60, "the Job to complete")
    assert done
    (pod,) = _core(api).list_namespaced_pod(namespace, label_selector="job-name=once").items
    assert pod.status.phase == "Succeeded"


def test_namespace_enforces_restricted_pod_security(api: Any, namespace: str) -> None:
    bad = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "root"},
           "spec": {"containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10"}]}}
    with pytest.raises(kubernetes.client.ApiException) as err:
        _core(api).create_namespaced_pod(namespace, bad)
    assert err.value.status == 403 and "violates PodSecurity" in str(err.value.body)
