"""kind-config.yaml: a schedulable control plane and one worker labelled and tainted like a GPU node."""

from __future__ import annotations

from typing import Any

import yaml

from tests.chart.tools import ROOT

CONFIG = ROOT / "kind-config.yaml"


def patches(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [yaml.safe_load(p) for p in node.get("kubeadmConfigPatches", [])]


def test_structure() -> None:
    cfg = yaml.safe_load(CONFIG.read_text())
    assert (cfg["kind"], cfg["apiVersion"]) == ("Cluster", "kind.x-k8s.io/v1alpha4")
    roles = [n["role"] for n in cfg["nodes"]]
    assert roles == ["control-plane", "worker"]
    control, worker = cfg["nodes"]
    assert set(control) <= {"role", "kubeadmConfigPatches", "labels", "extraMounts", "extraPortMappings"}
    (init,) = patches(control)
    assert init["kind"] == "InitConfiguration" and init["nodeRegistration"]["taints"] == []
    assert worker["labels"] == {"nvidia.com/gpu.present": "true"}
    (join,) = patches(worker)
    assert join["kind"] == "JoinConfiguration"
    assert join["nodeRegistration"]["taints"] == [{"key": "nvidia.com/gpu", "value": "present",
                                                   "effect": "NoSchedule"}]


def test_taint_is_tolerated_by_gpu_pods_only() -> None:
    from tritonops.builders.deployment import GPU_TOLERATION

    (taint,) = patches(yaml.safe_load(CONFIG.read_text())["nodes"][1])[0]["nodeRegistration"]["taints"]
    assert GPU_TOLERATION["key"] == taint["key"] and GPU_TOLERATION["effect"] == taint["effect"]
    assert GPU_TOLERATION["operator"] == "Exists" or GPU_TOLERATION.get("value") == taint["value"]


def test_comments_cover_real_gpus_and_cpu_only() -> None:
    text = CONFIG.read_text()
    for needle in ("/var/run/nvidia-container-devices/all", "device plugin", "nvidia-ctk", "KIND_CPU",
                   "PythonWrapper", "examples/cpu-classifier.yaml"):
        assert needle in text, needle
    commented = "\n".join(line.lstrip("# ") for line in text.splitlines() if line.strip().startswith("#"))
    assert "containerPath: /var/run/nvidia-container-devices/all" in commented
