"""Growth bounded by the free GPUs, and the measured start time that paces scale-up (pure tables)."""

from __future__ import annotations

from typing import Any

from tests.factories import model_deployment, with_spec
from tests.unit.test_planner import NOW, OPTS, converge
from tests.unit.test_planner_canary import cycle
from tritonops import autoscaling_plan
from tritonops.capacity import bounded, gpus_per_replica, room
from tritonops.controller import status_patch
from tritonops.planner import Observed, plan

POD = {"containers": [{"name": "triton", "resources": {"limits": {"nvidia.com/gpu": "2"}}}],
       "nodeSelector": {"pool": "a100"}}


def node(name: str, gpus: int, pool: str = "a100", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"pool": pool}}, "spec": spec,
            "status": {"allocatable": {"nvidia.com/gpu": str(gpus)}}}


def pod(on: str | None, gpus: int, phase: str = "Running") -> dict[str, Any]:
    return {"metadata": {"name": f"p-{on}"}, "status": {"phase": phase},
            "spec": {"nodeName": on, "containers": [{"resources": {"limits": {"nvidia.com/gpu": gpus}}}]}}


def test_room_counts_whole_replicas_per_node_on_the_nodes_the_pods_may_use() -> None:
    nodes = [node("a", 4), node("b", 3), node("c", 8, pool="t4"), node("d", 8, unschedulable=True),
             node("e", 8, taints=[{"key": "dedicated", "value": "x", "effect": "NoSchedule"}])]
    pods = [pod("a", 1), pod("b", 1), pod("b", 2, phase="Succeeded"), pod(None, 2)]
    # a: 3 free -> 1 replica of 2 GPUs; b: 2 free (the ended pod holds none) -> 1; c, d, e: not usable
    assert room(POD, nodes, pods, own_pending=0) == 2
    assert room(POD, nodes, pods, own_pending=1) == 1  # a pending pod of ours takes room first
    assert room(POD, nodes, pods, own_pending=5) == 0
    assert gpus_per_replica(POD) == 2 and room({"containers": [{}]}, nodes, pods, 0) == 0


def test_growth_is_bounded_but_shrinking_never_is() -> None:
    assert bounded(requested=8, served=3, free_room=2) == 5
    assert bounded(requested=8, served=3, free_room=None) == 8  # unknown (no permission): not bounded
    assert bounded(requested=2, served=3, free_room=0) == 2


def scaled_md(replicas: int) -> dict[str, Any]:
    return model_deployment(with_spec("autoscaling", {"engine": "HPA", "minReplicas": 1, "maxReplicas": 8,
                                                      "metrics": [{"type": "QueueTime", "target": 50000}]}),
                            with_spec("replicas", replicas))


def test_the_autoscaler_grows_a_model_only_as_far_as_free_gpus_and_status_says_so() -> None:
    md, observed = scaled_md(2), Observed()
    converge(md, observed)
    assert md["status"]["replicaSplit"]["total"] == 2
    md["spec"]["replicas"] = 6  # the HPA asks for 6 through /scale
    assert autoscaling_plan.growth_pending(md, observed.deployments)
    observed.gpu_room = 1
    cycle(md, observed)
    observed.gpu_room = 0  # the new replica took the free GPUs; nothing else freed
    status = converge(md, observed)
    stable = status["stableRevision"]
    assert observed.deployments[stable]["spec"]["replicas"] == 3  # never shrinks for want of room either
    assert status["replicaSplit"] | {"stable": None} == {"total": 3, "requested": 6, "limitedBy": "FreeGPUs",
                                                         "stable": None}
    assert plan(md, observed, NOW, OPTS).requeue_after == autoscaling_plan.RECHECK_SECONDS  # look again later
    observed.gpu_room = 10  # GPUs freed elsewhere
    status = converge(md, observed)
    assert observed.deployments[stable]["spec"]["replicas"] == 6 and "limitedBy" not in status["replicaSplit"]
    assert not autoscaling_plan.growth_pending(md, observed.deployments)


def test_the_bound_is_off_when_asked_and_for_models_without_gpus() -> None:
    md, observed = scaled_md(2), Observed()
    converge(md, observed)
    md["spec"]["replicas"] = 6
    md["spec"]["autoscaling"]["capToFreeGPUs"] = False
    assert not autoscaling_plan.growth_pending(md, observed.deployments)
    md["spec"]["autoscaling"].pop("capToFreeGPUs")
    md["spec"]["resources"] = {"limits": {"cpu": "2"}}
    converge(md, observed)
    assert not autoscaling_plan.growth_pending(md, observed.deployments)


def ready_pod(created: str, ready: str | None) -> dict[str, Any]:
    conditions = [{"type": "Ready", "status": "True", "lastTransitionTime": ready}] if ready else []
    return {"metadata": {"creationTimestamp": created}, "status": {"conditions": conditions}}


def test_the_newest_ready_pod_gives_the_measured_start_time_which_paces_scale_up() -> None:
    pods = [ready_pod("2026-11-30T10:00:00Z", "2026-11-30T10:05:00Z"),
            ready_pod("2026-11-30T11:00:00Z", "2026-11-30T11:00:41Z"),
            ready_pod("2026-11-30T12:00:00Z", None)]  # still loading
    assert autoscaling_plan.startup_seconds(pods) == 41
    assert autoscaling_plan.startup_seconds([]) is None
    md, observed = scaled_md(2), Observed(pods=pods)
    status = converge(md, observed)
    assert status["startupSeconds"] == 41
    hpa = next(o for o in observed.autoscalers.values())
    assert hpa["spec"]["behavior"]["scaleUp"]["policies"][0]["periodSeconds"] == 45
    observed.pods = []  # pods are not read while all are available: the measurement is kept
    assert converge(md, observed)["startupSeconds"] == 41


def test_the_status_patch_removes_keys_dropped_at_any_depth() -> None:
    """A JSON merge patch merges nested objects: ``replicaSplit.limitedBy`` stayed once the bound was lifted."""
    old = {"kopf": {"x": 1}, "phase": "Ready", "replicaSplit": {"total": 5, "requested": 6, "limitedBy": "FreeGPUs",
                                                             "stable": {"desired": 5}}, "canaryWeight": 10}
    new = {"phase": "Ready", "replicaSplit": {"total": 4, "stable": {"desired": 4}}}
    assert status_patch(old, new) == {"phase": "Ready", "canaryWeight": None, "replicaSplit": {
        "total": 4, "requested": None, "limitedBy": None, "stable": {"desired": 4}}}
