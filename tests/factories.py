"""Factories for ModelDeployment objects and observed children used by the unit tests."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

Mod = Callable[[dict[str, Any]], None]

BASE_SPEC: dict[str, Any] = {
    "model": {"name": "clf", "storageUri": "s3://models/clf/model.pt", "version": 1, "format": "torchscript",
              "inputs": [{"name": "INPUT0", "dataType": "TYPE_FP32", "dims": [4]}],
              "outputs": [{"name": "OUTPUT0", "dataType": "TYPE_FP32", "dims": [3]}]},
    "runtime": {
        "image": "nvcr.io/nvidia/tritonserver:25.10-py3",
        "imagePullPolicy": "IfNotPresent",
        "startupTimeoutSeconds": 600,
        "exitTimeoutSeconds": 30,
        "triton": {"backend": "Native", "maxBatchSize": 8,
                   "instanceGroups": [{"kind": "KIND_GPU", "count": 1}],
                   "dynamicBatching": {"maxQueueDelayMicroseconds": 100}},
    },
    "resources": {"limits": {"nvidia.com/gpu": 1, "memory": "4Gi"}, "requests": {"cpu": "1"}},
    "replicas": 2,
    "rollout": {"strategy": "Rolling", "progressDeadlineSeconds": 600, "revisionHistoryLimit": 10,
                "paused": False},
}


def model_deployment(*mods: Mod, name: str = "clf", namespace: str = "ml", generation: int = 1) -> dict[str, Any]:
    """A ModelDeployment as the API server would return it (defaults applied)."""
    md = {
        "apiVersion": "tritonops.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "generation": generation},
        "spec": copy.deepcopy(BASE_SPEC),
    }
    for mod in mods:
        mod(md)
    return md


def with_spec(path: str, value: Any) -> Mod:
    """Set a dotted spec path, e.g. ``with_spec("model.version", 2)``."""
    def mod(md: dict[str, Any]) -> None:
        node = md["spec"]
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return mod


def with_status(**fields: Any) -> Mod:
    """Merge fields into status."""
    def mod(md: dict[str, Any]) -> None:
        md.setdefault("status", {}).update(copy.deepcopy(fields))
    return mod


def as_observed(obj: dict[str, Any], **status: Any) -> dict[str, Any]:
    """A built child as the API server returns it: server fields added, generation observed."""
    out = copy.deepcopy(obj)
    out["metadata"].update({"uid": "u-" + out["metadata"]["name"], "resourceVersion": "1", "generation": 1})
    if obj["kind"] == "Deployment":
        out["status"] = {"observedGeneration": 1, **status}
    return out


def ready_deployment(obj: dict[str, Any]) -> dict[str, Any]:
    """A built Deployment that reports all its replicas available."""
    n = obj["spec"].get("replicas", 1)
    return as_observed(obj, replicas=n, readyReplicas=n, availableReplicas=n, updatedReplicas=n)
