"""render_config: golden files for valid specs, ConfigError naming the field for invalid ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Golden
from tests.runtime.cases import CASES, IO, model_spec
from tritonops_runtime.pbtxt import ConfigError, quote, render_config

GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name: str, golden: Golden) -> None:
    golden(GOLDEN / f"{name}.pbtxt", render_config(model_spec(name), CASES[name][1]))


def test_deterministic_and_pure() -> None:
    model, triton = model_spec("wrap_onnx_params"), CASES["wrap_onnx_params"][1]
    before = repr((model, triton))
    assert render_config(model, triton) == render_config(dict(reversed(model.items())), triton)
    assert repr((model, triton)) == before


def test_wrapper_parameters_name_format_and_file() -> None:
    text = render_config(model_spec("wrap_torchscript_minimal"), {"backend": "PythonWrapper"})
    assert 'backend: "python"' in text
    assert 'key: "tritonops.format"\n  value: { string_value: "torchscript" }' in text
    assert 'key: "tritonops.model_file"\n  value: { string_value: "model.pt" }' in text


@pytest.mark.parametrize(("fmt", "backend"), [("torchscript", "pytorch"), ("onnx", "onnxruntime"),
                                              ("tensorrt", "tensorrt"), ("python", "python")])
def test_native_backends(fmt: str, backend: str) -> None:
    assert f'backend: "{backend}"' in render_config({"name": "m", "format": fmt, **IO}, {})


def test_quote_escapes() -> None:
    assert quote('a"b\\c\nd\te\u00e9') == '"a\\"b\\\\c\\nd\\te\\303\\251"'


BAD: list[tuple[dict[str, Any], dict[str, Any], str]] = [
    ({"format": "tensorrt", **IO}, {"backend": "PythonWrapper"}, "spec.runtime.triton.backend"),
    ({"format": "python", **IO}, {"backend": "PythonWrapper"}, "spec.runtime.triton.backend"),
    ({"format": "torchscript", **IO}, {"backend": "Docker"}, "spec.runtime.triton.backend"),
    ({"format": "keras", **IO}, {}, "spec.model.format"),
    ({"format": "torchscript", **IO}, {"dynamicBatching": {}}, "spec.runtime.triton.dynamicBatching"),
    ({"format": "torchscript", **IO}, {"maxBatchSize": 8, "dynamicBatching": {"preferredBatchSize": [16]}},
     "spec.runtime.triton.dynamicBatching.preferredBatchSize"),
    ({"format": "torchscript", **IO}, {"versionPolicy": {"latest": {}, "all": {}}},
     "spec.runtime.triton.versionPolicy"),
    ({"format": "torchscript", "version": 2, **IO}, {"versionPolicy": {"specific": {"versions": [1]}}},
     "spec.runtime.triton.versionPolicy.specific.versions"),
    ({"format": "torchscript", **IO}, {"instanceGroups": [{"kind": "KIND_CPU", "gpus": [0]}]},
     "spec.runtime.triton.instanceGroups[0].gpus"),
    ({"format": "torchscript", **IO}, {"instanceGroups": [{"kind": "KIND_TPU"}]},
     "spec.runtime.triton.instanceGroups[0].kind"),
    ({"format": "tensorrt", **IO}, {"instanceGroups": [{"kind": "KIND_CPU"}]},
     "spec.runtime.triton.instanceGroups[0].kind"),
    ({"format": "torchscript"}, {}, "spec.model.inputs"),
    ({"format": "onnx"}, {"backend": "PythonWrapper"}, "spec.model.inputs"),
    ({"format": "onnx", "inputs": [{"name": "x", "dataType": "TYPE_STRING", "dims": [1]}], "outputs": IO["outputs"]},
     {"backend": "PythonWrapper"}, "spec.model.inputs[0].dataType"),
    ({"format": "onnx", "inputs": [{"name": "x", "dataType": "TYPE_FP32", "dims": []}], "outputs": IO["outputs"]},
     {}, "spec.model.inputs[0].dims"),
    ({"format": "onnx", "inputs": IO["inputs"], "outputs": [{"name": "y", "dataType": "FLOAT", "dims": [1]}]},
     {}, "spec.model.outputs[0].dataType"),
    ({"format": "torchscript", **IO}, {"backend": "PythonWrapper", "parameters": {"tritonops.format": "onnx"}},
     "spec.runtime.triton.parameters"),
]


@pytest.mark.parametrize(("model", "triton", "field"), BAD, ids=[b[2] + f"-{i}" for i, b in enumerate(BAD)])
def test_config_errors_name_the_field(model: dict[str, Any], triton: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        render_config({"name": "m", **model}, triton)
    assert info.value.field_path == field
    assert str(info.value).startswith(f"{field}: ")
    assert isinstance(info.value, ValueError)
