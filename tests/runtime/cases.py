"""Spec pieces rendered by the golden-file tests and loaded into the real tritonserver."""

from __future__ import annotations

from typing import Any

IO = {
    "inputs": [{"name": "INPUT0", "dataType": "TYPE_FP32", "dims": [4]}],
    "outputs": [{"name": "OUTPUT0", "dataType": "TYPE_FP32", "dims": [3]}],
}

# name -> (spec.model, spec.runtime.triton); the model name is the case name (Triton wants dir == name).
# Cases starting with "wrap_" are served by the Python-backend wrapper and must become READY on CPU.
CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "wrap_torchscript_minimal": ({"format": "torchscript", "version": 1, **IO}, {"backend": "PythonWrapper"}),
    "wrap_torchscript_batching": (
        {"format": "torchscript", "version": 1, **IO},
        {"backend": "PythonWrapper", "maxBatchSize": 64, "instanceGroups": [{"kind": "KIND_CPU", "count": 2}],
         "dynamicBatching": {"preferredBatchSize": [16, 32], "maxQueueDelayMicroseconds": 200},
         "versionPolicy": {"latest": {"numVersions": 1}}},
    ),
    "wrap_onnx_params": (
        {"format": "onnx", "version": 1, **IO},
        {"backend": "PythonWrapper", "maxBatchSize": 8, "instanceGroups": [{"kind": "KIND_CPU", "count": 1}],
         "dynamicBatching": {}, "versionPolicy": {"specific": {"versions": [1]}},
         "parameters": {"note": 'quote " backslash \\ newline \n tab \t unicode \u00e9', "a": "1"}},
    ),
    "wrap_onnx_all_versions": (
        {"format": "onnx", "version": 1, **IO},
        {"backend": "PythonWrapper", "maxBatchSize": 4, "versionPolicy": {"all": {}}},
    ),
    "native_torchscript_gpu": (
        {"format": "torchscript", "version": 3, **IO},
        {"maxBatchSize": 64, "instanceGroups": [{"kind": "KIND_GPU", "count": 1, "gpus": [0, 1]}],
         "dynamicBatching": {"preferredBatchSize": [16, 32], "maxQueueDelayMicroseconds": 200}},
    ),
    "native_onnx_autocomplete": ({"format": "onnx", "version": 1}, {}),
    "native_tensorrt": (
        {"format": "tensorrt", "version": 2,
         "inputs": [{"name": "images", "dataType": "TYPE_FP16", "dims": [3, -1, -1]}],
         "outputs": [{"name": "scores", "dataType": "TYPE_FP16", "dims": [1000]}]},
        {"maxBatchSize": 16, "instanceGroups": [{"kind": "KIND_GPU", "count": 2}]},
    ),
    "native_python": (
        {"format": "python", "version": 1,
         "inputs": [{"name": "TEXT", "dataType": "TYPE_STRING", "dims": [1]}],
         "outputs": [{"name": "LABEL", "dataType": "TYPE_INT64", "dims": [1]}]},
        {"instanceGroups": [{"kind": "KIND_CPU", "count": 1}],
         "parameters": {"EXECUTION_ENV_PATH": "$$TRITON_MODEL_DIRECTORY/env"}},
    ),
}


def model_spec(name: str) -> dict[str, Any]:
    """spec.model of a case, with its name."""
    return {"name": name, **CASES[name][0]}
