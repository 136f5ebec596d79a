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


def _canary_problems(spec: dict[str, Any]) -> list[str]:
    """Canary features the API accepts whose controllers do not exist yet: refuse them rather than roll out
    a canary nobody checks (the last good revision keeps serving)."""
    rollout = spec.get("rollout", {})
    canary = rollout.get("canary", {})
    if rollout.get("strategy") != "Canary":
        return []
    problems = []
    if canary.get("analysis") or any("analysis" in step for step in canary.get("steps", [])):
        problems.append("spec.rollout.canary: metric analysis (analysis steps, canary.analysis) is not "
                        "implemented yet: remove it and gate the canary with pause steps")
    if canary.get("trafficRouting"):
        problems.append("spec.rollout.canary.trafficRouting: Gateway API routing is not implemented yet: "
                        "remove it; the canary's weight is set by replica counts")
    return problems


def problems_of(spec: dict[str, Any]) -> list[str]:
    """Every reason the operator cannot honour ``spec`` (empty when it can)."""
    problems = _gpu_problems(spec) + _canary_problems(spec)
    try:
        render_model_config(spec)
    except ConfigError as err:
        problems.append(str(err))
    return problems
