"""Why the scheduler placed a pod nowhere, precisely (pure): no node matches its placement, every node that
matches carries a taint it does not tolerate, or the matching nodes lack free GPUs.

The scheduler's message alone cannot tell these apart: it reports each node under the *first* filter that
rejected it, and taints are checked before node selectors, so "2 node(s) had untolerated taint" is printed
both for a pod whose selector matches those nodes and for one whose selector matches nothing. With the
nodes at hand (read only when a pod is unschedulable) the operator finds the answer itself: the nodes the
pod's ``nodeSelector`` and required node affinity select, then the taints of those nodes it does not
tolerate.
"""

from __future__ import annotations

from typing import Any

from tritonops.status import reasons as r

_BLOCKING = ("NoSchedule", "NoExecute")


def _expression(expr: dict[str, Any], labels: dict[str, str]) -> bool:
    key, op, values = expr.get("key", ""), expr.get("operator", ""), expr.get("values") or []
    if op == "In":
        return labels.get(key) in values
    if op == "NotIn":
        return labels.get(key) not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    return True  # Gt/Lt: not judged here; the scheduler's message says the rest


def selects(pod_spec: dict[str, Any], node: dict[str, Any]) -> bool:
    """Whether ``nodeSelector`` and required node affinity of ``pod_spec`` select ``node``."""
    labels = node.get("metadata", {}).get("labels") or {}
    if any(labels.get(k) != v for k, v in (pod_spec.get("nodeSelector") or {}).items()):
        return False
    required = ((pod_spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution") or {}
    terms = required.get("nodeSelectorTerms") or []
    return not terms or any(all(_expression(e, labels) for e in t.get("matchExpressions") or []) for t in terms)


def _tolerated(taint: dict[str, Any], tolerations: list[dict[str, Any]]) -> bool:
    for tol in tolerations:
        if tol.get("effect") and tol["effect"] != taint.get("effect"):
            continue
        if tol.get("operator") == "Exists" and (not tol.get("key") or tol["key"] == taint.get("key")):
            return True
        if tol.get("key") == taint.get("key") and tol.get("value", "") == taint.get("value", ""):
            return True
    return False


def untolerated(pod_spec: dict[str, Any], node: dict[str, Any]) -> list[str]:
    """The blocking taints of ``node`` the pod does not tolerate, as ``key=value:Effect``."""
    tolerations = pod_spec.get("tolerations") or []
    return [f"{t.get('key')}={t.get('value', '')}:{t.get('effect')}"
            for t in (node.get("spec", {}).get("taints") or [])
            if t.get("effect") in _BLOCKING and not _tolerated(t, tolerations)]


def _from_message(message: str) -> str:
    if "untolerated taint" in message:
        return r.UNTOLERATED_TAINT
    if "didn't match Pod's node affinity/selector" in message:
        return r.NODE_SELECTOR_MISMATCH
    return r.UNSCHEDULABLE


def explain(pod_spec: dict[str, Any], message: str, nodes: list[dict[str, Any]] | None) -> tuple[str, str]:
    """(reason, what to do) for an unschedulable pod; ``nodes`` None: judge from the message alone."""
    if "Insufficient nvidia.com/gpu" in message:
        return r.INSUFFICIENT_GPU, "nodes that match have too few free GPUs: free some, add GPU nodes, or " \
                                   "use capacityPolicy NoSurge / rolling.maxSurge 0"
    if nodes is None:
        return _from_message(message), ""
    matching = [n for n in nodes if selects(pod_spec, n)]
    if not matching:
        selector = pod_spec.get("nodeSelector") or {}
        return r.NODE_SELECTOR_MISMATCH, f"no node matches the pod's nodeSelector {selector} or required " \
                                         "node affinity: fix spec.nodeSelector / spec.affinity or label a node"
    blocked = {t for n in matching for t in untolerated(pod_spec, n)}
    if all(untolerated(pod_spec, n) for n in matching):
        return r.UNTOLERATED_TAINT, f"every node the pod may use ({len(matching)}) has a taint it does not " \
                                    f"tolerate ({', '.join(sorted(blocked))}): add spec.tolerations, or " \
                                    "request the resource the taint guards (nvidia.com/gpu)"
    return r.UNSCHEDULABLE, ""
