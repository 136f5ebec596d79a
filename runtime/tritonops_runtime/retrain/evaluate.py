"""Scoring a model on the holdout, and the gate every model written must pass.

:func:`evaluate` runs a model (or takes outputs already computed, e.g. by onnxruntime) on the holdout and
returns every metric of the task (:mod:`.metrics`). Classifier outputs are turned into probabilities the same
way training reads them: as they are (``outputs="probabilities"``), or through softmax (``logits``); a single
column is P(class 1). Outputs with NaN or infinity make every metric undefined, which fails the gate.

:class:`Gate` compares a model's metrics with the serving model's on the chosen metric. It passes when

- the improvement (``new - current`` for higher-is-better metrics, ``current - new`` for mse/mae) is at least
  ``min_improvement`` (default 0: not worse; a negative value is a tolerance), and
- the metric meets ``min_metric`` when set (at least it for accuracy/f1/auc, at most it for mse/mae).

An undefined metric (NaN: AUC on a holdout with a single class, non-finite outputs) never passes; an undefined
metric of the serving model leaves only the absolute bound to check. The fine-tuned candidate, and each
optimized variant (pruned, quantized, ONNX), passes through the same gate against the same serving-model
numbers: an optimization that costs more than the gate allows is dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from torch import nn

from tritonops_runtime.retrain.config import RetrainConfig, RetrainError
from tritonops_runtime.retrain.metrics import HIGHER_IS_BETTER, classification_metrics, regression_metrics
from tritonops_runtime.retrain.train import predict


def probabilities(outputs: npt.NDArray[np.floating[Any]], kind: str) -> npt.NDArray[np.float64]:
    """(n, k) class probabilities from a classifier's outputs."""
    out = np.asarray(outputs, dtype=np.float64)
    if out.ndim == 1 or out.shape[-1] == 1:
        z = out.reshape(-1)
        p = 1.0 / (1.0 + np.exp(-z)) if kind == "logits" else z
        return np.stack([1.0 - p, p], axis=1)
    if out.ndim != 2:
        raise RetrainError(f"a classifier's output must be (batch, classes), got shape {out.shape}")
    if kind == "logits":
        shifted = np.exp(out - out.max(axis=1, keepdims=True))
        normalized: npt.NDArray[np.float64] = shifted / shifted.sum(axis=1, keepdims=True)
        return normalized
    return out


def score(outputs: npt.NDArray[np.floating[Any]], labels: npt.NDArray[np.generic],
          cfg: RetrainConfig) -> dict[str, float]:
    """Every metric of the task for precomputed outputs (all NaN when an output is not finite)."""
    names = ("accuracy", "f1", "auc") if cfg.task == "classification" else ("mse", "mae")
    if not np.all(np.isfinite(outputs)):
        return dict.fromkeys(names, math.nan)
    if cfg.task == "classification":
        p = probabilities(outputs, cfg.outputs)
        top = int(labels.max()) if labels.size else 0
        if top >= p.shape[1]:
            raise RetrainError(f"label {top} is out of range for a model with {p.shape[1]} output classes")
        return classification_metrics(p, labels)
    out = np.asarray(outputs, dtype=np.float64)
    if out.size != labels.size:
        raise RetrainError(f"targets {labels.shape} do not match the model's outputs {out.shape}")
    return regression_metrics(out, np.asarray(labels, dtype=np.float64).reshape(out.shape))


def evaluate(model: nn.Module, inputs: npt.NDArray[np.float32], labels: npt.NDArray[np.generic],
             cfg: RetrainConfig) -> dict[str, float]:
    """Every metric of the task for ``model`` on (inputs, labels)."""
    try:
        outputs = predict(model, inputs)
    except RuntimeError as err:
        raise RetrainError(f"the model cannot run on the data: {' '.join(str(err).split())[:300]}") from None
    return score(outputs, labels, cfg)


def number(value: float) -> str:
    """A metric in a message: 4 decimals, or 4 significant digits when huge (a diverged mse)."""
    return f"{value:.4f}" if abs(value) < 1e6 else f"{value:.4g}"


@dataclass(frozen=True)
class Gate:
    """Accept a model only if it is not worse than the serving one (by more than allowed) on ``metric``."""

    metric: str
    current: float
    min_improvement: float = 0.0
    min_metric: float | None = None

    @classmethod
    def from_config(cls, cfg: RetrainConfig, current: dict[str, float]) -> Gate:
        """The gate of a run, against the serving model's metrics."""
        return cls(cfg.gate_metric, current[cfg.gate_metric], cfg.min_improvement, cfg.min_metric)

    def failures(self, metrics: dict[str, float], what: str = "the candidate") -> list[str]:
        """Why ``metrics`` does not pass (empty when it does)."""
        value, name = metrics[self.metric], self.metric
        if math.isnan(value):
            return [f"{what}'s {name} is undefined on the holdout"]
        higher = HIGHER_IS_BETTER[name]
        out = []
        if not math.isnan(self.current):
            gain = value - self.current if higher else self.current - value
            if gain < self.min_improvement - 1e-12:
                need = (f"an improvement of at least {self.min_improvement:g}" if self.min_improvement >= 0
                        else f"at most {-self.min_improvement:g} worse")
                out.append(f"{what}'s {name} {number(value)} vs the serving model's {number(self.current)}: "
                           f"needs {need}")
        if self.min_metric is not None and (value < self.min_metric if higher else value > self.min_metric):
            bound = "at least" if higher else "at most"
            out.append(f"{what}'s {name} {number(value)} is not {bound} {self.min_metric:g} (--min-metric)")
        return out

    def passes(self, metrics: dict[str, float]) -> bool:
        """Whether ``metrics`` passes."""
        return not self.failures(metrics)
