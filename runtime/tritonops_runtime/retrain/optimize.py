"""Exports and optional optimizations of the accepted candidate. Each one is checked, and the pipeline
(:mod:`.pipeline`) keeps it only if it passes the same gate as the candidate.

- **TorchScript** (``model.pt``, always): a ScriptModule is saved as is; an eager model (``--model-class``) is
  scripted with ``torch.jit.script`` (``torch.jit.trace`` on the holdout inputs when scripting fails). The file
  is loaded back and its outputs must equal the in-memory model's on the holdout (rtol 1e-5, atol 1e-6).
- **ONNX** (``model.onnx``, ``--onnx``): ``torch.onnx.export`` with the TorchScript-based exporter
  (``dynamo=False``; it takes ScriptModules), opset 17, a dynamic batch axis, the configured input/output
  names; ``onnx.checker`` validates the file, and onnxruntime's outputs on the holdout must match torch's
  (``|ort - torch| <= 1e-5 + 1e-3 |torch|`` everywhere). It is exported from the float model that is written
  (pruned when pruning was kept), never from the int8 one: the ONNX exporter has no mapping for
  ``quantized::linear_dynamic`` (``UnsupportedOperatorError``), so with ``--quantize`` kept, ``model.onnx`` is the
  float counterpart of the int8 ``model.pt`` (the manifest says so).
- **Magnitude pruning** (``--prune AMOUNT``): the fraction ``AMOUNT`` of weights with the smallest ``|w|``,
  counted over all weight tensors of two or more dimensions together (global, unstructured; biases and norm
  scales are left alone), is set to zero in place; ties at the threshold are zeroed too. This is manual
  zeroing on purpose: ``torch.nn.utils.prune`` cannot act on a ScriptModule (its reparametrisation assigns a
  plain tensor to ``weight_orig``: ``TypeError: cannot assign 'torch.FloatTensor' object to parameter``), and the
  zeros it would leave behind are the same. The file keeps dense tensors: pruning alone does not shrink it.
- **int8 dynamic quantization** (``--quantize``): ``torch.ao.quantization.quantize_dynamic`` does NOT apply to a
  ScriptModule: it swaps ``nn.Linear`` submodules by type, and a loaded TorchScript module's children are all
  ``RecursiveScriptModule``, so it returns an unchanged copy, silently (outputs bit-identical, no quantized op in
  the graph; tested). Two routes that work:

  * a ScriptModule: graph-mode ``torch.ao.quantization.quantize_dynamic_jit(model, {"": default_dynamic_qconfig})``,
    which rewrites every ``aten::linear`` of the inlined graph into ``quantized::linear_dynamic`` (int8 weights,
    activations quantized per batch at run time);
  * an eager model (``--model-class``): ``quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)``, then scripted.

  Either way the result must contain at least one quantized op, or the step is reported as not applicable.
  Limits: only ``nn.Linear``/``aten::linear`` are quantized (convolutions are not dynamically quantizable);
  ``quantized::linear_dynamic`` has CPU kernels only (fbgemm/x86, qnnpack/ARM): an int8 ``model.pt`` cannot be
  served on a GPU instance group. torch prints a deprecation warning for quantized tensors (torch.ao
  quantization is slated for removal in favour of torchao).
"""

from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from tritonops_runtime.retrain.config import RetrainError
from tritonops_runtime.retrain.train import predict

ONNX_OPSET = 17
ONNX_RTOL, ONNX_ATOL = 1e-3, 1e-5
QUANTIZED_OP = "quantized::linear_dynamic"


class NotApplicableError(RetrainError):
    """An optimization that has nothing to act on in this model."""


def clone(model: nn.Module) -> nn.Module:
    """An independent copy whose parameters are leaves (trainable).

    ``copy.deepcopy`` of a ScriptModule gives parameters that are *not* leaf tensors (they come out of a
    ``CloneBackward`` node, so an optimizer refuses them: "can't optimize a non-leaf Tensor"); a ScriptModule is
    copied by a save/load round trip through memory instead.
    """
    if not is_scripted(model):
        return copy.deepcopy(model)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(model, buffer)
        buffer.seek(0)
        copied: nn.Module = torch.jit.load(buffer, map_location="cpu")  # type: ignore[no-untyped-call]
    return copied.eval() if not model.training else copied


def is_scripted(model: nn.Module) -> bool:
    """Whether ``model`` is a TorchScript module."""
    return isinstance(model, torch.jit.ScriptModule)


