"""Exports and optimizations: ONNX numerically checked against torch, int8 quantization and magnitude pruning,
each gated. Includes the findings the implementation rests on (what torch does with a ScriptModule).
"""

from __future__ import annotations

import copy
import io
import json
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from tests.runtime.test_retrain_data import blobs, example_classifier, example_model_bytes, write_model, write_npz
from tritonops_runtime.retrain import RetrainConfig, retrain
from tritonops_runtime.retrain.config import RetrainError
from tritonops_runtime.retrain.optimize import (
    QUANTIZED_OP,
    NotApplicableError,
    clone,
    export_onnx,
    prune_magnitude,
    quantize_int8,
    save_torchscript,
)
from tritonops_runtime.retrain.train import fine_tune, model_factory, predict, torch_threads


def scripted() -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model: nn.Module = torch.jit.load(io.BytesIO(example_model_bytes()))  # type: ignore[no-untyped-call]
    return model


def load(path: Path) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model: nn.Module = torch.jit.load(str(path))  # type: ignore[no-untyped-call]
    return model


# --- findings about TorchScript modules ------------------------------------------------------------------

def test_a_loaded_scriptmodule_is_trainable_but_deepcopy_is_not() -> None:
    model = scripted()
    assert all(p.is_leaf and p.requires_grad for p in model.parameters())
    assert not any(p.is_leaf for p in copy.deepcopy(model).parameters())  # CloneBackward: optimizers refuse them
    candidate = clone(model)
    assert all(p.is_leaf for p in candidate.parameters())
    x, y = blobs(400, 5, shifted=True)
    cfg = RetrainConfig("m", "d", "o", epochs=3, lr=0.01, seed=1)
    with torch_threads(1):
        report = fine_tune(candidate, x, y, cfg)
    assert report.epochs == 3 and not report.diverged
    assert not np.allclose(predict(candidate, x), predict(model, x))  # trained; the original is untouched
    assert np.array_equal(predict(model, x), predict(scripted(), x))


def test_quantize_dynamic_does_nothing_to_a_scriptmodule() -> None:
    from torch.ao.quantization import quantize_dynamic

    model = scripted()
    x = blobs(64, 5, shifted=False)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        same = quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)  # type: ignore[no-untyped-call]
    assert isinstance(same, torch.jit.ScriptModule) and QUANTIZED_OP not in str(same.inlined_graph)
    assert np.array_equal(predict(same, x), predict(model, x))  # silently unchanged
    quantized = quantize_int8(clone(model))  # the graph-mode route
    assert str(quantized.inlined_graph).count(QUANTIZED_OP) == 3
    assert np.allclose(predict(quantized, x), predict(model, x), atol=0.05)


def test_an_int8_model_does_not_export_to_onnx(tmp_path: Path) -> None:
    x = blobs(16, 5, shifted=False)[0]
    with pytest.raises(RetrainError, match=r"UnsupportedOperatorError: .*quantized::linear_dynamic"):
        export_onnx(quantize_int8(scripted()), tmp_path / "q.onnx", x, "INPUT0", "OUTPUT0")


def test_torch_prune_cannot_act_on_a_scriptmodule() -> None:
    from torch.nn.utils import prune

    linear = next(m for m in scripted().modules() if hasattr(m, "weight"))
    with pytest.raises(TypeError, match="cannot assign"):
        prune.l1_unstructured(linear, "weight", amount=0.5)  # type: ignore[no-untyped-call]


# --- the optimizations --------------------------------------------------------------------------------------

def test_quantized_models_are_saved_and_reloaded(tmp_path: Path) -> None:
    x = blobs(64, 5, shifted=False)[0]
    eager = example_classifier()
    eager.load_state_dict(scripted().state_dict())
    quantized = quantize_int8(eager)  # the eager route (--model-class)
    assert sum(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in quantized.modules()) == 3
    for name, model in (("eager", quantized), ("jit", quantize_int8(scripted()))):
        save_torchscript(model, tmp_path / f"{name}.pt", x)
        reloaded = load(tmp_path / f"{name}.pt")
        assert QUANTIZED_OP in str(reloaded.inlined_graph)
        assert np.allclose(predict(reloaded, x), predict(model, x), atol=1e-6)


