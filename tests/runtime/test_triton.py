"""The real tritonserver (nvidia-pytriton wheel) serving repositories laid out by the fetcher.

Each test fetches the example model (file://, http:// on loopback, s3:// from versitygw), starts Triton on
loopback ports, infers over HTTP and gRPC and compares with running the torch model directly.
"""

from __future__ import annotations

import re
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tests.conftest import ExampleModel
from tests.runtime.cases import CASES, IO, model_spec
from tests.runtime.conftest import HttpServer
from tests.s3 import S3Server
from tritonops_runtime import contract as c
from tritonops_runtime import fetch
from tritonops_runtime.localtriton import TritonServer, TritonStartError, running_tritonserver, start_tritonserver
from tritonops_runtime.pbtxt import render_config

pytestmark = [pytest.mark.triton, pytest.mark.slow, pytest.mark.usefixtures("tritonserver_bin")]
CPU_WRAPPER = {"backend": "PythonWrapper", "maxBatchSize": 64, "instanceGroups": [{"kind": "KIND_CPU", "count": 1}],
               "dynamicBatching": {"maxQueueDelayMicroseconds": 2000}}
PARSE_ERRORS = re.compile(r"failed to read text proto|Error parsing text-format|unable to parse", re.IGNORECASE)


def fetch_model(tmp: Path, repo: Path, uri: str, model: dict[str, Any], triton: dict[str, Any]) -> None:
    """Run the fetcher (as the init container would) with the config rendered from the spec."""
    config = tmp / f"{model['name']}-config.pbtxt"
    config.write_text(render_config(model, triton))
    argv = ["--uri", uri, "--name", model["name"], "--format", model["format"], "--version",
            str(model.get("version", 1)), "--backend", triton.get("backend", c.BACKEND_NATIVE), "--repository",
            str(repo), "--config-file", str(config), "--termination-log", str(tmp / "term"),
            "--scratch-dir", str(tmp / "scratch")]
    assert fetch.main(argv) == 0, (tmp / "term").read_text()


def reference(model_file: Path, x: np.ndarray) -> np.ndarray:
    """The example model run directly by torch."""
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
        out: np.ndarray = torch.jit.load(str(model_file))(torch.from_numpy(x)).numpy()
    return out


