"""Tensor capture through Triton's trace files (tritonops_runtime.drift.capture) against the real tritonserver.

One server serves the example model with ``trace_args(..., 50%, log_frequency=2)``; each test sets the trace
setting it needs through the API first (which also restarts Triton's sampling count), sends known requests
and collects. Two more servers: an identity model with every dtype, and one started at 0%.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient

from tests.conftest import ExampleModel
from tests.integration.waiting import wait_for
from tests.runtime.test_triton import CPU_WRAPPER, fetch_model, model_clf
from tritonops_runtime.drift.capture import (
    CaptureLimits,
    TensorKey,
    TraceCollector,
    runtime_setting,
    sample_rate,
    trace_args,
)
from tritonops_runtime.drift.tracefile import Array, TraceRecord, is_complete, parse_trace
from tritonops_runtime.localtriton import TritonServer, running_tritonserver

pytestmark = [pytest.mark.triton, pytest.mark.slow, pytest.mark.usefixtures("tritonserver_bin")]
TIMEOUT = 20.0


@dataclass
class Traced:
    """A running server writing trace files to ``prefix.<k>``."""

    server: TritonServer
    prefix: Path


def trace_files(prefix: Path) -> list[Path]:
    return sorted(prefix.parent.glob(f"{prefix.name}.*"), key=lambda p: int(p.suffix[1:]))


def complete_files(prefix: Path, count: int) -> list[Path]:
    """The complete trace files once there are ``count`` of them (else an empty list)."""
    done = [p for p in trace_files(prefix) if is_complete(p.read_bytes())]
    return done if len(done) >= count else []


def collect(collector: TraceCollector, count: int) -> list[TraceRecord]:
    """Poll until ``count`` records came in."""
    records: list[TraceRecord] = []

    def enough() -> bool:
        records.extend(collector.poll())
        return len(records) >= count

    wait_for(enough, TIMEOUT, f"{count} records", 0.05)
    return records


def post(server: TritonServer, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    req = urllib.request.Request(f"http://{server.http_url}{path}", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def set_trace(traced: Traced, body: dict[str, Any], model: str | None = None) -> None:
    """Change the trace setting, then remove whatever the replaced setting flushed."""
    path = f"/v2/models/{model}/trace/setting" if model else "/v2/trace/setting"
    status, answer = post(traced.server, path, body)
    assert status == 200, answer
    for path_ in trace_files(traced.prefix):
        path_.unlink()


def infer(server: TritonServer, x: Array, request_id: str) -> Array:
    """OUTPUT0 of the example model over HTTP/JSON, sent with the KServe v2 request ``id``."""
    body = {"id": request_id, "inputs": [{"name": "INPUT0", "shape": list(x.shape), "datatype": "FP32",
                                          "data": x.ravel().tolist()}]}
    status, answer = post(server, "/v2/models/clf/infer", body)
    assert status == 200 and answer["id"] == request_id, answer
    return np.asarray(answer["outputs"][0]["data"], dtype=np.float32).reshape(answer["outputs"][0]["shape"])


def batch(rng: np.random.Generator, rows: int) -> Array:
    """Inputs in quarters: exact within the 6 significant digits Triton prints."""
    return (rng.integers(-12, 12, size=(rows, 4)) / 4).astype(np.float32)


@pytest.fixture(scope="module")
def traced_clf(tmp_path_factory: pytest.TempPathFactory, example_model: ExampleModel) -> Iterator[Traced]:
    tmp = tmp_path_factory.mktemp("capture")
    fetch_model(tmp, tmp / "repo", example_model.torchscript.as_uri(), model_clf(), CPU_WRAPPER)
    prefix = tmp / "shared" / "trace.json"
    prefix.parent.mkdir()
    with running_tritonserver(tmp / "repo", tmp / "triton", trace_args(prefix, 50, log_frequency=2)) as server:
        yield Traced(server, prefix)


def test_trace_args() -> None:
    args = trace_args("/shared/trace.json", 10, log_frequency=50)
    assert args[::2] == ["--trace-config"] * 6
    assert args[1::2] == ["triton,file=/shared/trace.json", "triton,log-frequency=50", "level=TIMESTAMPS",
                          "level=TENSORS", "rate=10", "count=-1"]
    assert trace_args("/t", 0) == []
    assert "level=OFF" in trace_args("/t", 0, switchable=True)
    assert [sample_rate(p) for p in (100, 50, 40, 33, 10, 0.1, 0)] == [1, 2, 2, 3, 10, 1000, 0]
    assert runtime_setting(25, 10) == {"trace_level": ["TIMESTAMPS", "TENSORS"], "trace_rate": "4",
                                       "log_frequency": "10"}
    assert runtime_setting(0) == {"trace_level": ["OFF"]}
    with pytest.raises(ValueError):
        trace_args("/t", 10, log_frequency=0)
    with pytest.raises(ValueError):
        sample_rate(120)


def test_collector_returns_exactly_the_sampled_requests(traced_clf: Traced) -> None:
    set_trace(traced_clf, runtime_setting(50, log_frequency=2))
    rng = np.random.default_rng(7)
    sent = []
    for k in range(12):
        x = batch(rng, k % 3 + 1)
        sent.append((f"req-{k}", x, infer(traced_clf.server, x, f"req-{k}")))
    files = wait_for(lambda: complete_files(traced_clf.prefix, 3), TIMEOUT, "3 trace files", 0.05)
    assert [len(parse_trace(f.read_bytes()).records) for f in files] == [2, 2, 2]  # rotated every 2 traces

    collector = TraceCollector(traced_clf.prefix, CaptureLimits(max_rows=8))
    records = collect(collector, 6)
    sampled = sent[1::2]  # rate 2: the 2nd, 4th, ... request
    assert [r.request_id for r in records] == [request_id for request_id, _, _ in sampled]
    for record, (_, x, y) in zip(records, sampled, strict=True):
        assert (record.model, record.version, record.skipped) == ("clf", 1, {})
        assert record.inputs["INPUT0"].dtype == np.float32
        np.testing.assert_array_equal(record.inputs["INPUT0"], x)
        np.testing.assert_allclose(record.outputs["OUTPUT0"], y, rtol=1e-5, atol=1e-7)  # 6 digits printed
        assert record.timestamps["REQUEST_START"] <= record.timestamps["REQUEST_END"]
    assert trace_files(traced_clf.prefix) == []  # read files are deleted
    counters = collector.counters.as_dict()
    rows = sum(len(x) for _, x, _ in sampled)
    assert counters | {"bytes_read": 0} == {**dict.fromkeys(counters, 0), "files_read": 3, "records": 6,
                                            "rows": 2 * rows}
    ring_rows = np.concatenate([x for _, x, _ in sampled])[-8:]
    row_ids = [rid for rid, x, _ in sampled for _ in range(len(x))][-8:]
    (inputs, ids), (outputs, _) = (collector.snapshot()[TensorKey("clf", side, name)]
                                   for side, name in (("input", "INPUT0"), ("output", "OUTPUT0")))
    np.testing.assert_array_equal(inputs, ring_rows)
    assert ids == row_ids and outputs.shape == (8, 3)


def test_trace_settings_at_runtime(traced_clf: Traced) -> None:
    server, rng = traced_clf.server, np.random.default_rng(1)
    assert post(server, "/v2/trace/setting", {"trace_rate": 1})[0] == 500  # values must be JSON strings
    set_trace(traced_clf, runtime_setting(0))
    for k in range(3):
        infer(server, batch(rng, 1), f"off-{k}")
    status, setting = post(server, "/v2/trace/setting", runtime_setting(100, log_frequency=1))
    assert status == 200 and (setting["trace_rate"], setting["log_frequency"]) == ("1", "1")
    infer(server, batch(rng, 1), "on-0")
    collector = TraceCollector(traced_clf.prefix)
    assert [r.request_id for r in collect(collector, 1)] == ["on-0"]  # nothing from the "off" requests

    set_trace(traced_clf, runtime_setting(50, log_frequency=1), model="clf")  # a model's own setting
    for k in range(4):
        infer(server, batch(rng, 1), f"model-{k}")
    assert [r.request_id for r in collect(collector, 2)] == ["model-1", "model-3"]
    set_trace(traced_clf, dict.fromkeys(("trace_level", "trace_rate", "log_frequency")), model="clf")  # global again
    assert json.loads(server.get("/v2/models/clf/trace/setting")[1])["trace_rate"] == "1"
    assert trace_files(traced_clf.prefix) == []


def test_overload_drops_the_oldest_files(traced_clf: Traced) -> None:
    set_trace(traced_clf, runtime_setting(100, log_frequency=1))
    rng = np.random.default_rng(2)
    for k in range(6):
        infer(traced_clf.server, batch(rng, 2), f"load-{k}")
    wait_for(lambda: complete_files(traced_clf.prefix, 6), TIMEOUT, "6 trace files", 0.05)
    collector = TraceCollector(traced_clf.prefix, CaptureLimits(max_pending_files=2))
    assert [r.request_id for r in collector.poll()] == ["load-4", "load-5"]
    assert (collector.counters.files_dropped_overload, collector.counters.files_read) == (4, 2)
    assert trace_files(traced_clf.prefix) == []


def test_half_written_corrupt_and_oversize_files(traced_clf: Traced) -> None:
    set_trace(traced_clf, runtime_setting(100, log_frequency=1))
    rng = np.random.default_rng(3)
    for k in range(3):
        infer(traced_clf.server, batch(rng, 1), f"f-{k}")
    _, half, big = wait_for(lambda: complete_files(traced_clf.prefix, 3), TIMEOUT, "3 trace files", 0.05)
    raw = half.read_bytes()
    half.write_bytes(raw[:len(raw) // 2])  # as a reader can catch one
    big.write_bytes(big.read_bytes() + b" " * 5000)
    bad_tensor = traced_clf.prefix.with_name(traced_clf.prefix.name + ".900")
    bad_tensor.write_bytes(b'[{"id":9,"activity":"TENSOR_QUEUE_INPUT","tensor":{"name":"INPUT0","data":"1,2",'
                           b'"shape":"1,4","dtype":"FP32"}},{"id":9,"bogus":"x"}]')
    garbage = traced_clf.prefix.with_name(traced_clf.prefix.name + ".901")
    garbage.write_bytes(b"\x00\x01 not a trace")
    old = time.time() - 3600
    os.utime(garbage, (old, old))

    collector = TraceCollector(traced_clf.prefix, CaptureLimits(max_file_bytes=4096, stale_after_s=30))
    records = collector.poll()
    assert [r.request_id for r in records] == ["f-0", None]
    assert records[1].skipped == {"input:INPUT0": "2 values for shape (1, 4)"}
    assert trace_files(traced_clf.prefix) == [half]  # still being written, as far as anyone can tell
    os.utime(half, (old, old))
    assert collector.poll() == [] and trace_files(traced_clf.prefix) == []
    counters = collector.counters
    assert (counters.files_read, counters.files_dropped_oversize, counters.files_corrupt) == (2, 1, 2)
    assert (counters.entries_bad, counters.tensors_skipped, counters.records_unattributed) == (1, 1, 1)


IDENTITY_MODEL = '''
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor(
            "OUT", pb_utils.get_input_tensor_by_name(r, "F32").as_numpy() * 2)]) for r in requests]
'''
DTYPES = {"F16": np.float16, "F32": np.float32, "F64": np.float64, "I8": np.int8, "U8": np.uint8,
          "I64": np.int64, "U16": np.uint16, "B": np.bool_, "S": np.object_}
TRITON_TYPES = {"F16": "FP16", "F32": "FP32", "F64": "FP64", "I8": "INT8", "U8": "UINT8", "I64": "INT64",
                "U16": "UINT16", "B": "BOOL", "S": "STRING"}


def identity_repo(root: Path) -> Path:
    (root / "ident" / "1").mkdir(parents=True)
    (root / "ident" / "1" / "model.py").write_text(IDENTITY_MODEL)
    inputs = ",\n".join(f'{{ name: "{n}" data_type: TYPE_{t} dims: [ 5 ] }}' for n, t in TRITON_TYPES.items())
    (root / "ident" / "config.pbtxt").write_text(
        f'name: "ident"\nbackend: "python"\nmax_batch_size: 0\ninput [\n{inputs}\n]\n'
        'output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 5 ] } ]\n'
        'instance_group [ { count: 1 kind: KIND_CPU } ]\n')
    return root


def test_dtypes_and_raw_request_ids(tmp_path: Path) -> None:
    """INT8/UINT8 as raw bytes (quote, backslash, NUL, newline, 0xff) and a quote in the request id make
    the file invalid JSON: the scanner still reads every tensor Triton wrote data for."""
    values = {"F16": [1.5, -2, 0, 3, 4], "F32": [0.1, -1e-07, 123456, 2.5, -0], "F64": [0.1, 1 / 4, 1e300, -3, 7],
              "I8": [34, 92, 0, -1, 10], "U8": [255, 34, 92, 0, 44], "I64": [-(2**62), 0, 7, 1, 2],
              "U16": [1, 2, 65535, 0, 9], "B": [True, False, True, True, False],
              "S": [b"a", b'q"uo\\te', b"x\ny", b"", b","]}
    arrays = {name: np.array(v, dtype=DTYPES[name]) for name, v in values.items()}
    prefix = tmp_path / "shared" / "trace.json"
    prefix.parent.mkdir()
    args = trace_args(prefix, 100, log_frequency=1)
    with running_tritonserver(identity_repo(tmp_path / "repo"), tmp_path / "triton", args) as server:
        client = httpclient.InferenceServerClient(server.http_url)
        inputs = []
        for name, array in arrays.items():
            inputs.append(httpclient.InferInput(name, [5], TRITON_TYPES[name].replace("STRING", "BYTES")))
            inputs[-1].set_data_from_numpy(array, binary_data=True)
        out = client.infer("ident", inputs, request_id='q"1').as_numpy("OUT")
        client.close()
        collector = TraceCollector(prefix, unbatched_models={"ident"})
        (record,) = collect(collector, 1)
    assert record.request_id == 'q"1' and record.model == "ident"
    assert record.skipped == {"input:F16": "FP16 data is not written by Triton", "input:S": "BYTES are not captured"}
    for name in ("F32", "F64", "I8", "U8", "I64", "U16", "B"):
        assert record.inputs[name].dtype == arrays[name].dtype, name
        np.testing.assert_array_equal(record.inputs[name], arrays[name])
    np.testing.assert_array_equal(record.outputs["OUT"], out)
    counters = collector.counters
    assert (counters.files_not_json, counters.tensors_skipped, counters.entries_bad) == (1, 2, 0)
    assert collector.snapshot()[TensorKey("ident", "input", "U8")][0].shape == (1, 5)  # unbatched: one row per request


def test_zero_percent_writes_nothing(tmp_path: Path, traced_clf: Traced) -> None:
    prefix = tmp_path / "shared" / "trace.json"
    prefix.parent.mkdir()
    assert trace_args(prefix, 0) == []
    repo = traced_clf.prefix.parent.parent / "repo"
    with running_tritonserver(repo, tmp_path / "triton", trace_args(prefix, 0)) as server:
        rng = np.random.default_rng(4)
        for k in range(3):
            infer(server, batch(rng, 2), f"zero-{k}")
        assert json.loads(server.get("/v2/trace/setting")[1])["trace_level"] == ["OFF"]
        status, answer = post(server, "/v2/trace/setting", runtime_setting(100, log_frequency=1))
        assert status == 400 and "trace file name is not given" in answer  # hence trace_args(switchable=True)
    assert list(prefix.parent.iterdir()) == []
    assert TraceCollector(prefix).poll() == []
