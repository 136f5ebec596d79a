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

from typing import Any

from tritonops.builders.autoscaler import build_hpa, build_scaled_object
from tritonops.builders.meta import Owner

HPA, SCALED_OBJECT = "HorizontalPodAutoscaler", "ScaledObject"
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


def desired(spec: dict[str, Any], owner: Owner, prometheus_url: str, blocked: str) -> list[dict[str, Any]]:
    """The autoscaler child to apply (none without autoscaling, or while it cannot be created)."""
    autoscaling = spec.get("autoscaling")
    if not autoscaling or blocked:
        return []
    startup = int(spec.get("runtime", {}).get("startupTimeoutSeconds", 600))
    if autoscaling.get("engine", "HPA") == "KEDA":
        return [build_scaled_object(owner, autoscaling, prometheus_url, startup)]
    return [build_hpa(owner, autoscaling, startup)]


def stale(observed: dict[str, dict[str, Any]], wanted: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Autoscalers to delete: the other engine's, or any once autoscaling is off (observed: kind -> object)."""
    keep = {o["kind"] for o in wanted}
    return sorted((kind, obj["metadata"]["name"]) for kind, obj in observed.items() if kind not in keep)


def split_status(spec: dict[str, Any], deployments: dict[str, dict[str, Any]], stable: str | None,
                 canary: str | None, stable_keeps: int | None, canary_wants: int) -> dict[str, Any]:
    """``status.replicaSplit``: the total asked for (the autoscaler's, bounded) and, for each side, the
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
