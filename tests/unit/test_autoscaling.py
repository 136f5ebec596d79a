"""Autoscaling tables: the autoscaler child per engine and preset (golden), the size it sets, canary splits."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import Golden
from tests.factories import model_deployment, with_spec
from tests.unit.test_planner import NOW, OPTS, converge
from tests.unit.test_planner_canary import canary_md, cycle, replicas
from tritonops import autoscaling_plan
from tritonops.builders.autoscaler import build_hpa, build_scaled_object
from tritonops.builders.meta import Owner
from tritonops.planner import Observed, plan

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "autoscaling"
OWNER = Owner("clf", "ml", "uid-1")
PRESETS = ("QueueTime", "InferenceRate", "PendingRequests", "GPUUtilization", "CPU", "Memory")
TARGETS = {"QueueTime": 50000, "InferenceRate": 200, "PendingRequests": 4, "GPUUtilization": 70, "CPU": 60,
           "Memory": 80}


def scaling(engine: str, *kinds: str, **extra: Any) -> dict[str, Any]:
    metrics = [{"type": k, "target": TARGETS.get(k, 10)} for k in kinds]
    return {"engine": engine, "minReplicas": 1, "maxReplicas": 8, "metrics": metrics,
            "scaleDownStabilizationSeconds": 300, **extra}


@pytest.mark.parametrize("preset", PRESETS)
def test_golden_hpa_and_scaled_object(preset: str, golden: Golden) -> None:
    hpa = build_hpa(OWNER, scaling("HPA", preset))
    keda = build_scaled_object(OWNER, scaling("KEDA", preset), "http://prometheus.monitoring:9090")
    golden(GOLDEN / f"{preset}.yaml", yaml.safe_dump_all([hpa, keda], sort_keys=True))


def test_custom_query_and_scale_to_zero_are_keda_only_and_explicit() -> None:
    spec = scaling("KEDA", "Prometheus", minReplicas=0)
    spec["metrics"][0].update(query='sum(rate(my_requests{namespace="{{namespace}}"}[1m]))', activationTarget=1)
    obj = build_scaled_object(OWNER, spec, "http://p:9090")
    trigger = obj["spec"]["triggers"][0]
    assert obj["spec"]["minReplicaCount"] == 0
    assert trigger["metadata"]["query"] == 'sum(rate(my_requests{namespace="ml"}[1m]))'
    assert trigger["metadata"]["activationThreshold"] == "1" and trigger["metricType"] == "AverageValue"
    assert build_hpa(OWNER, scaling("HPA", "QueueTime"))["spec"]["minReplicas"] == 1


def test_scale_up_waits_for_models_to_load_unless_the_user_says_otherwise() -> None:
    spec = {"runtime": {"startupTimeoutSeconds": 1200}}
    assert autoscaling_plan.scale_up_period(spec, None) == 300  # a quarter of the budget, at most 300 s
    assert autoscaling_plan.scale_up_period({"runtime": {"startupTimeoutSeconds": 60}}, None) == 15
    assert autoscaling_plan.scale_up_period(spec, 8) == 15  # measured: rounded up to the HPA's sync period
    assert autoscaling_plan.scale_up_period(spec, 41) == 45
    up = build_hpa(OWNER, scaling("HPA", "InferenceRate"), scale_up_period=45)["spec"]["behavior"]["scaleUp"]
    assert up == {"stabilizationWindowSeconds": 0, "policies": [{"type": "Percent", "value": 100, "periodSeconds": 45}]}


def test_behavior_keeps_the_scale_down_window_and_the_users_policies() -> None:
    spec = scaling("HPA", "InferenceRate", behavior={"scaleUp": {"stabilizationWindowSeconds": 0, "policies": [
        {"type": "Pods", "value": 1, "periodSeconds": 120}]}}, scaleDownStabilizationSeconds=600)
    behavior = build_hpa(OWNER, spec)["spec"]["behavior"]
    assert behavior["scaleDown"] == {"stabilizationWindowSeconds": 600}
    assert behavior["scaleUp"]["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 120}]


def test_the_autoscaler_writes_spec_replicas_and_the_operator_sizes_the_revision() -> None:
    md = model_deployment(with_spec("autoscaling", scaling("HPA", "QueueTime")), with_spec("replicas", 3))
    observed = Observed()
    converge(md, observed)
    stable = md["status"]["stableRevision"]
    assert observed.deployments[stable]["spec"]["replicas"] == 3 and md["status"]["autoscaler"] == \
        "HorizontalPodAutoscaler"
    md["spec"]["replicas"] = 50  # written through /scale: bounded by maxReplicas
    assert next(o for o in plan(md, observed, NOW, OPTS).apply if o["kind"] == "Deployment")["spec"]["replicas"] == 8


def test_switching_engines_or_turning_autoscaling_off_deletes_the_old_autoscaler() -> None:
    md = model_deployment(with_spec("autoscaling", scaling("HPA", "CPU")))
    observed = Observed(keda_installed=True)
    p = plan(md, observed, NOW, OPTS)
    hpa = next(o for o in p.apply if o["kind"] == "HorizontalPodAutoscaler")
    observed.autoscalers["HorizontalPodAutoscaler"] = hpa
    md["spec"]["autoscaling"]["engine"] = "KEDA"
    p = plan(md, observed, NOW, OPTS)
    assert ("HorizontalPodAutoscaler", "clf") in p.delete and any(o["kind"] == "ScaledObject" for o in p.apply)
    del md["spec"]["autoscaling"]
    assert ("HorizontalPodAutoscaler", "clf") in plan(md, observed, NOW, OPTS).delete


def test_keda_without_its_crd_or_a_prometheus_degrades_and_keeps_serving() -> None:
    md = model_deployment(with_spec("autoscaling", scaling("KEDA", "QueueTime")))
    p = plan(md, Observed(keda_installed=False), NOW, OPTS)
    assert not any(o["kind"] == "ScaledObject" for o in p.apply)
    assert p.status is not None
    degraded = next(c for c in p.status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "AutoscalerUnavailable" and "install KEDA" in degraded["message"]
    p = plan(md, Observed(keda_installed=True), NOW, OPTS)
    assert "analysis.prometheus.url" in next(c for c in p.status["conditions"] if c["type"] == "Degraded")["message"]
    p = plan(md, Observed(keda_installed=True), NOW, replace(OPTS, prometheus_url="http://p:9090"))
    assert any(o["kind"] == "ScaledObject" for o in p.apply)


def test_moving_the_canary_weight_does_not_move_the_autoscaled_total() -> None:
    """The oscillation of argo-rollouts #2857/#3849 and flagger #1368: with an HPA on a per-pod average,
    surge canary pods lower the average as much as they add pods, so the HPA's answer stays put; the
    operator never feeds the canary's pods back into spec.replicas."""
    md, observed, stable, canary = canary_md({"setWeight": 25}, {"pause": {"durationSeconds": 10}},
                                             {"setWeight": 50}, {"pause": {}})
    md["spec"]["autoscaling"] = scaling("HPA", "InferenceRate")
    load, target = 4 * 200.0, 200.0  # inferences/s in all, per-replica target: 4 replicas needed
    seen = []
    for second in range(0, 40, 2):
        cycle(md, observed, second)
        pods = replicas(observed, stable) + (replicas(observed, canary) if canary in observed.deployments else 0)
        hpa_says = -(-pods * (load / pods) / target // 1)  # HPA: ceil(current * average / target)
        md["spec"]["replicas"] = int(hpa_says)
        seen.append((md["status"].get("canaryWeight", 0), pods, int(hpa_says)))
    assert {hpa for _, _, hpa in seen} == {4}, seen  # the total never moved while the weight went 0 -> 50
    assert {w for w, _, _ in seen} >= {20, 50}, seen
    split = md["status"]["replicaSplit"]
    assert split["total"] == 4 and split["stable"] == {"revision": stable, "desired": 4, "available": 4}
    assert split["canary"]["revision"] == canary and split["canary"]["desired"] == 4  # Surge at 50 %: 4 beside 4
