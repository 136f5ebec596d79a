"""The PythonWrapper serves correct values whether the Python-backend stub imports numpy 1 or numpy 2.

The stub in the nvidia-pytriton wheel (Triton 2.51) is built with a pybind11 that knows only numpy 1's C
ABI. Under numpy 2 its ``as_numpy()`` and ``pb_utils.Tensor(name, array)`` misread item sizes (0 for FP32):
inputs arrive as their first element repeated, outputs leave empty (HTTP 200 without data, or 500 in JSON),
and Triton counts those requests as successes. The wrapper moves tensors through DLPack instead.

The stub embeds CPython in isolated mode (``PYTHONPATH`` is ignored) and takes its environment from the
``python3`` first on ``PATH`` (see :mod:`tritonops_runtime.localtriton`). For numpy 2 the test builds, once,
a virtual environment under ``<cache>/stub-envs/`` (``$TRITONOPS_CACHE`` or ``~/.cache/tritonops``) whose
site-packages holds numpy 2 (pip, from PyPI) and then, through a ``.pth`` file, this venv's site-packages
(torch, onnxruntime); its ``bin`` goes first on tritonserver's ``PATH``.

Each run serves, in one tritonserver, the example model (ONNX and TorchScript) and a TorchScript model with
BOOL/INT64/FP16 tensors through the wrapper, compares the served values (HTTP binary, HTTP JSON, gRPC) with
torch/onnxruntime run directly, and proves from Triton's log which numpy the stub imported. A control model
that uses ``as_numpy()`` / ``pb_utils.Tensor`` shows the defect is live under numpy 2 (and absent under 1).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import venv
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tests.conftest import ExampleModel
from tests.runtime.cases import IO
from tritonops_runtime import contract as c
from tritonops_runtime import localtriton, pbtxt
from tritonops_runtime.localtriton import TritonServer, running_tritonserver
from tritonops_runtime.pbtxt import render_config

pytestmark = [pytest.mark.triton, pytest.mark.slow, pytest.mark.usefixtures("tritonserver_bin"),
              pytest.mark.filterwarnings("ignore:`torch.jit.[a-z]+` is deprecated:FutureWarning")]
NUMPY2 = "2.2.6"
WRAPPER = Path(pbtxt.__file__).parent / "backend" / "model.py"
BATCHING = {"backend": "PythonWrapper", "maxBatchSize": 16, "instanceGroups": [{"kind": "KIND_CPU", "count": 1}],
            "dynamicBatching": {"maxQueueDelayMicroseconds": 2000}}
MIXED_IO = {
    "inputs": [{"name": "X", "dataType": "TYPE_FP32", "dims": [4]},
               {"name": "MASK", "dataType": "TYPE_BOOL", "dims": [4]},
               {"name": "IDX", "dataType": "TYPE_INT64", "dims": [2]}],
    "outputs": [{"name": "Y", "dataType": "TYPE_FP32", "dims": [4]},
                {"name": "NOT", "dataType": "TYPE_BOOL", "dims": [4]},
                {"name": "IDX3", "dataType": "TYPE_INT64", "dims": [2]},
                {"name": "HALF", "dataType": "TYPE_FP16", "dims": [4]}],
}
CLASSIC_ECHO = '''\
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        pb_utils.Logger.log_info(f"classic_echo: numpy {np.__version__} from {np.__file__}")

    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("Y", pb_utils.get_input_tensor_by_name(r, "X")
                                                            .as_numpy() * 2)]) for r in requests]
'''
CLASSIC_CONFIG = ('name: "classic_echo"\nbackend: "python"\nmax_batch_size: 0\n'
                  'input [ { name: "X" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
                  'output [ { name: "Y" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
                  'instance_group [ { kind: KIND_CPU count: 1 } ]\n')


class Mixed(torch.nn.Module):
    """BOOL, INT64 and FP16 tensors in and out besides FP32."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor,
                idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return torch.where(mask, x * 2.0, -x), ~mask, idx * 3 + 1, x.to(torch.float16)


# -- a stub environment with numpy 2 -------------------------------------------------------------------------


def cache_root() -> Path:
    return Path(os.environ.get("TRITONOPS_CACHE") or Path.home() / ".cache" / "tritonops")


def numpy2_environment() -> Path:
    """A venv: numpy NUMPY2 first, then this venv's site-packages; built once per interpreter and venv."""
    base_site = sysconfig.get_paths()["purelib"]
    interpreter = getattr(sys, "_base_executable", sys.executable)
    key = hashlib.sha256(f"{interpreter}\0{sys.prefix}\0{sys.version}".encode()).hexdigest()[:12]
    dest = cache_root() / "stub-envs" / f"numpy-{NUMPY2}-{key}"
    if (dest / "ready").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        venv.EnvBuilder(with_pip=False, symlinks=True).create(tmp)
        site_packages = tmp / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
        pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                              "--no-deps", "--target", str(site_packages), f"numpy=={NUMPY2}"],
                             capture_output=True, text=True, check=False)
        if pip.returncode != 0:
            pytest.fail(f"pip could not install numpy=={NUMPY2} for the stub environment:\n{pip.stdout}{pip.stderr}")
        # After numpy 2 on sys.path: torch and onnxruntime (and this venv's numpy 1, shadowed).
        (site_packages / "zz-tritonops-base-venv.pth").write_text(f"import site; site.addsitedir({base_site!r})\n")
        (tmp / "ready").write_text(f"numpy=={NUMPY2} over {base_site}\n")
        try:
            tmp.rename(dest)
        except OSError:  # built meanwhile by another run
            if not (dest / "ready").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


