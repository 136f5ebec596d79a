"""Precise scheduling diagnosis: selector mismatch vs untolerated taint vs insufficient GPUs (tables)."""

from __future__ import annotations

from typing import Any

import pytest

from tritonops.diagnose import diagnose
from tritonops.placement import explain, selects, untolerated

GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
NODES = [
    {"metadata": {"name": "cpu-0", "labels": {"type": "kwok"}}},
    {"metadata": {"name": "gpu-0", "labels": {"type": "kwok", "nvidia.com/gpu.present": "true"}},
     "spec": {"taints": [GPU_TAINT]}},
]
# What the scheduler printed on the dev cluster for both of the first two cases below: it reports a node
# under the first filter that rejects it, and taints are checked before selectors.
AMBIGUOUS = ("0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 1 node(s) had "
             "untolerated taint {nvidia.com/gpu: present}.")


@pytest.mark.parametrize(("spec", "message", "reason"), [
    ({"nodeSelector": {"nvidia.com/gpu.present": "true"}}, AMBIGUOUS, "UntoleratedTaint"),
    ({"nodeSelector": {"pool": "nowhere"}}, AMBIGUOUS, "NodeSelectorMismatch"),
    ({"tolerations": [GPU_TOLERATION]}, "0/2 nodes are available: 1 Insufficient nvidia.com/gpu, 1 node(s) ...",
     "InsufficientGPU"),
    ({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "nvidia.com/gpu.present", "operator": "Exists"}]}]}}}}, AMBIGUOUS,
     "UntoleratedTaint"),
    ({}, "0/2 nodes are available: 2 Insufficient memory.", "Unschedulable"),
])
def test_the_reason_is_found_from_the_nodes(spec: dict[str, Any], message: str, reason: str) -> None:
    assert explain(spec, message, NODES)[0] == reason


def test_without_nodes_the_message_decides() -> None:
    assert explain({}, AMBIGUOUS, None)[0] == "UntoleratedTaint"
    assert explain({}, "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector.",
                   None)[0] == "NodeSelectorMismatch"


def test_selectors_and_tolerations() -> None:
    assert selects({"nodeSelector": {"type": "kwok"}}, NODES[0]) and not selects({"nodeSelector": {"x": "y"}}, NODES[0])
    assert untolerated({}, NODES[1]) == ["nvidia.com/gpu=present:NoSchedule"]
    assert untolerated({"tolerations": [GPU_TOLERATION]}, NODES[1]) == []
    assert untolerated({"tolerations": [{"operator": "Exists"}]}, NODES[1]) == []


def test_diagnose_names_the_taint_and_the_fix() -> None:
    pod = {"metadata": {"name": "p"}, "spec": {"nodeSelector": {"nvidia.com/gpu.present": "true"}},
           "status": {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                      "message": AMBIGUOUS}]}}
    found = diagnose([pod], NODES)
    assert found is not None and found.reason == "UntoleratedTaint"
    assert "nvidia.com/gpu=present:NoSchedule" in found.message and "spec.tolerations" in found.message
