"""``tritonops-drift-monitor`` (a subprocess, through its CLI) beside the real tritonserver.

Triton serves the example model with every request traced (``trace_args(prefix, 100%, log_frequency=5)``) into
the directory the monitor reads. The test sends the example's synthetic data (the distribution of the
reference profile ``make_model.py`` wrote): three windows without drift; then shifted inputs: drift declared
after ``--consecutive-windows`` (2) windows, on ``/metrics`` and ``/v1/status``, and the PSI of the predictions
rises. Then requests with a KServe ``id`` and their labels posted to ``/v1/feedback``: the exported accuracy is
what ``retrain.metrics`` computes on the same pairs; wrong labels push it below the minimum. Last, SIGTERM,
and a restart that resumes from the state file.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT, ExampleModel
from tests.integration.waiting import wait_for
from tests.runtime.test_capture import post, trace_files
from tests.runtime.test_triton import CPU_WRAPPER, fetch_model, model_clf
from tritonops_runtime.drift.capture import trace_args
from tritonops_runtime.drift.tracefile import Array
from tritonops_runtime.localtriton import TritonServer, free_port, running_tritonserver
from tritonops_runtime.retrain import metrics

pytestmark = [pytest.mark.triton, pytest.mark.slow, pytest.mark.usefixtures("tritonserver_bin")]
WINDOW, ROWS_PER_REQUEST, LOG_FREQUENCY = 300, 20, 5  # 15 requests a window: 3 trace files
SHIFT = np.array([2.0, 2.0, 0.0, -1.0], dtype=np.float32)  # towards class 1's centre


@functools.cache
def _make_model() -> Any:
    spec = importlib.util.spec_from_file_location("make_model", ROOT / "examples" / "model" / "make_model.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def synthetic_data(n: int, seed: int) -> tuple[Array, Array]:
    """The example model's training distribution (``make_model.synthetic_data``) with another seed."""
    x, y = _make_model().synthetic_data(n, seed)
    return x, y


@dataclass
class Sidecar:
    """The monitor process and its URL."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def get(self, path: str) -> str:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as resp:
            text: str = resp.read().decode()
            return text

    def status(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.get("/v1/status"))
        return doc

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {(s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "model"))): s.value
                for family in text_string_to_metric_families(self.get("/metrics")) for s in family.samples
                if s.labels.get("model") == "clf"}

    def feedback(self, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(f"{self.url}/v1/feedback", data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=10) as resp:
            answer: dict[str, Any] = json.loads(resp.read())
            return answer

    def healthy(self) -> bool:
        try:
            return self.get("/healthz") == "ok\n"
        except OSError:
            return False

    def stop(self) -> tuple[int, float, str]:
        """SIGTERM: (exit status, seconds to exit, stderr)."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=10)
        return code, time.monotonic() - started, self.log.read_text()


@dataclass
class Setup:
    server: TritonServer
    prefix: Path
    start: Callable[[], Sidecar]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, example_model: ExampleModel) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("monitor")
    fetch_model(tmp, tmp / "repo", example_model.torchscript.as_uri(), model_clf(), CPU_WRAPPER)
    prefix = tmp / "capture" / "trace.json"
    prefix.parent.mkdir()
    argv = ["--trace-prefix", str(prefix), "--reference", (example_model.dir / "reference_profile.json").as_uri(),
            "--reference-digest", example_model.summary["profileDigest"], "--model", "clf", "--input", "INPUT0",
            "--output", "OUTPUT0", "--window-size", str(WINDOW), "--interval-seconds", "0.3", "--method", "psi",
            "--threshold", "0.2", "--consecutive-windows", "2", "--state-file", str(prefix.parent / "state.json"),
            "--quality-metric", "accuracy", "--quality-minimum", "0.8", "--quality-window", "20"]
    started: list[Sidecar] = []

    def start() -> Sidecar:
        port, log = free_port(), tmp / f"monitor-{len(started)}.log"
        with log.open("wb") as stderr:  # a file, not a pipe: nobody has to drain it
            proc = subprocess.Popen([sys.executable, "-m", "tritonops_runtime.drift.monitor", *argv, "--listen",
                                     f"127.0.0.1:{port}"], stderr=stderr)
        sidecar = Sidecar(proc, f"http://127.0.0.1:{port}", log)
        started.append(sidecar)
        wait_for(lambda: sidecar.healthy() or proc.poll() is not None, 20.0, "the monitor to listen", 0.05)
        assert proc.poll() is None, log.read_text()
        return sidecar

    with running_tritonserver(tmp / "repo", tmp / "triton", trace_args(prefix, 100, LOG_FREQUENCY)) as server:
        yield Setup(server, prefix, start)
    for sidecar in started:
        sidecar.proc.kill()
        sidecar.proc.wait()