@pytest.fixture(params=["numpy1", "numpy2"])
def stub_numpy(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The numpy version tritonserver's Python-backend stub will import (this venv's, or NUMPY2)."""
    if request.param == "numpy1":
        assert np.__version__.startswith("1."), "this venv is expected to hold numpy 1"
        return np.__version__
    bin_dir = numpy2_environment() / "bin"
    original: Callable[..., dict[str, str]] = localtriton.stub_environment

    def environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
        env = original(base)
        env["PATH"] = os.pathsep.join([str(bin_dir), env["PATH"]])
        return env

    monkeypatch.setattr(localtriton, "stub_environment", environment)
    return NUMPY2


# -- the repository and the references -----------------------------------------------------------------------


def wrapped(repo: Path, name: str, source: Path, model: dict[str, Any], triton: dict[str, Any]) -> None:
    """Lay out ``name`` as the fetcher does for backend: PythonWrapper."""
    version = repo / name / "1"
    version.mkdir(parents=True)
    shutil.copyfile(source, version / c.MODEL_FILES[model["format"]])
    shutil.copyfile(WRAPPER, version / "model.py")
    (repo / name / c.CONFIG_FILE).write_text(render_config({"name": name, "version": 1, **model}, triton))


def repository(tmp: Path, example: ExampleModel) -> Path:
    assert example.onnx is not None, example.summary.get("onnxError")
    repo = tmp / "repo"
    wrapped(repo, "clf_onnx", example.onnx, {"format": "onnx", **IO}, BATCHING)
    wrapped(repo, "clf_pt", example.torchscript, {"format": "torchscript", **IO}, BATCHING)
    torch.jit.save(torch.jit.script(Mixed()), str(tmp / "mixed.pt"))
    # A long queue delay, so that concurrent requests reach execute() together (the batched path).
    wrapped(repo, "mixed_pt", tmp / "mixed.pt", {"format": "torchscript", **MIXED_IO},
            {**BATCHING, "dynamicBatching": {"maxQueueDelayMicroseconds": 200_000}})
    (repo / "classic_echo" / "1").mkdir(parents=True)
    (repo / "classic_echo" / "1" / "model.py").write_text(CLASSIC_ECHO)
    (repo / "classic_echo" / c.CONFIG_FILE).write_text(CLASSIC_CONFIG)
    return repo


def run_torch(path: Path, *inputs: np.ndarray) -> list[np.ndarray]:
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
        out = torch.jit.load(str(path))(*[torch.from_numpy(x.copy()) for x in inputs])
    return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]


def run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out: np.ndarray = session.run(None, {session.get_inputs()[0].name: x})[0]
    return out


# -- inference over the three protocols ----------------------------------------------------------------------

Inputs = dict[str, np.ndarray]
TRITON_TYPES = {np.dtype(np.float32): "FP32", np.dtype(np.bool_): "BOOL", np.dtype(np.int64): "INT64"}


def infer_http(server: TritonServer, model: str, inputs: Inputs, outputs: list[str], binary: bool) -> Inputs:
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        infer_inputs = []
        for name, x in inputs.items():
            infer_inputs.append(httpclient.InferInput(name, list(x.shape), TRITON_TYPES[x.dtype]))
            infer_inputs[-1].set_data_from_numpy(x, binary_data=binary)
        # Triton's JSON cannot carry FP16: that output comes back binary in either case.
        requested = [httpclient.InferRequestedOutput(o, binary_data=binary or o == "HALF") for o in outputs]
        result = client.infer(model, infer_inputs, outputs=requested)
        return {o: result.as_numpy(o) for o in outputs}
    finally:
        client.close()  # open keep-alive connections would hold up the server's shutdown


def infer_grpc(server: TritonServer, model: str, inputs: Inputs, outputs: list[str]) -> Inputs:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        infer_inputs = []
        for name, x in inputs.items():
            infer_inputs.append(grpcclient.InferInput(name, list(x.shape), TRITON_TYPES[x.dtype]))
            infer_inputs[-1].set_data_from_numpy(x)
        result = client.infer(model, infer_inputs, outputs=[grpcclient.InferRequestedOutput(o) for o in outputs])
        return {o: result.as_numpy(o) for o in outputs}
    finally:
        client.close()


def infer_concurrently(server: TritonServer, model: str, inputs: Inputs, outputs: list[str]) -> Inputs:
    """One row per request, all in flight at once; the rows' outputs stacked again."""
    client = httpclient.InferenceServerClient(server.http_url, concurrency=8)
    try:
        pending = []
        for row in range(len(next(iter(inputs.values())))):
            infer_inputs = []
            for name, x in inputs.items():
                infer_inputs.append(httpclient.InferInput(name, [1, *x.shape[1:]], TRITON_TYPES[x.dtype]))
                infer_inputs[-1].set_data_from_numpy(x[row:row + 1])
            pending.append(client.async_infer(model, infer_inputs))
        results = [p.get_result() for p in pending]
        return {o: np.concatenate([r.as_numpy(o) for r in results]) for o in outputs}
    finally:
        client.close()


