"""The autoscaler of a ModelDeployment: an ``autoscaling/v2`` HorizontalPodAutoscaler or a KEDA
``ScaledObject``, both scaling the ModelDeployment itself through its ``/scale`` subresource.

So ``kubectl scale md``, the autoscaler and the canary logic act on one number, ``spec.replicas``; the
operator splits it between the stable and the canary revision. Metric presets read Triton's own series:

====================  =============================================================  ==========================
preset                HPA (Pods metric, served by prometheus-adapter; chart rules)   unit of ``target``
====================  =============================================================  ==========================
``QueueTime``         ``tritonops_queue_time_us``: queue µs per request, per pod      microseconds
``InferenceRate``     ``tritonops_inference_rate``: inferences/s per pod              inferences per second
``PendingRequests``   ``tritonops_pending_requests``: Triton's pending requests       requests
``GPUUtilization``    ``tritonops_gpu_utilization``: Triton's nv_gpu_utilization      percent
``CPU`` / ``Memory``  Resource metrics (metrics-server), average utilization          percent of the request
``Prometheus``        KEDA only: the query itself (an HPA would need an adapter rule)  the query's unit
====================  =============================================================  ==========================

KEDA gets the same presets as PromQL in Prometheus triggers (``serverAddress`` is the operator's
Prometheus; see :func:`preset_query`), with ``activationTarget`` as the activation threshold when the
ModelDeployment may scale to zero (``minReplicas: 0``, KEDA only, never a default). A ``Prometheus`` query
returns the total for the ModelDeployment; ``target`` is per replica. Pure: plain dicts, no clock.
"""

from __future__ import annotations

from typing import Any

from tritonops.api import API_VERSION, KIND
from tritonops.builders.meta import Owner, common_labels, metadata, stamp_hash

HPA_METRICS = {"QueueTime": "tritonops_queue_time_us", "InferenceRate": "tritonops_inference_rate",
               "PendingRequests": "tritonops_pending_requests", "GPUUtilization": "tritonops_gpu_utilization"}
RESOURCES = {"CPU": "cpu", "Memory": "memory"}


def preset_query(kind: str, namespace: str, name: str) -> tuple[str, str]:
    """(PromQL, KEDA metricType) of a preset for one ModelDeployment.

    Additive signals (inferences/s, pending requests) are summed over the serving pods and compared as an
    ``AverageValue`` (the HPA divides by the replicas); intensive ones (queue time per request, GPU
    utilization) are averages compared as a ``Value``.
    """
    sel = f'namespace="{namespace}",modeldeployment="{name}"'
    queries = {
        "QueueTime": (f"sum(rate(nv_inference_queue_duration_us{{{sel}}}[1m])) / "
                      f"clamp_min(sum(rate(nv_inference_request_success{{{sel}}}[1m])), 1e-9)", "Value"),
        "InferenceRate": (f"sum(rate(nv_inference_count{{{sel}}}[1m]))", "AverageValue"),
        "PendingRequests": (f"sum(nv_inference_pending_request_count{{{sel}}})", "AverageValue"),
        "GPUUtilization": (f"avg(nv_gpu_utilization{{{sel}}}) * 100", "Value"),
    }
    return queries[kind]


def _hpa_metric(metric: dict[str, Any]) -> dict[str, Any]:
    kind, target = metric["type"], metric["target"]
    if kind in RESOURCES:
        return {"type": "Resource", "resource": {"name": RESOURCES[kind], "target": {
            "type": "Utilization", "averageUtilization": int(target)}}}
    return {"type": "Pods", "pods": {"metric": {"name": HPA_METRICS[kind]},
                                     "target": {"type": "AverageValue", "averageValue": _quantity(target)}}}


def _quantity(value: float) -> str:
    """A target as a Kubernetes quantity (milli-units keep fractions exact)."""
    return str(int(value)) if float(value).is_integer() else f"{round(value * 1000)}m"


def behavior(autoscaling: dict[str, Any], scale_up_period: int = 150) -> dict[str, Any]:
    """HPA ``behavior``: the spec's, with ``scaleDownStabilizationSeconds`` as the scale-down window.

    Without a ``scaleUp`` of the user's, a burst may at most double the replicas once per
    ``scale_up_period`` seconds, the time a new replica takes to serve (see
    :func:`tritonops.autoscaling_plan.scale_up_period`): a new Triton replica serves nothing until its model
    is loaded, and the HPA would otherwise keep adding replicas every 15 s while the first ones load (the
    HPA's own default is +100 % or +4 pods every 15 s).
    """
    out: dict[str, Any] = {k: dict(v) for k, v in (autoscaling.get("behavior") or {}).items()}
    down = out.setdefault("scaleDown", {})
    down.setdefault("stabilizationWindowSeconds", int(autoscaling.get("scaleDownStabilizationSeconds", 300)))
    if "scaleUp" not in out:
        out["scaleUp"] = {"stabilizationWindowSeconds": 0,
                          "policies": [{"type": "Percent", "value": 100, "periodSeconds": scale_up_period}]}
    return out


def _target_ref(owner: Owner) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": KIND, "name": owner.name}


def build_hpa(owner: Owner, autoscaling: dict[str, Any], scale_up_period: int = 150) -> dict[str, Any]:
    """The HorizontalPodAutoscaler of a ModelDeployment (named like it); ``scale_up_period``: the default
    scale-up pace (:func:`behavior`)."""
    spec = {"scaleTargetRef": _target_ref(owner), "minReplicas": max(1, int(autoscaling.get("minReplicas", 1))),
            "maxReplicas": int(autoscaling["maxReplicas"]),
            "metrics": [_hpa_metric(m) for m in autoscaling["metrics"]],
            "behavior": behavior(autoscaling, scale_up_period)}
    return stamp_hash({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                       "metadata": metadata(owner.name, owner, common_labels(owner.name, "autoscaler")),
                       "spec": spec})


def _trigger(metric: dict[str, Any], owner: Owner, prometheus: str) -> dict[str, Any]:
    kind = metric["type"]
    if kind in RESOURCES:
        return {"type": RESOURCES[kind], "metricType": "Utilization",
                "metadata": {"value": str(int(metric["target"]))}}
    query, metric_type = (metric["query"], "AverageValue") if kind == "Prometheus" else \
        preset_query(kind, owner.namespace, owner.name)
    meta = {"serverAddress": prometheus, "query": query.replace("{{namespace}}", owner.namespace),
            "threshold": str(metric["target"])}
    if "activationTarget" in metric:
        meta["activationThreshold"] = str(metric["activationTarget"])
    return {"type": "prometheus", "metricType": metric_type, "metadata": meta}


def build_scaled_object(owner: Owner, autoscaling: dict[str, Any], prometheus: str,
                        scale_up_period: int = 150) -> dict[str, Any]:
    """The KEDA ScaledObject of a ModelDeployment (named like it); ``prometheus``: the server's URL."""
    spec = {"scaleTargetRef": _target_ref(owner), "minReplicaCount": int(autoscaling.get("minReplicas", 1)),
            "maxReplicaCount": int(autoscaling["maxReplicas"]),
            "triggers": [_trigger(m, owner, prometheus) for m in autoscaling["metrics"]],
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": behavior(autoscaling, scale_up_period)}}}
    return stamp_hash({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
                       "metadata": metadata(owner.name, owner, common_labels(owner.name, "autoscaler")),
                       "spec": spec})
