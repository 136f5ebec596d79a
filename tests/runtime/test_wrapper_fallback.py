"""KIND_GPU instances of the PythonWrapper never fall back to the CPU silently.

Triton refuses KIND_GPU instance groups on a host without GPUs ("instance group ... has kind KIND_GPU but no
GPUs are available") before the Python backend starts, so these tests call the wrapper's ``initialize``
in-process, with the arguments Triton gives a KIND_GPU instance and the model config Triton derives from the
rendered ``config.pbtxt`` (parsed with Triton's own ModelConfig proto). torch and onnxruntime are the real,
CUDA-less ones of this machine: the load must fail naming the instance kind, what is missing and the fix,
unless ``spec.runtime.triton.allowCPUFallback`` renders ``tritonops.allow_cpu_fallback: "true"``, in which
case it warns in Triton's log and serves correct values on the CPU.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import types
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from tests.conftest import ExampleModel
from tests.runtime.cases import IO
from tritonops_runtime import contract as c
from tritonops_runtime import pbtxt
from tritonops_runtime.pbtxt import ConfigError, render_config

WRAPPER = Path(pbtxt.__file__).parent / "backend" / "model.py"
GPU_WRAPPER = {"backend": "PythonWrapper", "maxBatchSize": 8, "instanceGroups": [{"kind": "KIND_GPU", "count": 1}]}
HAS_CUDA = torch.cuda.is_available() or "CUDAExecutionProvider" in ort.get_available_providers()
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch and onnxruntime without CUDA: this machine's as they are, a GPU host's with CUDA hidden."""
    if HAS_CUDA:
        providers = [p for p in ort.get_available_providers() if p != "CUDAExecutionProvider"]
        monkeypatch.setattr(ort, "get_available_providers", lambda: providers)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


class Logger:
    """Stands in for ``pb_utils.Logger`` (the stub's, which writes to Triton's log)."""

    lines: list[tuple[str, str]] = []

    @classmethod
    def log_info(cls, message: str) -> None:
        cls.lines.append(("info", message))

    @classmethod
    def log_warn(cls, message: str) -> None:
        cls.lines.append(("warn", message))


def load_wrapper(monkeypatch: pytest.MonkeyPatch, logger: bool = True) -> Any:
    """Import backend/model.py as the stub does, with a ``triton_python_backend_utils`` holding what it uses."""
    utils = types.ModuleType("triton_python_backend_utils")
    types_ = {"TYPE_BOOL": bool, "TYPE_INT64": np.int64, "TYPE_FP16": np.float16, "TYPE_FP32": np.float32}
    utils.triton_string_to_numpy = types_.__getitem__  # type: ignore[attr-defined]
    if logger:
        Logger.lines = []
        utils.Logger = Logger  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", utils)
    spec = importlib.util.spec_from_file_location("tritonops_wrapper_under_test", WRAPPER)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def triton_args(tmp: Path, example: ExampleModel, fmt: str, triton: dict[str, Any],
                kind: str = "GPU") -> dict[str, str]:
    """What Triton passes to ``initialize``: model_config is the rendered config.pbtxt as Triton's JSON."""
    source = example.onnx if fmt == "onnx" else example.torchscript
    assert source is not None, example.summary.get("onnxError")
    version = tmp / "clf" / "1"
    version.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, version / c.MODEL_FILES[fmt])
    text = render_config({"name": "clf", "format": fmt, "version": 1, **IO}, triton)
    config = json_format.MessageToDict(text_format.Parse(text, model_config_pb2.ModelConfig()),
                                       preserving_proto_field_name=True)
    return {"model_config": json.dumps(config), "model_instance_kind": kind, "model_instance_name": "clf_0_0",
            "model_instance_device_id": "0", "model_repository": str(tmp / "clf"), "model_version": "1",
            "model_name": "clf"}


def reference(example: ExampleModel, fmt: str, x: np.ndarray) -> np.ndarray:
    """The example model run directly by torch / onnxruntime."""
    if fmt == "onnx":
        session = ort.InferenceSession(str(example.onnx), providers=["CPUExecutionProvider"])
        out: np.ndarray = session.run(None, {session.get_inputs()[0].name: x})[0]
        return out
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        out = torch.jit.load(str(example.torchscript))(torch.from_numpy(x.copy())).numpy()
    return out


# -- rendering ---------------------------------------------------------------------------------------------


def test_allow_cpu_fallback_renders_the_wrapper_parameter() -> None:
    model = {"name": "m", "format": "onnx", **IO}
    text = render_config(model, {**GPU_WRAPPER, "allowCPUFallback": True})
    assert 'key: "tritonops.allow_cpu_fallback"\n  value: { string_value: "true" }' in text
    for off in ({}, {"allowCPUFallback": False}):
        assert "allow_cpu_fallback" not in render_config(model, {**GPU_WRAPPER, **off})


def test_allow_cpu_fallback_is_for_the_wrapper_only() -> None:
    with pytest.raises(ConfigError) as info:
        render_config({"name": "m", "format": "onnx", **IO}, {"allowCPUFallback": True})
    assert info.value.field_path == "spec.runtime.triton.allowCPUFallback"
    assert "PythonWrapper" in info.value.message


