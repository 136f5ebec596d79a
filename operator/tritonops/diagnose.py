"""Read whether a revision serves, and why its pods do not: the scheduler's verdict, a failed fetch, a crash.

Pure functions over observed Pod objects (and Nodes, when a pod is unschedulable); the planner turns the
result into a ``Degraded`` condition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tritonops.placement import explain
from tritonops.status import reasons as r

CRASH_WAITING = ("CrashLoopBackOff", "CreateContainerConfigError", "ImagePullBackOff", "ErrImagePull",
                 "InvalidImageName", "CreateContainerError")


@dataclass(frozen=True)
class Diagnosis:
    """Why pods of a revision are not available."""

    reason: str
    message: str


def deployment_available(dep: dict[str, Any] | None, replicas: int | None) -> bool:
    """Whether ``dep`` has ``replicas`` (None: its own spec.replicas) updated and available."""
    if dep is None:
        return False
    st, spec = dep.get("status", {}), dep.get("spec", {})
    want = spec.get("replicas", 1) if replicas is None else replicas
    current = st.get("observedGeneration", 0) >= dep.get("metadata", {}).get("generation", 0)
    return current and want > 0 and st.get("availableReplicas", 0) >= want \
        and st.get("updatedReplicas", 0) >= want


def _unschedulable(pod: dict[str, Any], nodes: list[dict[str, Any]] | None) -> Diagnosis | None:
    for cond in pod.get("status", {}).get("conditions", []):
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False" \
                and cond.get("reason") == "Unschedulable":
            message = cond.get("message", "")
            reason, advice = explain(pod.get("spec") or {}, message, nodes)
            text = f"pod {pod['metadata']['name']}: {message}"
            return Diagnosis(reason, f"{advice} ({text})" if advice else text)
    return None


def unschedulable(pods: list[dict[str, Any]]) -> bool:
    """Whether the scheduler has refused any of ``pods`` (then the nodes are worth reading)."""
    return any(c.get("type") == "PodScheduled" and c.get("reason") == "Unschedulable"
               for p in pods for c in p.get("status", {}).get("conditions", []))


def _terminated_message(status: dict[str, Any]) -> str | None:
    for state in (status.get("state", {}), status.get("lastState", {})):
        term = state.get("terminated")
        if term and term.get("exitCode", 0) != 0:
            return (term.get("message") or term.get("reason") or f"exit code {term.get('exitCode')}").strip()
    return None


def _fetch_failed(pod: dict[str, Any]) -> Diagnosis | None:
    for status in pod.get("status", {}).get("initContainerStatuses", []):
        message = _terminated_message(status)
        if message:
            return Diagnosis(r.MODEL_FETCH_FAILED, f"pod {pod['metadata']['name']}: {message}")
    return None


def _server_failed(pod: dict[str, Any]) -> Diagnosis | None:
    for status in pod.get("status", {}).get("containerStatuses", []):
        waiting = status.get("state", {}).get("waiting", {})
        message = _terminated_message(status)
        if waiting.get("reason") in CRASH_WAITING or (message and status.get("restartCount", 0) > 0):
            detail = message or waiting.get("message") or waiting.get("reason", "")
            return Diagnosis(r.MODEL_LOAD_FAILED,
                             f"pod {pod['metadata']['name']}: {waiting.get('reason', 'Error')}: {detail}")
    return None


def diagnose(pods: list[dict[str, Any]], nodes: list[dict[str, Any]] | None = None) -> Diagnosis | None:
    """The first blocking problem among ``pods`` (scheduling, then fetch, then server), if any; ``nodes``
    (when read) make a scheduling diagnosis precise (:mod:`tritonops.placement`)."""
    live = sorted((p for p in pods if not p.get("metadata", {}).get("deletionTimestamp")),
                  key=lambda p: str(p.get("metadata", {}).get("name")))
    for pod in live:
        if found := _unschedulable(pod, nodes):
            return found
    for check in (_fetch_failed, _server_failed):
        for pod in live:
            if found := check(pod):
                return found
    return None
