"""Loading the serving model and fine-tuning a copy of it.

A TorchScript module loaded with ``torch.jit.load`` keeps its parameters as leaf tensors with
``requires_grad=True``, its ``train()``/``eval()`` switches work (dropout, batch norm) and autograd runs
through its graph, so it is fine-tuned in place like an eager module (tested). The candidate is a copy made
by :func:`.optimize.clone`: not ``copy.deepcopy``, whose copies of a ScriptModule's parameters are non-leaf
tensors that no optimizer accepts.

Loss: the model's outputs are turned into log-probabilities (:func:`log_probabilities`) and the negative log
likelihood of the labels is minimised:

- ``outputs="probabilities"`` (the example model ends with a softmax): ``log(clamp(p, 1e-12))``; a single
  output column is read as P(class 1) (sigmoid output): ``[log(1 - p), log(p)]``;
- ``outputs="logits"``: ``log_softmax`` (a single column: ``[logsigmoid(-z), logsigmoid(z)]``).

Regression minimises the mean squared error. The optimiser is Adam over mini-batches drawn in a seeded order
(``torch.Generator``); dropout draws from torch's global generator, which is seeded too, inside
``torch.random.fork_rng`` so the caller's random state is left as it was. A non-finite loss stops training:
the candidate is then whatever the diverged weights give, and the gate rejects it.

With ``model_class``, the state dict of the TorchScript file is loaded into an eager instance (strict: every
key must match), which is trained instead and scripted on export (see :mod:`.optimize`).
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from torch.nn import functional as F

from tritonops_runtime.retrain.config import ModelFactory, RetrainConfig, RetrainError

EPS = 1e-12
EVAL_BATCH = 4096


def available_cpus(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """The CPUs this process may use: its affinity, capped by a cgroup CPU quota (v2 ``cpu.max``, v1 cfs)."""
    cpus = len(os.sched_getaffinity(0))
    try:
        text = (cgroup / "cpu.max").read_text().split()  # "max 100000" or "<quota> <period>"
        quota, period = (text[0], text[1]) if len(text) == 2 else ("max", "1")
    except OSError:
        try:
            quota = (cgroup / "cpu" / "cpu.cfs_quota_us").read_text().strip()  # -1: unlimited
            period = (cgroup / "cpu" / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return cpus
    if quota in ("max", "-1") or not quota.lstrip("-").isdigit() or not period.isdigit() or int(period) <= 0:
        return cpus
    return max(1, min(cpus, math.ceil(int(quota) / int(period))))


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` torch intra-op threads (0: :func:`available_cpus`), restoring the count afterwards.

    torch starts one thread per core of the node, not per CPU of the pod's limit: throttled, those threads
    mostly wait for each other. Small models suffer most: the example MLP trained 10-20x slower with 2
    threads on 2 busy cores than with one (measured); ``--threads 1`` suits them.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(n if n > 0 else min(before, available_cpus()))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class TrainReport:
    """What fine-tuning did: epochs completed, the last epoch's mean loss, and why it stopped early ('')."""

    epochs: int
    loss: float
    diverged: str = ""


def model_factory(spec: str | ModelFactory | None) -> ModelFactory | None:
    """The callable named by ``"module:Name"`` (imported), a callable as is, or None."""
    if spec is None or callable(spec):
        return spec
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise RetrainError(f"bad --model-class {spec!r}: expected module:Name")
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise RetrainError(f"cannot import --model-class {spec}: {err}") from None
    if not callable(target):
        raise RetrainError(f"--model-class {spec} is not a class or factory")
    factory: ModelFactory = target
    return factory


def load_model(path: Path, factory: ModelFactory | None = None) -> nn.Module:
    """The TorchScript model at ``path`` on the CPU, in eval mode; an eager copy when ``factory`` is given."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit deprecation notices
            scripted: nn.Module = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
    except Exception as err:  # torch raises RuntimeError, ValueError, pickle errors...
        raise RetrainError(f"cannot load the serving model as TorchScript: {type(err).__name__}: "
                           f"{str(err).splitlines()[0] if str(err) else ''}") from None
    if factory is None:
        return scripted.eval()
    eager = factory()
    try:
        eager.load_state_dict(scripted.state_dict(), strict=True)
    except RuntimeError as err:
        raise RetrainError(f"the --model-class does not match the model's state dict: "
                           f"{' '.join(str(err).split())[:300]}") from None
    return eager.eval()


def log_probabilities(outputs: torch.Tensor, kind: str) -> torch.Tensor:
    """(n, k) log-probabilities from a classifier's outputs (see the module docstring)."""
    if outputs.ndim == 1 or outputs.shape[-1] == 1:
        out = outputs.reshape(-1)
        if kind == "logits":
            return torch.stack([F.logsigmoid(-out), F.logsigmoid(out)], dim=1)
        p = out.clamp(EPS, 1 - EPS)
        return torch.stack([torch.log1p(-p), torch.log(p)], dim=1)
    if kind == "logits":
        return F.log_softmax(outputs, dim=-1)
    return torch.log(outputs.clamp_min(EPS))


def loss_fn(outputs: torch.Tensor, labels: torch.Tensor, task: str, kind: str) -> torch.Tensor:
    """NLL of the labels (classification) or MSE (regression, labels reshaped to the outputs)."""
    if task == "classification":
        return F.nll_loss(log_probabilities(outputs, kind), labels)
    return F.mse_loss(outputs, labels.reshape(outputs.shape))


def predict(model: nn.Module, inputs: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The model's outputs for ``inputs`` (eval mode, no gradients, in batches)."""
    model.eval()
    chunks = []
    with torch.no_grad():
        for start in range(0, inputs.shape[0], EVAL_BATCH):
            out = model(torch.from_numpy(np.ascontiguousarray(inputs[start:start + EVAL_BATCH])))
            chunks.append(out.detach().float().numpy())
    outputs: npt.NDArray[np.float32] = np.concatenate(chunks).astype(np.float32)
    return outputs


def _epoch(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, cfg: RetrainConfig,
           generator: torch.Generator) -> float:
    total, count = 0.0, 0
    order = torch.randperm(x.shape[0], generator=generator)
    for start in range(0, x.shape[0], cfg.batch_size):
        rows = order[start:start + cfg.batch_size]
        opt.zero_grad()
        loss = loss_fn(model(x[rows]), y[rows], cfg.task, cfg.outputs)
        if not torch.isfinite(loss):
            return math.nan
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        total, count = total + loss.item() * len(rows), count + len(rows)
    return total / count


def fine_tune(model: nn.Module, inputs: npt.NDArray[np.float32], labels: npt.NDArray[np.generic],
              cfg: RetrainConfig) -> TrainReport:
    """Fine-tune ``model`` in place on (inputs, labels) with Adam; returns the training report."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise RetrainError("the serving model has no trainable parameters")
    x = torch.from_numpy(np.ascontiguousarray(inputs))
    y = torch.from_numpy(np.ascontiguousarray(labels))
    loss, epoch = math.nan, 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        generator = torch.Generator().manual_seed(cfg.seed)
        opt = torch.optim.Adam(params, lr=cfg.lr)
        model.train()
        try:
            for epoch in range(1, cfg.epochs + 1):
                loss = _epoch(model, opt, x, y, cfg, generator)
                if not math.isfinite(loss):
                    return TrainReport(epoch, loss, f"the training loss became non-finite in epoch {epoch}")
        except RuntimeError as err:  # shape or dtype mismatch between the model and the data
            raise RetrainError(f"training failed: {' '.join(str(err).split())[:300]}") from None
        finally:
            model.eval()
    return TrainReport(epoch, loss)
