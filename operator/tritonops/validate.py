"""Checks the API server cannot express: a spec it accepted that the operator still cannot honour.

Each problem names the field and the fix. A spec with problems never replaces the serving revision.
"""

from __future__ import annotations

from typing import Any

from tritonops.builders.deployment import GPU
from tritonops.diff import parse_quantity
from tritonops_runtime.pbtxt import ConfigError, render_config


def render_model_config(spec: dict[str, Any]) -> str:
    """The revision's config.pbtxt (raises ConfigError on a combination Triton cannot take)."""
    text: str = render_config(spec["model"], spec.get("runtime", {}).get("triton", {}))
    return text


def _gpu_problems(spec: dict[str, Any]) -> list[str]:
    limit = parse_quantity(spec.get("resources", {}).get("limits", {}).get(GPU, 0)) or 0
    problems = []
    groups = spec.get("runtime", {}).get("triton", {}).get("instanceGroups", [])
    for i, group in enumerate(groups):
        too_high = [g for g in group.get("gpus", []) if g >= limit]
        if too_high:
            problems.append(
                f"spec.runtime.triton.instanceGroups[{i}].gpus: GPU index {too_high[0]} does not exist in a "
                f"pod with {limit} GPU(s): raise spec.resources.limits['{GPU}'] or use indices below {limit}")
        if group.get("kind") == "KIND_GPU" and limit == 0:
            problems.append(f"spec.runtime.triton.instanceGroups[{i}]: KIND_GPU with "
                            f"spec.resources.limits['{GPU}'] = 0: request at least one GPU or use KIND_CPU")
    return problems


def _canary_problems(spec: dict[str, Any], prometheus: bool) -> list[str]:
    """Canary features the operator cannot honour here: refuse them rather than roll out a canary nobody
    checks (the last good revision keeps serving)."""
    rollout = spec.get("rollout", {})
    canary = rollout.get("canary", {})
    if rollout.get("strategy") != "Canary":
        return []
    problems = []
    analysis = canary.get("analysis") or {}
    if analysis.get("metrics") and not prometheus and not analysis.get("prometheus"):
        problems.append("spec.rollout.canary.analysis: the operator has no Prometheus to query: set "
                        "spec.rollout.canary.analysis.prometheus.address, or install the operator with the "
                        "chart value analysis.prometheus.url")
    if any(m.get("name") == "PredictionDriftPSI" and not m.get("query") for m in analysis.get("metrics", [])) \
            and not (spec.get("drift") or {}).get("enabled"):
        problems.append("spec.rollout.canary.analysis.metrics: PredictionDriftPSI is measured by the drift "
                        "monitor: set spec.drift.enabled (with spec.drift.reference), or remove it")
    return problems


def problems_of(spec: dict[str, Any], prometheus: bool = True) -> list[str]:
    """Every reason the operator cannot honour ``spec`` (empty when it can); ``prometheus``: the operator
    has a Prometheus for canary analysis."""
    problems = _gpu_problems(spec) + _canary_problems(spec, prometheus)
    try:
        render_model_config(spec)
    except ConfigError as err:
        problems.append(str(err))
    return problems
