"""The retraining entry point run by the operator's retraining Job: fine-tune, evaluate against the serving
model, optimize, and write a new model version (with its digest and reference profile) to the model store.

Library use::

    from tritonops_runtime.retrain import RetrainConfig, retrain
    result = retrain(RetrainConfig(model_uri="s3://models/clf/1/model.pt", data_uri="s3://data/new.npz",
                                   output_uri="s3://models/clf", onnx=True))
    result.decision, result.storage_uri, result.digest, result.to_json()

The command line is :func:`tritonops_runtime.retrain.main.main` (``tritonops-retrain``).
Names are loaded on first use (torch only then): the drift monitor imports :mod:`.metrics` from here in an
image without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_CONFIG = ("EXIT_ACCEPTED", "EXIT_FAILED", "EXIT_REJECTED", "Result", "RetrainConfig", "RetrainError",
           "VersionExistsError")
__all__ = ["EXIT_ACCEPTED", "EXIT_FAILED", "EXIT_REJECTED", "Result", "RetrainConfig", "RetrainError",
           "VersionExistsError", "retrain"]


def __getattr__(name: str) -> Any:
    if name in _CONFIG:
        return getattr(importlib.import_module("tritonops_runtime.retrain.config"), name)
    if name == "retrain":
        return importlib.import_module("tritonops_runtime.retrain.pipeline").retrain
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
