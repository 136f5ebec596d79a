"""tritonops' Triton Python-backend wrapper: serves a TorchScript or ONNX file with torch / onnxruntime.

The fetcher copies this file to ``<repo>/<model>/<version>/model.py`` for ``backend: PythonWrapper``; the
rendered ``config.pbtxt`` names the format and file in the ``tritonops.format`` / ``tritonops.model_file``
parameters. Inputs are given to the model in config order (TorchScript: positional arguments; ONNX: by
name when the names match the graph's, else by position); outputs are matched to the config's outputs
(a single tensor, a tuple/list in order, or a dict by name) and cast to their configured data types.

With ``max_batch_size > 0`` the requests of one ``execute`` call (dynamic batching) are concatenated along
the batch dimension, run once and split back; requests whose non-batch shapes differ run one by one.

Tensors cross the stub through DLPack (``np.from_dlpack(tensor)`` in, ``pb_utils.Tensor.from_dlpack`` out),
not ``as_numpy()`` / ``pb_utils.Tensor(name, array)``: those go through the numpy C ABI of the pybind11 the
stub was built with, and a stub built for numpy 1 that imports numpy 2 misreads the item size of numpy 2's
dtypes (as 0 for FP32 in Triton 2.51's stub): inputs arrive as their first element repeated, outputs leave
empty (HTTP 200 with no data, 500 in JSON) and Triton counts them as successes. DLPack works alike with
numpy >= 1.23 and < 3 (runtime/pyproject.toml's ``serve`` extra; tests/runtime/test_wrapper_numpy2.py
serves through it under numpy 1 and 2). What DLPack cannot carry still takes the numpy path, correct under
numpy 1 only: TYPE_STRING (numpy objects; ``render_config`` refuses it for this backend anyway) and, under
numpy < 1.25, TYPE_BOOL.

``KIND_GPU`` instances run on ``cuda:<device>`` / onnxruntime's CUDA execution provider. When torch has no
CUDA device or onnxruntime no working CUDA provider, ``initialize`` raises (Triton reports the load failure)
unless the config's ``tritonops.allow_cpu_fallback`` parameter is ``"true"``; then it logs a warning and
serves on the CPU.

It runs inside Triton's Python-backend stub, so it imports only numpy, torch or onnxruntime and
``triton_python_backend_utils`` (never the tritonops packages).
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import triton_python_backend_utils as pb_utils

Array = npt.NDArray[Any]
Runner = Callable[[list[Array]], list[Array]]
# Mirror contract.WRAPPER_PARAM_FORMAT/_FILE and pbtxt.WRAPPER_PARAM_ALLOW_CPU_FALLBACK: this file runs in
# Triton's stub, where tritonops_runtime is not installed; tests/runtime/test_triton.py serves ONNX through it
# and tests/runtime/test_wrapper_fallback.py compares the names.
PARAM_FORMAT = "tritonops.format"
PARAM_FILE = "tritonops.model_file"
PARAM_ALLOW_CPU_FALLBACK = "tritonops.allow_cpu_fallback"
SPEC_ALLOW_CPU_FALLBACK = "spec.runtime.triton.allowCPUFallback"

# DLPack capsule names: a producer's unconsumed capsule, and the name a consumer gives it (the DLPack spec).
_DLTENSOR = b"dltensor"
_USED_DLTENSOR = b"used_dltensor"
_capsule_is_valid = ctypes.pythonapi.PyCapsule_IsValid
_capsule_is_valid.argtypes = [ctypes.py_object, ctypes.c_char_p]
_capsule_is_valid.restype = ctypes.c_int
_capsule_set_name = ctypes.pythonapi.PyCapsule_SetName
_capsule_set_name.argtypes = [ctypes.py_object, ctypes.c_char_p]
_capsule_set_name.restype = ctypes.c_int
_NUMPY_DLPACK_BOOL = np.lib.NumpyVersion(np.__version__) >= "1.25.0"


def _param(config: dict[str, Any], key: str, default: str) -> str:
    value: str = config.get("parameters", {}).get(key, {}).get("string_value", default)
    return value


def _log(level: str, message: str) -> None:
    """Triton's log (``pb_utils.Logger``, Triton >= 22.12), else stderr (which the stub sends to Triton's log)."""
    logger = getattr(pb_utils, "Logger", None)
    if logger is not None:
        getattr(logger, f"log_{level}")(message)
    else:
        print(f"[{level}] {message}", file=sys.stderr, flush=True)


def dlpack_carries(dtype: Any) -> bool:
    """Whether tensors of ``dtype`` cross the stub through DLPack (else through the numpy C ABI).

    Not TYPE_STRING (numpy objects: DLPack has no bytes type), nor TYPE_BOOL under numpy < 1.25 (whose DLPack
    has no bool). Both take the numpy path, which is correct under numpy 1 only.
    """
    kind = np.dtype(dtype)
    return kind != np.object_ and (kind != np.bool_ or _NUMPY_DLPACK_BOOL)


def from_triton(tensor: Any, dtype: Any) -> Array:
    """An input tensor as a numpy array (read-only: it is Triton's buffer)."""
    if not dlpack_carries(dtype):
        return np.asarray(tensor.as_numpy())
    return np.from_dlpack(tensor)


def to_triton(name: str, array: Array) -> Any:
    """``pb_utils.Tensor`` for an output array, through DLPack when it can carry the dtype."""
    if not dlpack_carries(array.dtype):
        return pb_utils.Tensor(name, array)
    # DLPack exports only C-contiguous (the stub's demand), writeable (numpy's) arrays.
    array = np.require(array, requirements=["C", "W"])
    capsule = array.__dlpack__()
    tensor = pb_utils.Tensor.from_dlpack(name, capsule)
    if not _capsule_is_valid(capsule, _DLTENSOR):
        # The stub took ownership (it calls the tensor's deleter when done) but renames the capsule
        # "used_dlpack", not the spec's "used_dltensor", so numpy's capsule destructor would treat it as
        # unconsumed: under numpy 2 it logs an ignored exception per tensor, under numpy 1.26 it wedges
        # the stub ("Stub process is not healthy"). Give it the name the spec says a consumer sets.
        _capsule_set_name(capsule, _USED_DLTENSOR)
    return tensor


def gpu_instance(args: dict[str, str]) -> int | None:
    """The GPU of a KIND_GPU instance (Triton's ``model_instance_kind`` / ``_device_id`` args), else None."""
    if args.get("model_instance_kind") != "GPU":
        return None
    return int(args.get("model_instance_device_id", 0))


def cpu_fallback(args: dict[str, str], config: dict[str, Any], problem: str, fix: str) -> None:
    """A KIND_GPU instance cannot use its GPU (``problem``): raise, or warn when the config allows the CPU."""
    instance = args.get("model_instance_name") or args.get("model_name", "?")
    head = f"tritonops wrapper: instance {instance} is KIND_GPU (GPU {gpu_instance(args)}) but {problem}"
    if _param(config, PARAM_ALLOW_CPU_FALLBACK, "false").strip().lower() != "true":
        raise RuntimeError(f"{head}. Fix: {fix}; or use instance groups of kind KIND_CPU (without any, Triton "
                           f"makes KIND_GPU instances on a node with GPUs); or set {SPEC_ALLOW_CPU_FALLBACK}: "
                           "true to serve on the CPU")
    _log("warn", f"{head}. {SPEC_ALLOW_CPU_FALLBACK} is true: SERVING ON THE CPU, NOT THE GPU. To use the GPU: "
                 f"{fix}")


def torch_device(args: dict[str, str], config: dict[str, Any]) -> str:
    """``cuda:<n>`` for a KIND_GPU instance, ``cpu`` for KIND_CPU (or an allowed CPU fallback)."""
    gpu = gpu_instance(args)
    if gpu is None:
        return "cpu"
    import torch

    if torch.cuda.is_available() and gpu < torch.cuda.device_count():
        return f"cuda:{gpu}"
    build = f"torch {torch.__version__} " + (f"(CUDA {torch.version.cuda})" if torch.version.cuda else
                                             "(a CPU-only build)")
    found = torch.cuda.device_count() if torch.cuda.is_available() else 0
    cpu_fallback(args, config, f"{build} sees {found} CUDA device(s)",
                 "serve with a CUDA build of torch (NGC's tritonserver -pyt-python-py3 image) on a node whose "
                 "GPUs the container can see")
    return "cpu"


def _torch_runner(path: str, device: str, n_outputs: int, output_names: list[str]) -> Runner:
    import torch

    module = torch.jit.load(path, map_location=device)  # type: ignore[no-untyped-call]
    module.eval()

    def run(inputs: list[Array]) -> list[Array]:
        # Triton's input buffers are read-only; torch.from_numpy wants writeable memory.
        tensors = [torch.from_numpy(np.require(x, requirements=["C", "W"])).to(device) for x in inputs]
        with torch.inference_mode():
            result = module(*tensors)
        if isinstance(result, dict):
            items = [result[name] for name in output_names]
        elif isinstance(result, tuple | list):
            items = list(result)
        else:
            items = [result]
        if len(items) < n_outputs:
            raise RuntimeError(f"model returned {len(items)} outputs, config lists {n_outputs}")
        return [t.detach().cpu().numpy() for t in items[:n_outputs]]

    return run


_CUDA_EP = "CUDAExecutionProvider"
_ORT_FIX = ("install onnxruntime-gpu (not onnxruntime) with the CUDA and cuDNN libraries it needs in the "
            "Python environment of Triton's Python backend")


def _onnx_runner(path: str, args: dict[str, str], config: dict[str, Any], input_names: list[str],
                 output_names: list[str]) -> tuple[Runner, str]:
    import onnxruntime as ort

    gpu = gpu_instance(args)
    available = ort.get_available_providers()
    if gpu is not None and _CUDA_EP not in available:
        cpu_fallback(args, config, f"onnxruntime {ort.__version__} has no {_CUDA_EP} (it has "
                     f"{', '.join(available)})", _ORT_FIX)
        gpu = None
    providers: list[Any] = ["CPUExecutionProvider"]
    if gpu is not None:
        providers.insert(0, (_CUDA_EP, {"device_id": gpu}))
    session = ort.InferenceSession(path, providers=providers)
    if gpu is not None and _CUDA_EP not in session.get_providers():
        # onnxruntime-gpu without loadable CUDA/cuDNN libraries logs an error and quietly uses the CPU.
        cpu_fallback(args, config, f"onnxruntime {ort.__version__} could not start its {_CUDA_EP} (its error "
                     "is in the log above)", _ORT_FIX)
        gpu = None
    graph_in = [i.name for i in session.get_inputs()]
    graph_out = [o.name for o in session.get_outputs()]
    feed_names = input_names if set(input_names) == set(graph_in) else graph_in[: len(input_names)]
    fetch_names = output_names if set(output_names) <= set(graph_out) else graph_out[: len(output_names)]

    def run(inputs: list[Array]) -> list[Array]:
        outs = session.run(fetch_names, dict(zip(feed_names, inputs, strict=True)))
        return [np.asarray(o) for o in outs]

    return run, "cpu" if gpu is None else f"{_CUDA_EP} device {gpu}"


class TritonPythonModel:
    """The Python-backend entry points: initialize, execute, finalize."""

    def initialize(self, args: dict[str, str]) -> None:
        """Load the model file of this version with torch or onnxruntime."""
        config = json.loads(args["model_config"])
        self.max_batch = int(config.get("max_batch_size", 0))
        self.inputs = [i["name"] for i in config.get("input", [])]
        self.outputs = [(o["name"], pb_utils.triton_string_to_numpy(o["data_type"])) for o in config.get("output", [])]
        self.input_types = [pb_utils.triton_string_to_numpy(i["data_type"]) for i in config.get("input", [])]
        fmt = _param(config, PARAM_FORMAT, "torchscript")
        path = os.path.join(args["model_repository"], args["model_version"],
                            _param(config, PARAM_FILE, "model.onnx" if fmt == "onnx" else "model.pt"))
        if not os.path.isfile(path):
            raise FileNotFoundError(f"tritonops wrapper: model file {path} not found")
        names = [name for name, _ in self.outputs]
        if fmt == "torchscript":
            device = torch_device(args, config)
            self.run = _torch_runner(path, device, len(self.outputs), names)
        elif fmt == "onnx":
            self.run, device = _onnx_runner(path, args, config, self.inputs, names)
        else:
            raise ValueError(f"tritonops wrapper: unsupported format {fmt!r} (torchscript or onnx)")
        _log("info", f"tritonops wrapper: instance {args.get('model_instance_name', '?')} serves {path} ({fmt}) "
                     f"on {device} with numpy {np.__version__}")

    def _arrays(self, request: Any) -> list[Array]:
        arrays = []
        for name, dtype in zip(self.inputs, self.input_types, strict=True):
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise ValueError(f"missing input {name}")
            arrays.append(from_triton(tensor, dtype).astype(dtype, copy=False))
        return arrays

    def _response(self, outputs: Sequence[Array]) -> Any:
        tensors = [to_triton(name, out.astype(dtype, copy=False))
                   for (name, dtype), out in zip(self.outputs, outputs, strict=True)]
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def _batched(self, batches: list[list[Array]]) -> list[Any]:
        sizes = [b[0].shape[0] for b in batches]
        joined = [np.concatenate([b[i] for b in batches]) for i in range(len(self.inputs))]
        outputs = self.run(joined)
        bounds = np.cumsum([0, *sizes])
        return [self._response([o[bounds[k]:bounds[k + 1]] for o in outputs]) for k in range(len(batches))]

    def execute(self, requests: list[Any]) -> list[Any]:
        """One response per request; a failing request gets an error response, the others still run."""
        parsed: list[list[Array] | Exception] = []
        for request in requests:
            try:
                parsed.append(self._arrays(request))
            except Exception as err:  # reported to the client as the request's error
                parsed.append(err)
        good = [p for p in parsed if not isinstance(p, Exception)]
        if self.max_batch > 0 and len(good) > 1 and len(good) == len(parsed) and _same_shapes(good):
            try:
                return self._batched(good)
            except Exception:  # fall back to one run per request, which reports errors
                pass
        return [self._one(p) for p in parsed]

    def _one(self, arrays: list[Array] | Exception) -> Any:
        if isinstance(arrays, Exception):
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(arrays)))
        try:
            return self._response(self.run(arrays))
        except Exception as err:  # reported to the client as the request's error
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{type(err).__name__}: {err}"))

    def finalize(self) -> None:
        """Drop the model."""
        self.run = _unloaded


def _unloaded(_inputs: list[Array]) -> list[Array]:
    raise RuntimeError("model unloaded")


def _same_shapes(batches: list[list[Array]]) -> bool:
    return all([a.shape[1:] for a in b] == [a.shape[1:] for a in batches[0]] for b in batches)
