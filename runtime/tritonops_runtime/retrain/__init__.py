"""The retraining entry point run by the operator's retraining Job: fine-tune, evaluate against the serving
model, optimize, and write a new model version (with its digest and reference profile) to the model store.

Library use::

    from tritonops_runtime.retrain import RetrainConfig, retrain
    result = retrain(RetrainConfig(model_uri="s3://models/clf/1/model.pt", data_uri="s3://data/new.npz",
                                   output_uri="s3://models/clf", onnx=True))
    result.decision, result.storage_uri, result.digest, result.to_json()

The command line is :func:`tritonops_runtime.retrain.main.main` (``tritonops-retrain``).
"""

from tritonops_runtime.retrain.config import (
    EXIT_ACCEPTED,
    EXIT_FAILED,
    EXIT_REJECTED,
    Result,
    RetrainConfig,
    RetrainError,
    VersionExistsError,
)
from tritonops_runtime.retrain.pipeline import retrain

__all__ = ["EXIT_ACCEPTED", "EXIT_FAILED", "EXIT_REJECTED", "Result", "RetrainConfig", "RetrainError",
           "VersionExistsError", "retrain"]
