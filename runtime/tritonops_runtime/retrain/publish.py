"""The new version directory: what is in it, and writing it to the store.

``<output>/<version>/`` holds, uploaded in this order (``model.pt`` claims the version, ``manifest.json``
completes it; see :mod:`.store`):

- ``model.pt``: the TorchScript model (int8 when quantization was kept);
- ``model.onnx``: with ``--onnx``, when the export passed its numerical check and the gate (the float model);
- ``reference_profile.json``: the drift profile (:func:`tritonops_runtime.drift.profile.build_profile`) of the
  new data's inputs (all rows, flattened to (n, features), named ``<input-name>[j]``) and of the written
  model's outputs on them (classification: the predicted class; regression: the output values), with
  ``metadata`` holding the digests of ``model.pt`` and of the data (nothing time-dependent: the same model
  and data give the same profile digest). Its ``sha256:`` digest is the one ``dump_profile`` returns;
- ``manifest.json``: how the version was made (see :func:`manifest`).

The version's digest (the result's ``digest``) is the sha256 of ``model.pt``'s bytes: exactly what the
fetcher computes and checks when the version is deployed with ``storageUri: <output>/<version>/model.pt``
(``spec.model.digest``), from any scheme. (A directory URI would be hashed by the fetcher over every file in
it, the manifest included; the single-file URI is the one to deploy.)
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from tritonops_runtime import contract as c
from tritonops_runtime.fetch import file_sha256
from tritonops_runtime.retrain.config import RetrainConfig, RetrainError, VersionExistsError, clean_number
from tritonops_runtime.retrain.store import Store, next_version, version_uri
from tritonops_runtime.sources import redact

MODEL_FILE: Final = c.MODEL_FILES["torchscript"]
ONNX_FILE: Final = c.MODEL_FILES["onnx"]
PROFILE_FILE: Final = "reference_profile.json"
MANIFEST_FILE: Final = "manifest.json"
MANIFEST_FORMAT: Final = "tritonops.retrain-manifest/v1"
PUBLISH_ATTEMPTS: Final = 3  # an automatic version number taken meanwhile: try the next one


def created_by() -> str:
    """``tritonops-retrain (tritonops-runtime <version>)``."""
    try:
        return f"tritonops-retrain (tritonops-runtime {metadata.version('tritonops-runtime')})"
    except metadata.PackageNotFoundError:
        return "tritonops-retrain"


def sha256_of(path: Path) -> str:
    """``sha256:<hex>`` of a file's bytes (the fetcher's digest of a single-file model)."""
    return f"sha256:{file_sha256(path)}"


def write_profile(path: Path, inputs: npt.NDArray[np.float32], outputs: npt.NDArray[np.float32],
                  cfg: RetrainConfig, meta: Mapping[str, Any]) -> str:
    """Write the reference profile of (inputs, outputs); returns its ``sha256:`` digest."""
    from tritonops_runtime.drift.profile import build_profile, dump_profile

    x = inputs.reshape(inputs.shape[0], -1)
    y = outputs.reshape(outputs.shape[0], -1) if outputs.ndim > 2 else outputs
    try:
        profile = build_profile(x, y, input_names=[cfg.input_name], output_names=[cfg.output_name],
                                output_kind="auto" if cfg.task == "classification" else "numeric",
                                metadata=dict(meta))
        return dump_profile(profile, path)
    except ValueError as err:
        raise RetrainError(f"cannot build the reference profile: {err}") from None


def _metrics(values: Mapping[str, float]) -> dict[str, float | None]:
    return {k: clean_number(v) for k, v in values.items()}


def manifest(cfg: RetrainConfig, version: str, facts: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest of a version; ``facts`` carries what the run measured (see :mod:`.pipeline`)."""
    return {
        "format": MANIFEST_FORMAT, "createdBy": created_by(),
        "createdAt": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "version": version, "storageUri": redact(version_uri(cfg.output_uri, version, MODEL_FILE)),
        "digest": facts["files"][MODEL_FILE], "modelFormat": "torchscript",
        "parent": {"uri": redact(cfg.model_uri), "version": facts["parentVersion"], "digest": facts["parentDigest"]},
        "data": {"uri": redact(cfg.data_uri), "digest": facts["dataDigest"], **facts["samples"],
                 "holdoutFraction": cfg.holdout_fraction, "seed": cfg.seed},
        "task": cfg.task, "metric": cfg.gate_metric, "outputs": cfg.outputs,
        "gate": {"minImprovement": cfg.min_improvement, "minMetric": cfg.min_metric,
                 "maxOptimizationLoss": cfg.max_optimization_loss},
        "metrics": {k: _metrics(facts["metrics"][k]) for k in ("current", "finetuned", "candidate")},
        "training": {"epochs": cfg.epochs, "lr": cfg.lr, "batchSize": cfg.batch_size, **facts["training"],
                     "modelClass": cfg.model_class if isinstance(cfg.model_class, str) else
                     getattr(cfg.model_class, "__qualname__", None)},
        "optimizations": dict(facts["optimizations"]), "onnx": facts.get("onnx"),
        "files": dict(facts["files"]),
    }


def publish(store: Store, cfg: RetrainConfig, stage: Path, write_manifest: Callable[[str], dict[str, Any]]
            ) -> tuple[str, dict[str, str]]:
    """Write the staged files as a new version; returns (version, {file name: digest}).

    ``stage`` holds model.pt, the optional model.onnx and the profile; ``write_manifest(version)`` writes
    ``manifest.json`` for that version into ``stage`` and returns it. An automatic version number that another
    run takes meanwhile is retried with the next one (:data:`PUBLISH_ATTEMPTS` in all); an explicit one fails.
    """
    names = [MODEL_FILE, ONNX_FILE, PROFILE_FILE]
    files = [stage / n for n in names if (stage / n).is_file()]
    for attempt in range(1, PUBLISH_ATTEMPTS + 1):
        version = cfg.version or next_version(store, cfg.parent_version)
        written = write_manifest(version)
        try:
            store.publish(version, [*files, stage / MANIFEST_FILE])
        except VersionExistsError:
            if cfg.version or attempt == PUBLISH_ATTEMPTS:
                raise
            continue
        digests = dict(written["files"])
        digests[MANIFEST_FILE] = sha256_of(stage / MANIFEST_FILE)
        return version, digests
    raise AssertionError("unreachable")  # pragma: no cover


def dump_manifest(path: Path, content: Mapping[str, Any]) -> None:
    """Write ``manifest.json`` (indented, sorted keys, no NaN)."""
    path.write_text(json.dumps(content, indent=2, sort_keys=True, allow_nan=False) + "\n")