def served_everywhere(server: TritonServer, model: str, inputs: Inputs, outputs: list[str]) -> dict[str, Inputs]:
    return {"http-binary": infer_http(server, model, inputs, outputs, True),
            "http-json": infer_http(server, model, inputs, outputs, False),
            "grpc": infer_grpc(server, model, inputs, outputs)}


def assert_served(served: dict[str, Inputs], expected: Inputs) -> None:
    for protocol, values in served.items():
        for name, want in expected.items():
            got = values[name]
            assert got is not None and got.shape == want.shape, f"{protocol} {name}: got {got!r}, want {want!r}"
            assert got.dtype == want.dtype, f"{protocol} {name}: dtype {got.dtype}, want {want.dtype}"
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=f"{protocol} {name}")


def classic_echo(server: TritonServer, x: np.ndarray) -> str:
    """What as_numpy() / pb_utils.Tensor(name, array) make of ``x`` (doubled) in this stub environment."""
    try:
        got = infer_http(server, "classic_echo", {"X": x}, ["Y"], True)["Y"]
    except Exception as err:  # empty outputs make the client fail in several ways
        return f"error: {err}"
    return "correct" if got is not None and np.array_equal(got, x * 2) else f"wrong values: {got!r}"


def metric(server: TritonServer, name: str, model: str) -> float:
    """Sum of Triton's ``name`` series for ``model``."""
    series = re.compile(rf'^{name}\{{([^}}]*)\}} (\S+)$', re.MULTILINE)
    return sum(float(v) for labels, v in series.findall(server.metrics()) if f'model="{model}"' in labels)


def test_wrapper_serves_correct_values_under_the_stubs_numpy(tmp_path: Path, example_model: ExampleModel,
                                                             stub_numpy: str) -> None:
    repo = repository(tmp_path, example_model)
    rng = np.random.default_rng(7)
    x = np.asarray(example_model.sample_inputs, dtype=np.float32)
    mixed = {"X": rng.normal(size=(12, 4)).astype(np.float32), "MASK": rng.random((12, 4)) > 0.5,
             "IDX": rng.integers(-1000, 1000, size=(12, 2)).astype(np.int64)}
    want_mixed = dict(zip(["Y", "NOT", "IDX3", "HALF"], run_torch(tmp_path / "mixed.pt", *mixed.values()),
                          strict=True))
    assert want_mixed["HALF"].dtype == np.float16 and want_mixed["NOT"].dtype == np.bool_

    with running_tritonserver(repo, tmp_path / "triton") as server:
        log = server.log_text()
        for name in ("clf_onnx", "clf_pt", "mixed_pt"):
            assert re.search(rf"instance {name}_0_0 serves .* on cpu with numpy {re.escape(stub_numpy)}\b", log), \
                f"{name} did not report numpy {stub_numpy}:\n{log[-3000:]}"
        assert f"classic_echo: numpy {stub_numpy} from " in log

        assert example_model.onnx is not None
        assert_served(served_everywhere(server, "clf_onnx", {"INPUT0": x}, ["OUTPUT0"]),
                      {"OUTPUT0": run_onnx(example_model.onnx, x)})
        assert_served(served_everywhere(server, "clf_pt", {"INPUT0": x}, ["OUTPUT0"]),
                      {"OUTPUT0": run_torch(example_model.torchscript, x)[0]})
        assert_served(served_everywhere(server, "mixed_pt", mixed, list(want_mixed)), want_mixed)
        # Concurrent requests, which dynamic batching joins into one run whose outputs are split back.
        assert_served({"concurrent": infer_concurrently(server, "mixed_pt", mixed, list(want_mixed))}, want_mixed)

        echo = classic_echo(server, x[0])
        if stub_numpy.startswith("1."):
            assert echo == "correct"
        else:  # a stub built for numpy 2 would fix this: then the control is moot and may go
            assert echo != "correct", f"as_numpy()/pb_utils.Tensor(name, array) work under numpy {stub_numpy}"
        for name in ("clf_onnx", "clf_pt", "mixed_pt"):
            assert metric(server, "nv_inference_request_failure", name) == 0
        assert metric(server, "nv_inference_exec_count", "mixed_pt") < len(mixed["X"]) + 3  # some ran batched
        log = server.log_text()
        # DLPack capsules released as the spec says: else numpy's destructor prints a traceback per tensor.
        assert "Traceback" not in log and "PyCapsule" not in log, log[-3000:]
