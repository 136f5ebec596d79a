"""Render Triton's ``config.pbtxt`` (ModelConfig text proto) from the ``ModelDeployment`` spec.

:func:`render_config` is pure and deterministic: the same spec always gives the same bytes (the operator
hashes the result into the revision). Combinations Triton cannot take raise :class:`ConfigError`, which
names the spec field and the fix; the operator reports it as ``InvalidSpec``.

The ``PythonWrapper`` backend serves TorchScript/ONNX files with Triton's Python backend and our wrapper
``model.py`` (:mod:`tritonops_runtime.backend.model`); the rendered config tells the wrapper which format
and file to load through the ``tritonops.format`` / ``tritonops.model_file`` parameters, and
``tritonops.allow_cpu_fallback: "true"`` (from ``spec.runtime.triton.allowCPUFallback``) lets its ``KIND_GPU``
instances serve on the CPU, with a warning, when torch/onnxruntime cannot use the GPU (else the load fails).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tritonops_runtime import contract as c

DATA_TYPES = frozenset({
    "TYPE_BOOL", "TYPE_UINT8", "TYPE_UINT16", "TYPE_UINT32", "TYPE_UINT64", "TYPE_INT8", "TYPE_INT16",
    "TYPE_INT32", "TYPE_INT64", "TYPE_FP16", "TYPE_FP32", "TYPE_FP64", "TYPE_STRING", "TYPE_BF16",
})
# Types the wrapper cannot hand to torch/onnxruntime through numpy.
WRAPPER_UNSUPPORTED_TYPES = frozenset({"TYPE_STRING", "TYPE_BF16"})
INSTANCE_KINDS = frozenset({"KIND_GPU", "KIND_CPU"})
# Native backends that cannot derive inputs/outputs from the model file (Triton's auto-complete).
NEEDS_IO = frozenset({"torchscript"})
# The wrapper's switch for spec.runtime.triton.allowCPUFallback (mirrored in backend/model.py).
WRAPPER_PARAM_ALLOW_CPU_FALLBACK = "tritonops.allow_cpu_fallback"
_RESERVED_PARAMS = (c.WRAPPER_PARAM_FORMAT, c.WRAPPER_PARAM_FILE, WRAPPER_PARAM_ALLOW_CPU_FALLBACK)


class ConfigError(ValueError):
    """A spec Triton cannot serve; ``field_path`` names the spec field, the message says the fix."""

    def __init__(self, field_path: str, message: str) -> None:
        super().__init__(f"{field_path}: {message}")
        self.field_path = field_path
        self.message = message


def quote(text: str) -> str:
    """A protobuf text-format string literal (C-style escapes, non-ASCII as UTF-8 octal bytes)."""
    out = []
    for byte in text.encode("utf-8"):
        ch = chr(byte)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif 0x20 <= byte < 0x7F:
            out.append(ch)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def _int_list(values: Sequence[int]) -> str:
    return "[ " + ", ".join(str(int(v)) for v in values) + " ]" if values else "[ ]"


def _tensors(kind: str, tensors: Sequence[Mapping[str, Any]], wrapper: bool) -> list[str]:
    field = f"spec.model.{kind}s"
    blocks = []
    for i, tensor in enumerate(tensors):
        dtype = tensor.get("dataType", "")
        if dtype not in DATA_TYPES:
            raise ConfigError(f"{field}[{i}].dataType", f"unknown data type {dtype!r}: use one of "
                              f"{', '.join(sorted(DATA_TYPES))}")
        if wrapper and dtype in WRAPPER_UNSUPPORTED_TYPES:
            raise ConfigError(f"{field}[{i}].dataType", f"the PythonWrapper backend cannot serve {dtype} "
                              "tensors: use a numeric type or spec.runtime.triton.backend: Native")
        dims = tensor.get("dims") or []
        if not dims or any(int(d) < -1 or int(d) == 0 for d in dims):
            raise ConfigError(f"{field}[{i}].dims", "give at least one dimension, each > 0 or -1 (variable)")
        blocks.append(f"  {{\n    name: {quote(str(tensor.get('name', '')))}\n    data_type: {dtype}\n"
                      f"    dims: {_int_list(dims)}\n  }}")
    return [f"{kind} [\n" + ",\n".join(blocks) + "\n]"] if blocks else []


def _instance_groups(groups: Sequence[Mapping[str, Any]], model_format: str) -> list[str]:
    blocks = []
    for i, group in enumerate(groups):
        field = f"spec.runtime.triton.instanceGroups[{i}]"
        kind = group.get("kind", "")
        if kind not in INSTANCE_KINDS:
            raise ConfigError(f"{field}.kind", f"unknown kind {kind!r}: use KIND_GPU or KIND_CPU")
        if kind == "KIND_CPU" and group.get("gpus"):
            raise ConfigError(f"{field}.gpus", "gpus applies only to KIND_GPU: remove gpus or set kind: KIND_GPU")
        if kind == "KIND_CPU" and model_format == "tensorrt":
            raise ConfigError(f"{field}.kind", "TensorRT engines run only on GPUs: use KIND_GPU")
        count = int(group.get("count", 1))
        if count < 1:
            raise ConfigError(f"{field}.count", "count must be at least 1")
        lines = [f"    count: {count}", f"    kind: {kind}"]
        if group.get("gpus"):
            lines.append(f"    gpus: {_int_list(group['gpus'])}")
        blocks.append("  {\n" + "\n".join(lines) + "\n  }")
    return ["instance_group [\n" + ",\n".join(blocks) + "\n]"] if blocks else []


def _dynamic_batching(dyn: Mapping[str, Any] | None, max_batch: int) -> list[str]:
    if dyn is None:
        return []
    field = "spec.runtime.triton.dynamicBatching"
    if max_batch <= 0:
        raise ConfigError(field, "dynamic batching needs batching: set spec.runtime.triton.maxBatchSize > 0 "
                          "or remove dynamicBatching")
    lines = []
    preferred = [int(b) for b in dyn.get("preferredBatchSize", [])]
    for size in preferred:
        if not 1 <= size <= max_batch:
            raise ConfigError(f"{field}.preferredBatchSize", f"size {size} is outside 1..maxBatchSize "
                              f"({max_batch}): lower it or raise spec.runtime.triton.maxBatchSize")
    if preferred:
        lines.append(f"  preferred_batch_size: {_int_list(preferred)}")
    if "maxQueueDelayMicroseconds" in dyn:
        delay = int(dyn["maxQueueDelayMicroseconds"])
        if delay < 0:
            raise ConfigError(f"{field}.maxQueueDelayMicroseconds", "must be >= 0")
        lines.append(f"  max_queue_delay_microseconds: {delay}")
    return ["dynamic_batching {\n" + "".join(line + "\n" for line in lines) + "}"]


def _version_policy(policy: Mapping[str, Any] | None, version: int) -> list[str]:
    if policy is None:
        return []
    field = "spec.runtime.triton.versionPolicy"
    keys = [k for k in ("latest", "all", "specific") if k in policy]
    if len(keys) != 1 or len(policy) != 1:
        raise ConfigError(field, "set exactly one of latest, all or specific")
    body = policy[keys[0]] or {}
    if keys[0] == "all":
        return ["version_policy: { all: { } }"]
    if keys[0] == "latest":
        num = int(body.get("numVersions", 1))
        if num < 1:
            raise ConfigError(f"{field}.latest.numVersions", "must be at least 1")
        return [f"version_policy: {{ latest: {{ num_versions: {num} }} }}"]
    versions = [int(v) for v in body.get("versions", [])]
    if version not in versions:
        raise ConfigError(f"{field}.specific.versions", f"must include spec.model.version ({version}), the "
                          "only version directory the fetcher lays out")
    return [f"version_policy: {{ specific: {{ versions: {_int_list(versions)} }} }}"]


def _parameters(params: Mapping[str, Any]) -> list[str]:
    blocks = []
    for key in sorted(params):
        blocks.append(f"parameters {{\n  key: {quote(str(key))}\n  value: {{ string_value: "
                      f"{quote(str(params[key]))} }}\n}}")
    return blocks


def _backend(model: Mapping[str, Any], triton: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    """The Triton backend name and the parameters it needs (user parameters included)."""
    fmt = model.get("format", "")
    if fmt not in c.MODEL_FILES:
        raise ConfigError("spec.model.format", f"unknown format {fmt!r}: use one of {', '.join(c.MODEL_FILES)}")
    mode = triton.get("backend", c.BACKEND_NATIVE)
    user = {str(k): str(v) for k, v in (triton.get("parameters") or {}).items()}
    reserved = sorted(set(user) & set(_RESERVED_PARAMS))
    if reserved:
        hint = " (set spec.runtime.triton.allowCPUFallback instead)" if \
            reserved[0] == WRAPPER_PARAM_ALLOW_CPU_FALLBACK else ""
        raise ConfigError("spec.runtime.triton.parameters", f"{reserved[0]!r} is reserved for tritonops: "
                          f"remove it{hint}")
    fallback = triton.get("allowCPUFallback") is True
    if mode == c.BACKEND_NATIVE:
        if fallback:
            raise ConfigError("spec.runtime.triton.allowCPUFallback", "applies to backend: PythonWrapper only "
                              "(Triton's native backends do not fall back): remove it or use PythonWrapper")
        return c.NATIVE_BACKENDS[fmt], user
    if mode != c.BACKEND_PYTHON_WRAPPER:
        raise ConfigError("spec.runtime.triton.backend", f"unknown backend {mode!r}: use Native or PythonWrapper")
    if fmt not in c.WRAPPABLE_FORMATS:
        raise ConfigError("spec.runtime.triton.backend", f"PythonWrapper serves {' and '.join(c.WRAPPABLE_FORMATS)} "
                          f"files only, not {fmt}: use backend: Native")
    params = {**user, c.WRAPPER_PARAM_FORMAT: fmt, c.WRAPPER_PARAM_FILE: c.MODEL_FILES[fmt]}
    if fallback:
        params[WRAPPER_PARAM_ALLOW_CPU_FALLBACK] = "true"
    return "python", params


def _check_io(model: Mapping[str, Any], wrapper: bool) -> None:
    fmt = model.get("format", "")
    if (wrapper or fmt in NEEDS_IO) and not (model.get("inputs") and model.get("outputs")):
        who = "the PythonWrapper backend" if wrapper else f"Triton's {c.NATIVE_BACKENDS[fmt]} backend"
        raise ConfigError("spec.model.inputs", f"{who} cannot discover tensors from the model file: list "
                          "spec.model.inputs and spec.model.outputs (name, dataType, dims)")


def render_config(model: Mapping[str, Any], triton: Mapping[str, Any]) -> str:
    """The ``config.pbtxt`` text for ``spec.model`` and ``spec.runtime.triton`` (camelCase dicts)."""
    backend, params = _backend(model, triton)
    wrapper = triton.get("backend", c.BACKEND_NATIVE) == c.BACKEND_PYTHON_WRAPPER
    _check_io(model, wrapper)
    max_batch = int(triton.get("maxBatchSize", 0))
    if max_batch < 0:
        raise ConfigError("spec.runtime.triton.maxBatchSize", "must be >= 0 (0 disables batching)")
    version = int(model.get("version", 1))
    parts = [
        f"name: {quote(str(model.get('name', '')))}",
        f"backend: {quote(backend)}",
        f"max_batch_size: {max_batch}",
        *_tensors("input", model.get("inputs") or [], wrapper),
        *_tensors("output", model.get("outputs") or [], wrapper),
        *_instance_groups(triton.get("instanceGroups") or [], model.get("format", "")),
        *_dynamic_batching(triton.get("dynamicBatching"), max_batch),
        *_version_policy(triton.get("versionPolicy"), version),
        *_parameters(params),
    ]
    return "\n".join(parts) + "\n"