def test_allow_cpu_fallback_parameter_is_reserved() -> None:
    triton = {**GPU_WRAPPER, "parameters": {"tritonops.allow_cpu_fallback": "true"}}
    with pytest.raises(ConfigError) as info:
        render_config({"name": "m", "format": "onnx", **IO}, triton)
    assert info.value.field_path == "spec.runtime.triton.parameters"
    assert "allowCPUFallback" in info.value.message


def test_wrapper_reads_the_parameters_render_config_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    wrapper = load_wrapper(monkeypatch)
    assert wrapper.PARAM_ALLOW_CPU_FALLBACK == pbtxt.WRAPPER_PARAM_ALLOW_CPU_FALLBACK
    assert (wrapper.PARAM_FORMAT, wrapper.PARAM_FILE) == (c.WRAPPER_PARAM_FORMAT, c.WRAPPER_PARAM_FILE)


# -- the wrapper's decision --------------------------------------------------------------------------------


@pytest.mark.usefixtures("no_cuda")
@pytest.mark.parametrize(("fmt", "missing", "fix"), [
    ("onnx", "has no CUDAExecutionProvider", "install onnxruntime-gpu"),
    ("torchscript", "sees 0 CUDA device(s)", "CUDA build of torch"),
])
def test_gpu_instance_without_cuda_fails_the_load(tmp_path: Path, example_model: ExampleModel,
                                                  monkeypatch: pytest.MonkeyPatch, fmt: str, missing: str,
                                                  fix: str) -> None:
    wrapper = load_wrapper(monkeypatch)
    with pytest.raises(RuntimeError) as info:
        wrapper.TritonPythonModel().initialize(triton_args(tmp_path, example_model, fmt, GPU_WRAPPER))
    message = str(info.value)
    assert "instance clf_0_0 is KIND_GPU (GPU 0)" in message
    assert missing in message and fix in message
    assert "KIND_CPU" in message and "spec.runtime.triton.allowCPUFallback: true" in message
    assert not Logger.lines  # nothing loaded, nothing logged as served


@pytest.mark.usefixtures("no_cuda")
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_allowed_fallback_warns_and_serves_on_the_cpu(tmp_path: Path, example_model: ExampleModel,
                                                      monkeypatch: pytest.MonkeyPatch, fmt: str) -> None:
    wrapper = load_wrapper(monkeypatch)
    model = wrapper.TritonPythonModel()
    model.initialize(triton_args(tmp_path, example_model, fmt, {**GPU_WRAPPER, "allowCPUFallback": True}))
    (warn,) = [m for level, m in Logger.lines if level == "warn"]
    assert "instance clf_0_0 is KIND_GPU (GPU 0)" in warn and "allowCPUFallback is true: SERVING ON THE CPU" in warn
    assert any(level == "info" and " on cpu with numpy " in m for level, m in Logger.lines)
    x = np.asarray(example_model.sample_inputs, dtype=np.float32)
    x.setflags(write=False)  # as Triton's input buffers arrive
    np.testing.assert_allclose(model.run([x])[0], reference(example_model, fmt, x), rtol=1e-5, atol=1e-6)


@pytest.mark.usefixtures("no_cuda")
def test_fallback_warning_goes_to_stderr_without_a_logger(tmp_path: Path, example_model: ExampleModel,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    wrapper = load_wrapper(monkeypatch, logger=False)
    wrapper.TritonPythonModel().initialize(
        triton_args(tmp_path, example_model, "onnx", {**GPU_WRAPPER, "allowCPUFallback": True}))
    err = capsys.readouterr().err
    assert "[warn] tritonops wrapper: instance clf_0_0 is KIND_GPU" in err and "SERVING ON THE CPU" in err


@pytest.mark.skipif(HAS_CUDA, reason="here onnxruntime's CUDA provider would start")
def test_cuda_provider_that_does_not_start_is_not_a_silent_cpu(tmp_path: Path, example_model: ExampleModel,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """onnxruntime-gpu whose CUDA libraries do not load lists the provider but builds a CPU-only session."""
    available: Callable[[], list[str]] = ort.get_available_providers
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", *available()])
    wrapper = load_wrapper(monkeypatch)
    with pytest.raises(RuntimeError) as info, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # onnxruntime: "Specified provider ... is not available"
        wrapper.TritonPythonModel().initialize(triton_args(tmp_path, example_model, "onnx", GPU_WRAPPER))
    assert "could not start its CUDAExecutionProvider" in str(info.value)
    assert "allowCPUFallback" in str(info.value)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_cpu_instances_need_no_fallback(tmp_path: Path, example_model: ExampleModel,
                                        monkeypatch: pytest.MonkeyPatch, fmt: str) -> None:
    wrapper = load_wrapper(monkeypatch)
    cpu = {**GPU_WRAPPER, "instanceGroups": [{"kind": "KIND_CPU", "count": 1}]}
    wrapper.TritonPythonModel().initialize(triton_args(tmp_path, example_model, fmt, cpu, kind="CPU"))
    assert [level for level, _ in Logger.lines] == ["info"]
