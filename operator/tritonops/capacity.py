"""How many more replicas of a GPU model the cluster can place now (pure): the autoscaler's growth is
bounded by it, so a burst does not pile up Pending pods that no node can take.

A replica needs all its GPUs on one node, so the room is counted per node: for every node the pods'
placement selects (``nodeSelector``, required node affinity), whose blocking taints they tolerate and that
is not cordoned, ``floor((allocatable - requested) / per_replica)``, where *requested* sums the GPU
requests of the pods bound to it that have not ended. Pods of ours still waiting for a node will take room
first, so they are subtracted. The operator reads Nodes and Pods for this only while the autoscaler asks for
more than is served (see :func:`tritonops.controller.observe`); without the permission to list them the
growth is not bounded (the pods wait Pending and the placement diagnosis says why).

With a node autoscaler that adds GPU nodes for Pending pods, bounding growth would stop it from ever
adding one: ``spec.autoscaling.capToFreeGPUs: false`` turns the bound off.
"""

from __future__ import annotations

from typing import Any

from tritonops.builders.deployment import GPU
from tritonops.placement import selects, untolerated

_ENDED = ("Succeeded", "Failed")


def _count(value: Any) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0  # GPUs are whole devices; anything else is not a GPU count


def gpus_per_replica(pod_spec: dict[str, Any]) -> int:
    """GPUs one pod asks for (limits, which Kubernetes requires to equal requests for extended resources)."""
    total = 0
    for container in pod_spec.get("containers") or []:
        resources = container.get("resources") or {}
        total += _count((resources.get("limits") or resources.get("requests") or {}).get(GPU, 0))
    return total


def _requested(pods: list[dict[str, Any]]) -> dict[str, int]:
    """GPUs requested per node by the pods bound to it that have not ended."""
    used: dict[str, int] = {}
    for pod in pods:
        node = pod.get("spec", {}).get("nodeName")
        if node and pod.get("status", {}).get("phase") not in _ENDED:
            used[node] = used.get(node, 0) + gpus_per_replica(pod.get("spec", {}))
    return used


def _usable(pod_spec: dict[str, Any], node: dict[str, Any]) -> bool:
    return (not node.get("spec", {}).get("unschedulable") and selects(pod_spec, node)
            and not untolerated(pod_spec, node))


def room(pod_spec: dict[str, Any], nodes: list[dict[str, Any]], pods: list[dict[str, Any]],
         own_pending: int) -> int:
    """Replicas of ``pod_spec`` that fit on the free GPUs now, less ``own_pending`` pods of ours still
    waiting for a node (never negative)."""
    per_replica = gpus_per_replica(pod_spec)
    if per_replica <= 0:
        return 0
    used = _requested(pods)
    fits = 0
    for node in nodes:
        if _usable(pod_spec, node):
            free = _count(node.get("status", {}).get("allocatable", {}).get(GPU, 0)) - used.get(
                node["metadata"]["name"], 0)
            fits += max(0, free) // per_replica
    return max(0, fits - own_pending)


def bounded(requested: int, served: int, free_room: int | None) -> int:
    """The total to serve: what the autoscaler asks for, but growth beyond ``served`` (the total the
    operator serves now) only as far as ``free_room`` replicas (None: unknown, not bounded)."""
    if free_room is None or requested <= served:
        return requested
    return min(requested, served + free_room)


def newest_template(deployments: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The pod spec of the newest of our Deployments (the revision the growth goes to; {} without one)."""
    if not deployments:
        return {}
    newest = max(deployments.values(), key=lambda d: (d["metadata"].get("creationTimestamp", ""),
                                                       d["metadata"]["name"]))
    spec: dict[str, Any] = newest.get("spec", {}).get("template", {}).get("spec", {})
    return spec
