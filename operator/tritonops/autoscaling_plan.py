"""The autoscaling part of a plan (pure): the serving size, and the autoscaler child to keep.

The autoscaler (HPA or KEDA, :mod:`tritonops.builders.autoscaler`) scales the ModelDeployment through its
``/scale`` subresource, i.e. it writes ``spec.replicas``; the operator reads that number, bounded by
``minReplicas``/``maxReplicas``, and splits it between the stable and the canary revision like any other
``spec.replicas`` (:mod:`tritonops.rollout_plan`). The autoscaler's metrics average over every serving pod
(the scale selector spans both revisions), so moving the canary's weight does not move the total: extra
canary pods lower the per-pod load as much as they add pods (tested against the oscillation reported for
Argo Rollouts and Flagger with HPAs).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tritonops.builders.autoscaler import build_hpa, build_scaled_object
from tritonops.builders.meta import Owner
from tritonops.capacity import bounded, gpus_per_replica, newest_template

HPA, SCALED_OBJECT = "HorizontalPodAutoscaler", "ScaledObject"
RECHECK_SECONDS = 30.0  # while the free GPUs bound the growth: nothing signals a GPU freed elsewhere
KINDS = (HPA, SCALED_OBJECT)


def kind(spec: dict[str, Any]) -> str:
    """The kind of autoscaler ``spec`` asks for ("" for none): recorded in ``status.autoscaler``."""
    autoscaling = spec.get("autoscaling")
    if not autoscaling:
        return ""
    return SCALED_OBJECT if autoscaling.get("engine", "HPA") == "KEDA" else HPA


def total(spec: dict[str, Any]) -> int:
    """The serving size: ``spec.replicas`` (the autoscaler's, when there is one), within its bounds."""
    replicas = int(spec.get("replicas", 1))
    autoscaling = spec.get("autoscaling")
    if not autoscaling:
        return replicas
    return max(int(autoscaling.get("minReplicas", 1)), min(int(autoscaling["maxReplicas"]), replicas))


def served_before(md: dict[str, Any]) -> int | None:
    """The total served after the previous cycle (``status.replicaSplit.total``; None before the first)."""
    value = ((md.get("status") or {}).get("replicaSplit") or {}).get("total")
    return None if value is None else int(value)


def growth_pending(md: dict[str, Any], deployments: dict[str, dict[str, Any]]) -> bool:
    """Whether the autoscaler asks a GPU model for more replicas than are served (then the free GPUs are
    read, to bound the growth: :mod:`tritonops.capacity`)."""
    autoscaling = md["spec"].get("autoscaling")
    if not autoscaling or autoscaling.get("capToFreeGPUs") is False:
        return False
    served = served_before(md)
    return served is not None and total(md["spec"]) > served and gpus_per_replica(newest_template(deployments)) > 0


def serving_spec(md: dict[str, Any], free_room: int | None) -> dict[str, Any]:
    """``md`` with ``spec.replicas`` bounded by the free GPUs (``free_room`` replicas more than served)."""
    served = served_before(md)
    asked = total(md["spec"])
    if served is None or free_room is None:
        return md
    serve = bounded(asked, served, free_room)
    return md if serve == asked else {**md, "spec": {**md["spec"], "replicas": serve}}


def mark_bounded(status: dict[str, Any], requested: int) -> float | None:
    """Show in ``status.replicaSplit`` what the autoscaler asks for when the free GPUs hold the total
    below it; the delay after which to look for free GPUs again (None when not bounded)."""
    split = status.get("replicaSplit")
    if not split or split["total"] >= requested:
        return None
    split.update(requested=requested, limitedBy="FreeGPUs")
    return RECHECK_SECONDS


def problem(spec: dict[str, Any], keda_installed: bool | None, prometheus_url: str) -> str:
    """Why the autoscaler cannot be created ("" when it can); the model keeps serving at its size."""
    autoscaling = spec.get("autoscaling")
    if not autoscaling or autoscaling.get("engine", "HPA") != "KEDA":
        return ""
    if keda_installed is False:
        return ("spec.autoscaling.engine KEDA: the ScaledObject CRD (keda.sh/v1alpha1) is not installed: install "
                "KEDA, or use engine HPA")
    needs_prometheus = any(m["type"] not in ("CPU", "Memory") for m in autoscaling.get("metrics", []))
    if needs_prometheus and not prometheus_url:
        return ("spec.autoscaling.engine KEDA reads Prometheus, and the operator has none: install it with the "
                "chart value analysis.prometheus.url")
    return ""


def scale_up_period(spec: dict[str, Any], measured: int | None) -> int:
    """Seconds between two default scale-up steps: the measured time from a new pod to its Ready (rounded
    up to the HPA's 15 s sync period) or, before any was measured, a quarter of the load-time budget
    ``runtime.startupTimeoutSeconds``; within 15 s to 300 s."""
    if measured:
        return max(15, min(300, -(-measured // 15) * 15))
    return max(15, min(300, int(spec.get("runtime", {}).get("startupTimeoutSeconds", 600)) // 4))


def desired(md: dict[str, Any], owner: Owner, prometheus_url: str, blocked: str) -> list[dict[str, Any]]:
    """The autoscaler child to apply (none without autoscaling, or while it cannot be created)."""
    spec = md["spec"]
    autoscaling = spec.get("autoscaling")
    if not autoscaling or blocked:
        return []
    period = scale_up_period(spec, (md.get("status") or {}).get("startupSeconds"))
    if autoscaling.get("engine", "HPA") == "KEDA":
        return [build_scaled_object(owner, autoscaling, prometheus_url, period)]
    return [build_hpa(owner, autoscaling, period)]


def _time(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def startup_seconds(pods: list[dict[str, Any]]) -> int | None:
    """How long the newest Ready pod took from its creation to Ready (scheduling, model fetch, model
    load): the measured start time of a replica (None when no pod is Ready)."""
    best: tuple[str, int] | None = None
    for pod in pods:
        created = pod["metadata"].get("creationTimestamp")
        ready = next((c for c in pod.get("status", {}).get("conditions") or []
                      if c.get("type") == "Ready" and c.get("status") == "True"), None)
        if created and ready and ready.get("lastTransitionTime") and (best is None or created > best[0]):
            best = (created, int((_time(ready["lastTransitionTime"]) - _time(created)).total_seconds()))
    return None if best is None else max(0, best[1])


def short_before(md: dict[str, Any]) -> bool:
    """Whether a side was short of available replicas at the previous cycle: its pods are read once more
    after they all became Ready, to measure the last one's start."""
    split = (md.get("status") or {}).get("replicaSplit") or {}
    return any(side["available"] < side["desired"] for side in (split.get("stable"), split.get("canary")) if side)


def stale(observed: dict[str, dict[str, Any]], wanted: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Autoscalers to delete: the other engine's, or any once autoscaling is off (observed: kind -> object)."""
    keep = {o["kind"] for o in wanted}
    return sorted((kind, obj["metadata"]["name"]) for kind, obj in observed.items() if kind not in keep)


def split_status(spec: dict[str, Any], deployments: dict[str, dict[str, Any]], stable: str | None,
                 canary: str | None, stable_keeps: int | None, canary_wants: int) -> dict[str, Any]:
    """``status.replicaSplit``: the total served (the autoscaler's, bounded) and, for each side, the
    replicas the operator asks for and those available now."""
    def side(revision: str | None, desired: int) -> dict[str, Any]:
        dep = deployments.get(revision or "") or {}
        return {"revision": revision or "", "desired": desired,
                "available": int(dep.get("status", {}).get("availableReplicas", 0))}

    out: dict[str, Any] = {"total": total(spec)}
    if stable:
        out["stable"] = side(stable, total(spec) if stable_keeps is None else stable_keeps)
    if canary:
        out["canary"] = side(canary, canary_wants)
    return out