def infer_both(server: TritonServer, name: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """OUTPUT0 for ``x`` over HTTP and over gRPC."""
    http = httpclient.InferenceServerClient(server.http_url)
    hin = httpclient.InferInput("INPUT0", list(x.shape), "FP32")
    hin.set_data_from_numpy(x)
    grpc = grpcclient.InferenceServerClient(server.grpc_url)
    gin = grpcclient.InferInput("INPUT0", list(x.shape), "FP32")
    gin.set_data_from_numpy(x)
    try:
        return http.infer(name, [hin]).as_numpy("OUTPUT0"), grpc.infer(name, [gin]).as_numpy("OUTPUT0")
    finally:
        http.close()  # open keep-alive connections would hold up the server's shutdown
        grpc.close()


def metric(server: TritonServer, name: str, model: str) -> float:
    """Sum of the series ``name{model=...,version="1",...}`` (0 if there is none)."""
    series = re.compile(rf'^{name}\{{([^}}]*)\}} (\S+)$', re.MULTILINE)
    return sum(float(value) for labels, value in series.findall(server.metrics())
               if f'model="{model}"' in labels and 'version="1"' in labels)


def wait_metric(server: TritonServer, name: str, model: str, expected: float, timeout: float = 15.0) -> None:
    """Wait until the counter reaches ``expected`` (Triton updates it just after the response is sent)."""
    deadline = time.monotonic() + timeout
    while (value := metric(server, name, model)) != expected:
        assert value < expected and time.monotonic() < deadline, f"{name}{{model={model}}} = {value} != {expected}"
        time.sleep(0.05)


def serve_and_check(tmp: Path, repo: Path, example: ExampleModel) -> None:
    x = np.asarray(example.sample_inputs, dtype=np.float32)
    expected = reference(example.torchscript, x)
    with running_tritonserver(repo, tmp / "triton") as server:
        by_http, by_grpc = infer_both(server, "clf", x)
        np.testing.assert_allclose(by_http, expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(by_grpc, expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(infer_both(server, "clf", x[:1])[0], expected[:1], rtol=1e-5, atol=1e-6)
        wait_metric(server, "nv_inference_request_success", "clf", 4)
        assert 'nv_inference_request_success{model="clf",version="1"} 4' in server.metrics()
        assert metric(server, "nv_inference_request_failure", "clf") == 0


def model_clf() -> dict[str, Any]:
    return {"name": "clf", "format": "torchscript", "version": 1, **IO}


def test_file_uri(tmp_path: Path, example_model: ExampleModel) -> None:
    fetch_model(tmp_path, tmp_path / "repo", example_model.torchscript.as_uri(), model_clf(), CPU_WRAPPER)
    serve_and_check(tmp_path, tmp_path / "repo", example_model)


def test_http_uri(tmp_path: Path, example_model: ExampleModel, http_server: HttpServer) -> None:
    (http_server.root / "model.pt").write_bytes(example_model.torchscript.read_bytes())
    fetch_model(tmp_path, tmp_path / "repo", f"{http_server.url}/model.pt", model_clf(), CPU_WRAPPER)
    serve_and_check(tmp_path, tmp_path / "repo", example_model)


def test_s3_uri(tmp_path: Path, example_model: ExampleModel, s3_server: S3Server,
                monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    s3_server.put("models", "clf/1/model.pt", example_model.torchscript)
    fetch_model(tmp_path, tmp_path / "repo", "s3://models/clf/1/model.pt", model_clf(), CPU_WRAPPER)
    serve_and_check(tmp_path, tmp_path / "repo", example_model)


def test_onnx_through_wrapper_and_concurrent_batches(tmp_path: Path, example_model: ExampleModel) -> None:
    if example_model.onnx is None:
        pytest.fail(f"ONNX export failed: {example_model.summary['onnxError']}")
    model = {**model_clf(), "format": "onnx"}
    fetch_model(tmp_path, tmp_path / "repo", example_model.onnx.as_uri(), model, CPU_WRAPPER)
    rng = np.random.default_rng(0)
    batches = [rng.normal(size=(int(rng.integers(1, 5)), 4)).astype(np.float32) for _ in range(16)]
    with running_tritonserver(tmp_path / "repo", tmp_path / "triton") as server:
        client = httpclient.InferenceServerClient(server.http_url, concurrency=8)
        pending = []
        for x in batches:
            inp = httpclient.InferInput("INPUT0", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            pending.append(client.async_infer("clf", [inp]))
        for x, request in zip(batches, pending, strict=True):
            np.testing.assert_allclose(request.get_result().as_numpy("OUTPUT0"),
                                       reference(example_model.torchscript, x), rtol=1e-4, atol=1e-5)
        client.close()
        wait_metric(server, "nv_inference_request_success", "clf", 16)
        assert metric(server, "nv_inference_exec_count", "clf") <= 16


def _golden_repository(tmp: Path, example: ExampleModel) -> Path:
    repo = tmp / "repo"
    for name, (model, triton) in CASES.items():
        spec = model_spec(name)
        if name.startswith("wrap_"):
            source = example.torchscript if model["format"] == "torchscript" else example.onnx
            assert source is not None
            fetch_model(tmp, repo, source.as_uri(), spec, triton)
            continue
        version_dir = repo / name / str(model.get("version", 1))
        version_dir.mkdir(parents=True)
        (version_dir / c.MODEL_FILES[model["format"]]).write_bytes(b"placeholder")
        (repo / name / c.CONFIG_FILE).write_text(render_config(spec, triton))
    return repo


def test_rendered_configs_are_accepted(tmp_path: Path, example_model: ExampleModel) -> None:
    """Wrapper configs load and serve; native ones parse (they fail later: no such backend/GPU here)."""
    repo = _golden_repository(tmp_path, example_model)
    args = ["--exit-on-error=false", "--strict-readiness=false"]
    with running_tritonserver(repo, tmp_path / "triton", args) as server:
        states = {m["name"]: m for m in server.repository_index()}
        assert set(states) == set(CASES)
        for name, entry in states.items():
            if name.startswith("wrap_"):
                assert entry["state"] == "READY", entry
            else:
                assert entry["state"] == "UNAVAILABLE" and not PARSE_ERRORS.search(entry.get("reason", "")), entry
        x = np.asarray(example_model.sample_inputs, dtype=np.float32)
        for name in ("wrap_torchscript_batching", "wrap_onnx_params"):
            np.testing.assert_allclose(infer_both(server, name, x)[0], reference(example_model.torchscript, x),
                                       rtol=1e-4, atol=1e-5)


def _broken_repo(tmp: Path, example: ExampleModel, config_text: str) -> Path:
    fetch_model(tmp, tmp / "repo", example.torchscript.as_uri(), model_clf(), CPU_WRAPPER)
    (tmp / "repo" / "clf" / c.CONFIG_FILE).write_text(config_text)
    return tmp / "repo"


def test_unparsable_config_stops_the_server(tmp_path: Path, example_model: ExampleModel) -> None:
    repo = _broken_repo(tmp_path, example_model, 'name: "clf"\nbackend: "python"\nmax_batch_size: lots\n')
    with pytest.raises(TritonStartError) as info:
        start_tritonserver(repo, tmp_path / "triton", timeout=60).stop()
    assert "tritonserver exited with 1" in str(info.value)
    assert "failed to load all models" in str(info.value)
    log = (tmp_path / "triton" / "tritonserver.log").read_text()
    assert "Expected integer, got: lots" in log and PARSE_ERRORS.search(log)


def test_load_failure_is_reported_in_index_and_health(tmp_path: Path, example_model: ExampleModel) -> None:
    text = render_config(model_clf(), CPU_WRAPPER).replace('string_value: "model.pt"', 'string_value: "gone.pt"')
    repo = _broken_repo(tmp_path, example_model, text)
    with running_tritonserver(repo, tmp_path / "triton", ["--exit-on-error=false", "--strict-readiness=false"]) as s:
        (entry,) = s.repository_index()
        assert entry["state"] == "UNAVAILABLE"
        assert "model file" in entry["reason"] and "gone.pt not found" in entry["reason"]
        assert s.get("/v2/models/clf/ready")[0] == 400
        assert "gone.pt not found" in s.log_text()