def infer(server: TritonServer, x: Array, request_id: str | None = None) -> Array:
    body: dict[str, Any] = {"inputs": [{"name": "INPUT0", "shape": list(x.shape), "datatype": "FP32",
                                        "data": x.ravel().tolist()}]}
    if request_id is not None:
        body["id"] = request_id
    status, answer = post(server, "/v2/models/clf/infer", body)
    assert status == 200, answer
    return np.asarray(answer["outputs"][0]["data"], dtype=np.float32).reshape(answer["outputs"][0]["shape"])


def send_window(setup: Setup, sidecar: Sidecar, x: Array) -> dict[str, Any]:
    """Send one window's rows and wait until the monitor evaluated it; returns the status then."""
    windows = sidecar.status()["tracker"]["windows"]
    for start in range(0, len(x), ROWS_PER_REQUEST):
        infer(setup.server, x[start:start + ROWS_PER_REQUEST])
    status: dict[str, Any] = wait_for(lambda: (doc := sidecar.status())["tracker"]["windows"] > windows and doc,
                                      20.0, "a window", 0.05)
    return status


def test_drift_and_quality_against_triton(setup: Setup) -> None:
    sidecar = setup.start()
    for seed in (100, 101, 102):
        status = send_window(setup, sidecar, synthetic_data(WINDOW, seed)[0])
        assert status["lastWindow"]["rows"] == WINDOW and not status["lastWindow"]["drifted"], status["lastWindow"]
        assert status["predictionDriftPSI"] < 0.1
    assert status["tracker"]["declared"] is False and status["rowsPending"] == 0
    assert sidecar.metrics()["tritonops_drift_detected", ()] == 0.0

    status = send_window(setup, sidecar, synthetic_data(WINDOW, 103)[0] + SHIFT)
    assert status["lastWindow"]["drifted"] and (status["tracker"]["consecutive"], status["tracker"]["declared"]) == (
        1, False)
    status = send_window(setup, sidecar, synthetic_data(WINDOW, 104)[0] + SHIFT)
    assert (status["tracker"]["consecutive"], status["tracker"]["declared"], status["tracker"]["event"]) == (
        2, True, "declared")
    assert status["predictionDriftPSI"] > 0.2
    assert set(status["lastWindow"]["driftedFeatures"]) >= {"INPUT0[0]", "INPUT0[1]", "OUTPUT0"}
    found = sidecar.metrics()
    assert found["tritonops_drift_detected", ()] == 1.0 and found["tritonops_drift_windows_total", ()] == 5.0
    assert found["tritonops_drift_declarations_total", ()] == 1.0
    assert found["tritonops_prediction_drift_psi", ()] == status["predictionDriftPSI"]
    assert found["tritonops_capture_records_total", ()] == 5 * WINDOW / ROWS_PER_REQUEST

    # Ground truth: one row per request, each with its KServe id.
    x, y = synthetic_data(40, 105)
    predicted = np.concatenate([infer(setup.server, x[k:k + 1], f"q-{k}") for k in range(40)]).argmax(axis=1)
    wait_for(lambda: sidecar.status()["feedback"]["waiting"] == 40, 20.0, "40 predictions kept for feedback", 0.05)
    right = [{"id": f"q-{k}", "label": int(y[k])} for k in range(20)] + [{"id": "never-sent", "label": 0}]
    assert sidecar.feedback({"items": right}) == {"joined": 20, "unknown": 1, "invalid": 0}
    found = sidecar.metrics()
    assert found["tritonops_quality", (("metric", "accuracy"),)] == metrics.accuracy(predicted[:20], y[:20]) >= 0.8
    assert (found["tritonops_quality_pairs", ()], found["tritonops_quality_below_minimum", ()]) == (20.0, 0.0)

    wrong = [{"id": f"q-{k}", "label": int((y[k] + 1) % 3)} for k in range(20, 40)]
    assert sidecar.feedback({"items": wrong})["joined"] == 20
    found = sidecar.metrics()
    assert found["tritonops_quality", (("metric", "accuracy"),)] == metrics.accuracy(
        predicted[20:], (y[20:] + 1) % 3) < 0.8
    assert found["tritonops_quality_below_minimum", ()] == 1.0
    assert found["tritonops_feedback_total", (("outcome", "joined"),)] == 40.0
    assert sidecar.status()["quality"]["belowMinimum"] is True

    code, elapsed, stderr = sidecar.stop()
    assert code == 0 and elapsed < 2.5, stderr  # the 1 s bound is test_monitor.py's (see its torch note)
    assert "drift declared" in stderr
    assert trace_files(setup.prefix) == []  # every trace file was read and deleted

    again = setup.start()  # the state file carries the declaration across a restart
    tracker = again.status()["tracker"]
    assert (tracker["windows"], tracker["consecutive"], tracker["declared"]) == (5, 2, True)
    assert again.metrics()["tritonops_drift_detected", ()] == 1.0
    assert again.stop()[0] == 0