class MatmulOnly(nn.Module):
    """No nn.Linear: nothing for dynamic quantization to act on."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(4, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(torch.matmul(x, self.w), dim=-1)


def test_quantization_not_applicable_without_linear_layers() -> None:
    with pytest.raises(NotApplicableError, match=r"no nn\.Linear"):
        quantize_int8(torch.jit.script(MatmulOnly()))


def test_prune_magnitude_zeroes_the_smallest_weights() -> None:
    model = scripted()
    weights = [p.detach().clone() for p in model.parameters() if p.ndim == 2]
    biases = [p.detach().clone() for p in model.parameters() if p.ndim == 1]
    sparsity = prune_magnitude(model, 0.3)
    assert sparsity == pytest.approx(0.3, abs=0.01)
    after = [p.detach() for p in model.parameters() if p.ndim == 2]
    kept = torch.cat([w[a != 0].abs() for w, a in zip(weights, after, strict=True)])
    dropped = torch.cat([w[a == 0].abs() for w, a in zip(weights, after, strict=True)])
    assert float(dropped.max()) <= float(kept.min())  # global threshold over every weight matrix
    assert all(torch.equal(b, a) for b, a in zip(biases, [p for p in model.parameters() if p.ndim == 1],
                                                    strict=True))
    with pytest.raises(NotApplicableError):
        prune_magnitude(torch.jit.script(nn.LayerNorm(3)), 0.5)


def test_onnx_export_matches_torch(tmp_path: Path) -> None:
    x = blobs(300, 5, shifted=True)[0]
    model = scripted()
    outputs, diff = export_onnx(model, tmp_path / "model.onnx", x, "INPUT0", "OUTPUT0")
    assert outputs.shape == (300, 3) and diff < 1e-5
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "model.onnx"))
    assert [i.name for i in session.get_inputs()] == ["INPUT0"]
    assert [o.name for o in session.get_outputs()] == ["OUTPUT0"]
    assert session.run(None, {"INPUT0": x[:7]})[0].shape == (7, 3)  # dynamic batch


class SignDependent(nn.Module):
    """Eager control flow: a traced export bakes in the branch taken by the example batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return x * 2.0
        return x * 3.0


def test_onnx_export_that_disagrees_with_torch_is_refused(tmp_path: Path) -> None:
    x = np.full((10, 4), -10.0, dtype=np.float32)
    x[:2] = 5.0  # the export example (the first two rows) takes the other branch than the whole holdout
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RetrainError, match="ONNX outputs differ from torch's by up to"):
            export_onnx(SignDependent(), tmp_path / "model.onnx", x, "INPUT0", "OUTPUT0")


# --- each optimization gated, in full runs ------------------------------------------------------------------

def _run(tmp: Path, data: Path, **kw: Any) -> dict[str, Any]:
    store = tmp / "store"
    write_model(store / "1" / "model.pt")
    cfg = RetrainConfig(model_uri=f"file://{store}/1/model.pt", data_uri=f"file://{data}", output_uri=f"file://{store}",
                        scratch=tmp / "scratch", seed=3, threads=1, **kw)
    result: dict[str, Any] = retrain(cfg).to_json()
    return result


