"""Settings and outcome of one retraining run, the exit codes, and the error type.

:class:`RetrainConfig` is everything a run needs (the CLI builds it from flags; users' code builds it
directly); :class:`Result` is what a run reports. ``Result.to_json()`` is the JSON the Job prints and writes to
its termination message (camelCase keys, like the operator's API)::

    {"decision": "Accepted" | "Rejected" | "Failed",
     "reasons": ["..."],                     # why (always at least one line)
     "task": "classification", "metric": "accuracy",
     "current": {"accuracy": 0.61, "f1": 0.58, "auc": 0.83},    # the serving model on the holdout
     "candidate": {"accuracy": 0.95, ...},   # the model written (after optimizations); if none: the fine-tuned one
     "finetuned": {"accuracy": 0.95, ...},   # the fine-tuned model, before optimizations
     "version": "2", "storageUri": "s3://models/clf/2/model.pt", "versionUri": "s3://models/clf/2/",
     "digest": "sha256:...", "format": "torchscript",            # spec.model.{storageUri,digest,format}
     "parentVersion": "1", "parentDigest": "sha256:...", "dataDigest": "sha256:...",
     "samples": {"rows": 2000, "train": 1600, "holdout": 400},
     "optimizations": {"torchscript": "kept", "onnx": "kept", "prune": "kept (sparsity 0.300)",
                       "quantize": "rejected: the quantized model's accuracy ..."},
     "files": {"model.pt": "sha256:...", "model.onnx": "sha256:...", "reference_profile.json": "sha256:...",
               "manifest.json": "sha256:..."}}

Metric values are rounded to 6 decimals; an undefined one (AUC of a holdout with a single class) is null.
``storageUri``/``digest``/``version`` are empty and ``files`` is ``{}`` unless the decision is Accepted; the
metrics are those measured before the run stopped. Each optimization's status is ``off``, ``kept`` (with a note),
``rejected: <why>`` (failed the gate), ``failed: <why>`` (an error: the run goes on without it) or
``not applicable: <why>``; ``optimizations`` is ``{}`` unless the fine-tuned model passed the gate.

Exit codes (the operator reads them from the Job's pod, ``state.terminated.exitCode``):

- ``0`` Accepted: a new version was written;
- ``3`` Rejected: the candidate did not pass the gate; nothing was written;
- ``1`` Failed: an error (bad arguments, unreadable inputs, a version that already exists, a failed write);
  nothing was written (a failed S3 upload removes the objects it had created);
- anything else: the process did not finish (137 OOM-killed, 143 terminated, e.g. by activeDeadlineSeconds),
  and no result was written.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from torch import nn

from tritonops_runtime import contract as c
from tritonops_runtime.retrain.metrics import CLASSIFICATION_METRICS, REGRESSION_METRICS

EXIT_ACCEPTED: Final = 0
EXIT_FAILED: Final = 1
EXIT_REJECTED: Final = c.RETRAIN_EXIT_REJECTED  # 3: the Job's podFailurePolicy fails the Job at once on it

ACCEPTED: Final = "Accepted"
REJECTED: Final = "Rejected"
FAILED: Final = "Failed"

TASKS: Final = {"classification": CLASSIFICATION_METRICS, "regression": REGRESSION_METRICS}
DEFAULT_METRIC: Final = {"classification": "accuracy", "regression": "mse"}
OUTPUT_KINDS: Final = ("probabilities", "logits")
WRITABLE_SCHEMES: Final = ("s3", "file", "pvc")
_VERSION = re.compile(r"^[1-9][0-9]{0,17}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


class RetrainError(Exception):
    """A run that cannot go on; ``str()`` is the one-line reason."""


class VersionExistsError(RetrainError):
    """The version to write is already in the store (it is never overwritten)."""


ModelFactory = Callable[[], nn.Module]


@dataclass(frozen=True)
class RetrainConfig:
    """One retraining run. URIs take the fetcher's schemes (file://, pvc://, http(s)://, s3://, gs://) for the
    inputs; the output must be s3://, file:// or pvc://.

    ``min_improvement`` is the least the chosen metric must improve on the serving model's (in the metric's
    good direction); a negative value is a tolerance (the candidate may be that much worse). ``min_metric`` is
    an absolute bound: a minimum for accuracy/f1/auc, a maximum for mse/mae. ``max_optimization_loss``, when
    set, also bounds what pruning and quantization may cost against the fine-tuned model. ``model_class`` (a
    ``"module:Name"`` string or a zero-argument callable returning an ``nn.Module``) makes the run train an
    eager copy of the model (its state dict loaded from the TorchScript file), which is then scripted.
    """

    model_uri: str
    data_uri: str
    output_uri: str
    task: str = "classification"
    metric: str = ""  # empty: accuracy (classification) or mse (regression)
    outputs: str = "probabilities"  # what a classifier returns: probabilities or logits
    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 64
    holdout_fraction: float = 0.2
    seed: int = 0
    min_improvement: float = 0.0
    min_metric: float | None = None
    max_optimization_loss: float | None = None  # None: optimizations pass the gate only
    onnx: bool = False
    quantize: bool = False
    prune: float = 0.0
    version: str = ""  # empty: one more than the highest version under output_uri
    input_name: str = "INPUT0"
    output_name: str = "OUTPUT0"
    model_digest: str = ""  # expected sha256:<hex> of the serving model, verified as the fetcher does
    parent_version: str = ""  # empty: taken from the model URI's path (.../<n>/model.pt) when it has one
    model_class: str | ModelFactory | None = None
    threads: int = 0  # torch intra-op threads during the run; 0: the CPUs this container may use (see train.py)
    pvc_root: Path = Path(c.PVC_ROOT)
    scratch: Path = Path(c.SCRATCH_DIR)
    max_bytes: int = c.DEFAULT_MAX_BYTES

    @property
    def gate_metric(self) -> str:
        """The metric the gate compares."""
        return self.metric or DEFAULT_METRIC.get(self.task, "")

    def check(self) -> None:
        """Refuse settings that cannot work, naming the flag to fix."""
        problems = [p for p in (*self._check_io(), *self._check_training()) if p]
        if problems:
            raise RetrainError("; ".join(problems))

    def _check_io(self) -> list[str]:
        out = [f"--{name} is required" for name, value in (("model-uri", self.model_uri),
                                                            ("data-uri", self.data_uri),
                                                            ("output-uri", self.output_uri)) if not value]
        if self.version and not _VERSION.match(self.version):
            out.append(f"bad --version {self.version!r}: a positive integer")
        if self.model_digest and not _DIGEST.match(self.model_digest):
            out.append(f"bad --model-digest {self.model_digest!r}: expected sha256:<64 hex digits>")
        if not self.input_name or not self.output_name:
            out.append("--input-name and --output-name must not be empty")
        return out

    def _check_training(self) -> list[str]:
        out = []
        if self.task not in TASKS:
            out.append(f"unknown --task {self.task!r}: classification or regression")
        elif self.gate_metric not in TASKS[self.task]:
            out.append(f"--metric {self.metric!r} does not suit {self.task}: one of {', '.join(TASKS[self.task])}")
        if self.outputs not in OUTPUT_KINDS:
            out.append(f"unknown --outputs {self.outputs!r}: probabilities or logits")
        if self.epochs < 1 or self.batch_size < 1:
            out.append("--epochs and --batch-size must be at least 1")
        if self.threads < 0:
            out.append("--threads must be >= 0")
        if not (math.isfinite(self.lr) and self.lr > 0):
            out.append(f"bad --lr {self.lr}: a positive number")
        if not 0 < self.holdout_fraction < 1:
            out.append(f"bad --holdout-fraction {self.holdout_fraction}: between 0 and 1 (exclusive)")
        if not 0 <= self.prune < 1:
            out.append(f"bad --prune {self.prune}: a fraction of the weights in [0, 1)")
        if not math.isfinite(self.min_improvement):
            out.append("--min-improvement must be finite")
        if self.max_optimization_loss is not None and not self.max_optimization_loss >= 0:
            out.append("--max-optimization-loss must be >= 0")
        return out


def clean_number(value: float) -> float | None:
    """A metric for JSON: rounded to 6 decimals, None when undefined (NaN/inf are not JSON)."""
    return round(float(value), 6) if math.isfinite(value) else None


@dataclass
class Result:
    """The outcome of a run (see the module docstring for its JSON form)."""

    decision: str
    reasons: list[str]
    task: str = ""
    metric: str = ""
    current: dict[str, float] = field(default_factory=dict)
    candidate: dict[str, float] = field(default_factory=dict)
    finetuned: dict[str, float] = field(default_factory=dict)
    version: str = ""
    storage_uri: str = ""
    version_uri: str = ""
    digest: str = ""
    format: str = "torchscript"
    parent_version: str = ""
    parent_digest: str = ""
    data_digest: str = ""
    samples: dict[str, int] = field(default_factory=dict)
    optimizations: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """0 Accepted, 3 Rejected, 1 Failed."""
        return {ACCEPTED: EXIT_ACCEPTED, REJECTED: EXIT_REJECTED}.get(self.decision, EXIT_FAILED)

    def to_json(self) -> dict[str, Any]:
        """The JSON object reported (camelCase keys, metrics rounded, undefined ones null)."""
        def metrics(values: dict[str, float]) -> dict[str, float | None]:
            return {k: clean_number(v) for k, v in values.items()}

        return {"decision": self.decision, "reasons": list(self.reasons), "task": self.task,
                "metric": self.metric, "current": metrics(self.current), "candidate": metrics(self.candidate),
                "finetuned": metrics(self.finetuned), "version": self.version, "storageUri": self.storage_uri,
                "versionUri": self.version_uri, "digest": self.digest, "format": self.format,
                "parentVersion": self.parent_version, "parentDigest": self.parent_digest,
                "dataDigest": self.data_digest, "samples": dict(self.samples),
                "optimizations": dict(self.optimizations), "files": dict(self.files)}