def prune_magnitude(model: nn.Module, amount: float) -> float:
    """Zero the ``amount`` fraction of smallest-magnitude weights (global, tensors of >= 2 dims) in place.

    Returns the fraction of those weights that is zero afterwards.
    """
    weights = [p for p in model.parameters() if p.ndim >= 2]
    if not weights:
        raise NotApplicableError("no weight matrices to prune")
    magnitudes = torch.cat([w.detach().abs().flatten() for w in weights])
    k = round(amount * magnitudes.numel())
    with torch.no_grad():
        if k > 0:
            threshold = magnitudes.kthvalue(k).values
            for w in weights:
                w.mul_((w.abs() > threshold).to(w.dtype))
    zeros = sum(int((w == 0).sum()) for w in weights)
    return zeros / magnitudes.numel()


def _quantized_ops(model: nn.Module) -> int:
    if is_scripted(model):
        return str(model.inlined_graph).count(QUANTIZED_OP)
    dynamic_linear = torch.ao.nn.quantized.dynamic.Linear
    return sum(isinstance(m, dynamic_linear) for m in model.modules())


def quantize_int8(model: nn.Module) -> nn.Module:
    """A dynamically int8-quantized copy of ``model`` (see the module docstring for the two routes)."""
    from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic, quantize_dynamic_jit

    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization deprecation notices
        if is_scripted(model):
            quantized: nn.Module = quantize_dynamic_jit(  # type: ignore[no-untyped-call]
                model, {"": default_dynamic_qconfig})
        else:
            quantized = quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)  # type: ignore[no-untyped-call]
    if _quantized_ops(quantized) == 0:
        raise NotApplicableError("no nn.Linear layer to quantize")
    return quantized.eval()


def to_torchscript(model: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """``model`` as TorchScript: itself if scripted, else ``torch.jit.script`` (``trace`` when that fails)."""
    if is_scripted(model):
        return model  # type: ignore[return-value]  # mypy sees nn.Module; checked just above
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return torch.jit.script(model)
        except Exception:  # unscriptable Python: fall back to tracing the holdout's shape
            traced: torch.jit.ScriptModule = torch.jit.trace(model, example)  # type: ignore[no-untyped-call]
            return traced


def save_torchscript(model: nn.Module, path: Path, inputs: npt.NDArray[np.float32]) -> None:
    """Write ``model`` as TorchScript to ``path``, load it back and check it gives the same outputs."""
    example = torch.from_numpy(np.ascontiguousarray(inputs[:2]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            scripted = to_torchscript(model, example)
            torch.jit.save(scripted, str(path))
            reloaded: nn.Module = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
        except Exception as err:  # torch raises many types here
            raise RetrainError(f"TorchScript export failed: {type(err).__name__}: "
                               f"{' '.join(str(err).split())[:300]}") from None
    expected, found = predict(model, inputs), predict(reloaded, inputs)
    if expected.shape != found.shape or not np.allclose(found, expected, rtol=1e-5, atol=1e-6, equal_nan=True):
        raise RetrainError("the saved TorchScript model does not reproduce the trained model's outputs")


def _onnx_session_outputs(path: Path, inputs: npt.NDArray[np.float32], input_name: str) -> npt.NDArray[np.float32]:
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    result = session.run(None, {input_name: np.ascontiguousarray(inputs)})
    return np.asarray(result[0], dtype=np.float32)


def export_onnx(model: nn.Module, path: Path, inputs: npt.NDArray[np.float32], input_name: str,
                output_name: str) -> tuple[npt.NDArray[np.float32], float]:
    """Export ``model`` to ONNX at ``path`` and check onnxruntime against torch on ``inputs``.

    Returns onnxruntime's outputs on ``inputs`` and the largest absolute difference from torch's.
    """
    example = (torch.from_numpy(np.ascontiguousarray(inputs[:2])),)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation notice
            torch.onnx.export(model, example, str(path), input_names=[input_name], output_names=[output_name],
                              opset_version=ONNX_OPSET, dynamo=False,
                              dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}})
        found = _onnx_session_outputs(path, inputs, input_name)
    except Exception as err:  # exporter, checker and onnxruntime raise many types
        raise RetrainError(f"ONNX export failed: {type(err).__name__}: {' '.join(str(err).split())[:300]}") from None
    expected = predict(model, inputs)
    if found.shape != expected.shape:
        raise RetrainError(f"ONNX output shape {found.shape} differs from torch's {expected.shape}")
    diff = float(np.max(np.abs(found - expected))) if found.size else 0.0
    if not np.allclose(found, expected, rtol=ONNX_RTOL, atol=ONNX_ATOL):
        raise RetrainError(f"ONNX outputs differ from torch's by up to {diff:.3g} "
                           f"(allowed {ONNX_ATOL:g} + {ONNX_RTOL:g}*|torch|)")
    return found, diff
