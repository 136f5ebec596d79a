"""tritonops' Triton Python-backend wrapper: serves a TorchScript or ONNX file with torch / onnxruntime.

The fetcher copies this file to ``<repo>/<model>/<version>/model.py`` for ``backend: PythonWrapper``; the
rendered ``config.pbtxt`` names the format and file in the ``tritonops.format`` / ``tritonops.model_file``
parameters. Inputs are given to the model in config order (TorchScript: positional arguments; ONNX: by
name when the names match the graph's, else by position); outputs are matched to the config's outputs
(a single tensor, a tuple/list in order, or a dict by name) and cast to their configured data types.

With ``max_batch_size > 0`` the requests of one ``execute`` call (dynamic batching) are concatenated along
the batch dimension, run once and split back; requests whose non-batch shapes differ run one by one.
``KIND_GPU`` instances use ``cuda:<device>`` / the CUDA execution provider when available, else the CPU.

It runs inside Triton's Python-backend stub, so it imports only numpy, torch or onnxruntime and
``triton_python_backend_utils`` (never the tritonops packages).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import triton_python_backend_utils as pb_utils

Array = npt.NDArray[Any]
Runner = Callable[[list[Array]], list[Array]]
# Mirror contract.WRAPPER_PARAM_FORMAT/_FILE: this file runs in Triton's stub, where tritonops_runtime is not
# installed; tests/runtime/test_triton.py serves ONNX through it, which fails if the names drift apart.
PARAM_FORMAT = "tritonops.format"
PARAM_FILE = "tritonops.model_file"


def _param(config: dict[str, Any], key: str, default: str) -> str:
    value: str = config.get("parameters", {}).get(key, {}).get("string_value", default)
    return value


def _torch_runner(path: str, device: str, n_outputs: int, output_names: list[str]) -> Runner:
    import torch

    module = torch.jit.load(path, map_location=device)  # type: ignore[no-untyped-call]
    module.eval()

    def run(inputs: list[Array]) -> list[Array]:
        with torch.inference_mode():
            result = module(*[torch.from_numpy(np.ascontiguousarray(x)).to(device) for x in inputs])
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


def _onnx_runner(path: str, gpu: int | None, input_names: list[str], output_names: list[str]) -> Runner:
    import onnxruntime as ort

    providers: list[Any] = ["CPUExecutionProvider"]
    if gpu is not None and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": gpu}))
    session = ort.InferenceSession(path, providers=providers)
    graph_in = [i.name for i in session.get_inputs()]
    graph_out = [o.name for o in session.get_outputs()]
    feed_names = input_names if set(input_names) == set(graph_in) else graph_in[: len(input_names)]
    fetch_names = output_names if set(output_names) <= set(graph_out) else graph_out[: len(output_names)]

    def run(inputs: list[Array]) -> list[Array]:
        outs = session.run(fetch_names, dict(zip(feed_names, inputs, strict=True)))
        return [np.asarray(o) for o in outs]

    return run


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
        gpu = int(args.get("model_instance_device_id", 0)) if args.get("model_instance_kind") == "GPU" else None
        names = [name for name, _ in self.outputs]
        if fmt == "torchscript":
            self.run = _torch_runner(path, _torch_device(gpu), len(self.outputs), names)
        elif fmt == "onnx":
            self.run = _onnx_runner(path, gpu, self.inputs, names)
        else:
            raise ValueError(f"tritonops wrapper: unsupported format {fmt!r} (torchscript or onnx)")

    def _arrays(self, request: Any) -> list[Array]:
        arrays = []
        for name, dtype in zip(self.inputs, self.input_types, strict=True):
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise ValueError(f"missing input {name}")
            arrays.append(tensor.as_numpy().astype(dtype, copy=False))
        return arrays

    def _response(self, outputs: Sequence[Array]) -> Any:
        tensors = [pb_utils.Tensor(name, np.ascontiguousarray(out.astype(dtype, copy=False)))
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


def _torch_device(gpu: int | None) -> str:
    if gpu is None:
        return "cpu"
    import torch

    return f"cuda:{gpu}" if torch.cuda.is_available() else "cpu"
