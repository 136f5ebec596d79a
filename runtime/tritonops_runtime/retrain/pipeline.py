"""``retrain(config) -> Result``: one retraining run, start to end.

1. check the settings and open the output store (refusing gs:// and http(s)://, and an explicit ``--version``
   that already exists) before any work;
2. fetch the serving model and the new data with the fetcher's code (:mod:`.data`); split off the holdout;
3. score the serving model on the holdout, fine-tune a copy (:mod:`.train`), score it; the gate
   (:mod:`.evaluate`) rejects it, or lets it through;
4. optional pruning, then optional int8 quantization, each kept only if it passes the same gate
   (:mod:`.optimize`); the TorchScript file is written and checked; the optional ONNX export must match torch and
   pass the gate;
5. the reference profile and the manifest are written next to the model, and the directory is published as a
   new version (:mod:`.publish`, :mod:`.store`).

Every outcome is a :class:`~.config.Result`: Accepted (a version was written), Rejected (the gate said no:
nothing written) or Failed (an error: nothing written, the reason in ``reasons``). The serving model is only
ever read. Reasons are single lines, redacted like the fetcher's (no credentials, signed query strings or
secret values of the environment).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from torch import nn

from tritonops_runtime.errors import FetchError
from tritonops_runtime.redaction import known_secrets, redact_text
from tritonops_runtime.retrain.config import (
    ACCEPTED,
    FAILED,
    REJECTED,
    Result,
    RetrainConfig,
    RetrainError,
    VersionExistsError,
)
from tritonops_runtime.retrain.data import Dataset, fetch_model, load_data, split
from tritonops_runtime.retrain.evaluate import Gate, evaluate, number, score
from tritonops_runtime.retrain.metrics import HIGHER_IS_BETTER
from tritonops_runtime.retrain.optimize import (
    NotApplicableError,
    clone,
    export_onnx,
    prune_magnitude,
    quantize_int8,
    save_torchscript,
)
from tritonops_runtime.retrain.publish import (
    MANIFEST_FILE,
    MODEL_FILE,
    ONNX_FILE,
    PROFILE_FILE,
    dump_manifest,
    manifest,
    publish,
    sha256_of,
    write_profile,
)
from tritonops_runtime.retrain.store import Store, open_store, version_uri
from tritonops_runtime.retrain.train import fine_tune, load_model, model_factory, predict, torch_threads

SCRATCH_PREFIX = "tritonops-retrain-"
MAX_REASON = 600
OPTIMIZATIONS = ("torchscript", "onnx", "prune", "quantize")


def _one_line(err: BaseException) -> str:
    return " ".join(f"{type(err).__name__}: {err}".split())[:300]


def _variant(name: str, make: Callable[[], tuple[nn.Module, str]], gate: Gate, hold: Dataset, cfg: RetrainConfig,
             result: Result) -> nn.Module | None:
    """Build an optional variant with ``make() -> (model, note)``; keep it only if it passes the gate."""
    try:
        model, note = make()
        metrics = evaluate(model, hold.inputs, hold.labels, cfg)
    except NotApplicableError as err:
        result.optimizations[name] = f"not applicable: {err}"
        return None
    except Exception as err:  # an optional step: its failure is reported, the run goes on without it
        result.optimizations[name] = f"failed: {_one_line(err)}"
        return None
    label = f"the {name}d model"
    failures = gate.failures(metrics, label) or _cost(cfg, metrics, result, label)
    if failures:
        result.optimizations[name] = f"rejected: {failures[0]}"
        return None
    result.optimizations[name], result.candidate = f"kept{note}", metrics
    return model


def _cost(cfg: RetrainConfig, metrics: dict[str, float], result: Result, what: str) -> list[str]:
    """Why an optimization costs more than ``--max-optimization-loss`` against the fine-tuned model."""
    name, allowed = cfg.gate_metric, cfg.max_optimization_loss
    new, tuned = metrics[name], result.finetuned[name]
    loss = tuned - new if HIGHER_IS_BETTER[name] else new - tuned
    if allowed is None or not loss > allowed + 1e-12:
        return []
    return [f"{what} loses {loss:.4f} of {name} against the fine-tuned model (--max-optimization-loss {allowed:g})"]


def _optimize(cfg: RetrainConfig, model: nn.Module, hold: Dataset, gate: Gate, result: Result
              ) -> tuple[nn.Module, nn.Module]:
    """(the model to write, its float form for ONNX) after the optional pruning and quantization."""
    def pruned() -> tuple[nn.Module, str]:
        copy = clone(model)
        return copy, f" (sparsity {prune_magnitude(copy, cfg.prune):.3f})"

    def quantized() -> tuple[nn.Module, str]:  # of `model` when called: the pruned one if pruning was kept
        return quantize_int8(clone(model)), " (int8 dynamic)"

    if cfg.prune > 0 and (kept := _variant("prune", pruned, gate, hold, cfg, result)) is not None:
        model = kept
    final = model
    if cfg.quantize and (kept := _variant("quantize", quantized, gate, hold, cfg, result)) is not None:
        final = kept
    return final, model


def _onnx(cfg: RetrainConfig, model: nn.Module, stage: Path, hold: Dataset, gate: Gate, result: Result,
          quantized: bool) -> dict[str, Any] | None:
    """Export ``model`` to ``stage/model.onnx`` if asked; keep it only if it matches torch and passes the gate."""
    if not cfg.onnx:
        return None
    path = stage / ONNX_FILE
    try:
        outputs, diff = export_onnx(model, path, hold.inputs, cfg.input_name, cfg.output_name)
        failures = gate.failures(score(outputs, hold.labels, cfg), "the ONNX model")
    except RetrainError as err:
        failures = [f"failed: {err}"]
    if failures:
        path.unlink(missing_ok=True)
        status = failures[0]
        result.optimizations["onnx"] = status if status.startswith("failed: ") else f"rejected: {status}"
        return None
    result.optimizations["onnx"] = "kept"
    source = "the float model of which model.pt is the int8 quantization" if quantized else "the model in model.pt"
    return {"maxAbsDiff": diff, "exportedFrom": source, "opset": 17}


def _gate_candidate(cfg: RetrainConfig, serving: nn.Module, train: Dataset, hold: Dataset,
                    result: Result) -> tuple[nn.Module, Gate, dict[str, Any]] | None:
    """Fine-tune a copy of ``serving``; (candidate, gate, training facts), or None when the gate rejects it."""
    result.current = evaluate(serving, hold.inputs, hold.labels, cfg)
    gate = Gate.from_config(cfg, result.current)
    candidate = clone(serving)
    report = fine_tune(candidate, train.inputs, train.labels, cfg)
    result.finetuned = result.candidate = evaluate(candidate, hold.inputs, hold.labels, cfg)
    failures = gate.failures(result.finetuned, "the fine-tuned model")
    if failures:
        result.decision = REJECTED
        result.reasons = ([report.diverged] if report.diverged else []) + failures
        return None
    return candidate, gate, {"epochsRun": report.epochs, "finalLoss": report.loss}


def _summary(cfg: RetrainConfig, gate: Gate, result: Result) -> list[str]:
    metric = cfg.gate_metric
    new, old = number(result.candidate[metric]), number(gate.current)
    line = f"the new model's {metric} {new} vs the serving model's {old} on {result.samples['holdout']} holdout " \
           f"rows (required change >= {cfg.min_improvement:g})"
    kept = [k for k, v in result.optimizations.items() if v.startswith("kept")]
    dropped = [f"{k} {v.split(':', 1)[0]}" for k, v in result.optimizations.items() if k != "torchscript"
               and not v.startswith(("kept", "off"))]
    return [line, f"kept: {', '.join(kept)}"] + ([f"dropped: {', '.join(dropped)}"] if dropped else [])


def _write(cfg: RetrainConfig, store: Store, stage: Path, data: Dataset, final: nn.Module,
           facts: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """Write the profile and manifest next to the model in ``stage`` and publish the version."""
    outputs: npt.NDArray[np.float32] = predict(final, data.inputs)
    files = {MODEL_FILE: sha256_of(stage / MODEL_FILE)}
    if (stage / ONNX_FILE).is_file():
        files[ONNX_FILE] = sha256_of(stage / ONNX_FILE)
    meta = {"source": "tritonops-retrain", "model": files[MODEL_FILE], "data": data.digest}
    files[PROFILE_FILE] = write_profile(stage / PROFILE_FILE, data.inputs, outputs, cfg, meta)
    facts["files"] = files

    def write_manifest(version: str) -> dict[str, Any]:
        content = manifest(cfg, version, facts)
        dump_manifest(stage / MANIFEST_FILE, content)
        return content

    return publish(store, cfg, stage, write_manifest)


def _run(cfg: RetrainConfig, store: Store, tmp: Path, result: Result) -> None:
    current = fetch_model(cfg, tmp)
    result.parent_version, result.parent_digest = current.version, current.digest
    data = load_data(cfg, tmp)
    result.data_digest = data.digest
    train_rows, hold_rows = split(len(data), cfg.holdout_fraction, cfg.seed)
    train, hold = data.take(train_rows), data.take(hold_rows)
    result.samples = {"rows": len(data), "train": len(train), "holdout": len(hold)}
    serving = load_model(current.path, model_factory(cfg.model_class))
    gated = _gate_candidate(cfg, serving, train, hold, result)
    if gated is None:
        return
    candidate, gate, training = gated
    result.optimizations = {name: "off" for name in OPTIMIZATIONS}
    final, float_model = _optimize(cfg, candidate, hold, gate, result)
    stage = tmp / "version"
    stage.mkdir()
    save_torchscript(final, stage / MODEL_FILE, hold.inputs)
    result.optimizations["torchscript"] = "kept"
    onnx_facts = _onnx(cfg, float_model, stage, hold, gate, result, final is not float_model)
    facts = {"parentVersion": current.version, "parentDigest": current.digest, "dataDigest": data.digest,
             "samples": result.samples, "training": training, "optimizations": result.optimizations,
             "onnx": onnx_facts, "metrics": {"current": result.current, "finetuned": result.finetuned,
                                             "candidate": result.candidate}}
    version, files = _write(cfg, store, stage, data, final, facts)
    result.decision, result.version, result.files = ACCEPTED, version, files
    result.storage_uri = version_uri(cfg.output_uri, version, MODEL_FILE)
    result.version_uri, result.digest = version_uri(cfg.output_uri, version), files[MODEL_FILE]
    result.reasons = _summary(cfg, gate, result)


def retrain(cfg: RetrainConfig) -> Result:
    """Run one retraining (see the module docstring); never raises for a failed run: the Result says why."""
    result = Result(FAILED, [], task=cfg.task, metric=cfg.gate_metric)
    secrets = known_secrets(os.environ, [cfg.model_uri, cfg.data_uri, cfg.output_uri])
    try:
        cfg.check()
        store = open_store(cfg.output_uri, cfg.pvc_root)
        if cfg.version and store.exists(cfg.version):
            where = version_uri(cfg.output_uri, cfg.version)
            raise VersionExistsError(f"version {cfg.version} already exists at {where}: versions are never overwritten")
        cfg.scratch.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cfg.scratch, prefix=SCRATCH_PREFIX) as tmp, torch_threads(cfg.threads):
            _run(cfg, store, Path(tmp), result)
    except (RetrainError, FetchError) as err:
        result.decision, result.reasons = FAILED, [str(err)]
    except Exception as err:  # any failure must still come back as a Result with a reason
        result.decision, result.reasons = FAILED, [f"unexpected {_one_line(err)}"]
    if result.decision != ACCEPTED:
        result.version = result.storage_uri = result.version_uri = result.digest = ""
        result.files = {}
    result.reasons = [redact_text(" ".join(r.split()), secrets)[:MAX_REASON] for r in result.reasons]
    return result