def test_pruning_and_quantization_are_each_gated(tmp_path: Path) -> None:
    x, y = blobs(1000, 7, shifted=True)
    data = write_npz(tmp_path / "new.npz", x, y)
    result = _run(tmp_path / "a", data, prune=0.99, quantize=True, onnx=True)
    assert result["decision"] == "Accepted", result
    optimizations = result["optimizations"]
    assert optimizations["prune"].startswith("rejected: the pruned model's accuracy 0.")
    assert optimizations["quantize"] == "kept (int8 dynamic)" and optimizations["onnx"] == "kept"
    written = tmp_path / "a" / "store" / "2"
    assert QUANTIZED_OP in str(load(written / "model.pt").inlined_graph)
    manifest = json.loads((written / "manifest.json").read_text())
    assert manifest["optimizations"] == optimizations
    assert manifest["onnx"]["exportedFrom"] == "the float model of which model.pt is the int8 quantization"
    assert result["reasons"][1:] == ["kept: torchscript, onnx, quantize", "dropped: prune rejected"]

    result = _run(tmp_path / "b", data, prune=0.3, max_optimization_loss=0.0, onnx=False)
    assert result["decision"] == "Accepted"
    weights = [p for p in load(tmp_path / "b" / "store" / "2" / "model.pt").parameters() if p.ndim == 2]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert result["optimizations"]["prune"] == "kept (sparsity 0.299)" and zeros == pytest.approx(0.3, abs=0.01)
    assert result["candidate"]["accuracy"] >= result["finetuned"]["accuracy"]

    result = _run(tmp_path / "c", data, prune=0.6, max_optimization_loss=0.02)  # passes the gate, costs too much
    assert re.fullmatch(r"rejected: the pruned model loses 0\.\d{4} of accuracy against the fine-tuned model "
                        r"\(--max-optimization-loss 0\.02\)", result["optimizations"]["prune"])
    assert result["candidate"] == result["finetuned"]


class Wide(nn.Module):
    """A regression layer whose one huge (unused) weight sets the int8 scale: quantized, the others round to 0."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 1)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1e4, 0.5, -0.7, 0.3]]))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc(x)
        return out


def test_quantization_that_costs_too_much_is_dropped(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 4)).astype(np.float32)
    x[:, 0] = 0.0
    y = (x @ np.array([0.0, 0.5, -0.7, 0.3], dtype=np.float32)).astype(np.float32)
    store = tmp_path / "store"
    (store / "1").mkdir(parents=True)
    torch.jit.script(Wide()).save(str(store / "1" / "model.pt"))  # type: ignore[no-untyped-call]
    data = write_npz(tmp_path / "d.npz", x, y)
    cfg = RetrainConfig(model_uri=f"file://{store}/1/model.pt", data_uri=f"file://{data}", output_uri=f"file://{store}",
                        task="regression", lr=1e-5, epochs=2, min_improvement=-0.01, quantize=True,
                        scratch=tmp_path / "scratch", threads=1)
    result = retrain(cfg).to_json()
    assert result["decision"] == "Accepted", result
    assert result["optimizations"]["quantize"].startswith("rejected: the quantized model's mse ")
    assert result["candidate"] == result["finetuned"] and result["candidate"]["mse"] < 0.01
    assert QUANTIZED_OP not in str(load(store / "2" / "model.pt").inlined_graph)


def test_model_class_names_a_factory() -> None:
    factory = model_factory("tests.runtime.test_retrain_data:example_classifier")
    assert factory is example_classifier and model_factory(None) is None
    for spec, message in (("nocolon", "expected module:Name"), ("no_such_module_xyz:A", "cannot import"),
                          ("tests.runtime.test_retrain_data:ROOT", "not a class or factory")):
        with pytest.raises(RetrainError, match=message):
            model_factory(spec)


def test_model_class_trains_eagerly_and_quantizes(tmp_path: Path) -> None:
    x, y = blobs(800, 7, shifted=True)
    result = _run(tmp_path, write_npz(tmp_path / "new.npz", x, y), model_class=example_classifier, quantize=True,
                  onnx=True)
    assert result["decision"] == "Accepted" and result["optimizations"]["quantize"] == "kept (int8 dynamic)"
    model = load(tmp_path / "store" / "2" / "model.pt")
    assert QUANTIZED_OP in str(model.inlined_graph)
    assert float((predict(model, x).argmax(1) == y).mean()) > 0.85
    bad = _run(tmp_path / "bad", write_npz(tmp_path / "new.npz", x, y), model_class=MatmulOnly)
    assert bad["decision"] == "Failed" and "does not match the model's state dict" in bad["reasons"][0]
