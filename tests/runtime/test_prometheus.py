"""Canary analysis queries against a real Prometheus (Debian's) scraping a real tritonserver.

The model raises for negative inputs, so Triton counts those requests as BACKEND failures; the analysis's
ErrorRate, request count and p99 latency must read them back through Prometheus. (A request answered with
an error *response* instead counts as a success in Triton 2.51's metrics; see the issue notes.)
"""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.waiting import wait_for
from tests.prometheus import running_prometheus
from tritonops import analysis, prom
from tritonops_runtime.localtriton import TritonServer, free_port, running_tritonserver

pytestmark = [pytest.mark.triton, pytest.mark.slow, pytest.mark.usefixtures("tritonserver_bin")]
MODEL_PY = '''
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            if float(x.ravel()[0]) < 0:
                raise pb_utils.TritonModelException("negative input")
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", x)]))
        return out
'''
CONFIG = '''name: "m"
backend: "python"
max_batch_size: 8
input [{name: "INPUT0", data_type: TYPE_FP32, dims: [4]}]
output [{name: "OUTPUT0", data_type: TYPE_FP32, dims: [4]}]
instance_group [{kind: KIND_CPU, count: 1}]
'''


@pytest.fixture
def triton(tmp_path: Path) -> Iterator[TritonServer]:
    (tmp_path / "repo" / "m" / "1").mkdir(parents=True)
    (tmp_path / "repo" / "m" / "config.pbtxt").write_text(CONFIG)
    (tmp_path / "repo" / "m" / "1" / "model.py").write_text(MODEL_PY)
    with running_tritonserver(tmp_path / "repo", tmp_path / "triton",
                              ["--metrics-config", "summary_latencies=true", "--metrics-interval-ms=500"]) as server:
        yield server


@pytest.fixture
def prometheus(tmp_path: Path, triton: TritonServer) -> Iterator[str]:
    """Prometheus scraping Triton every second, labelling its series as the canary's pods would be."""
    target = f"127.0.0.1:{triton.metrics_port}"
    config = {"global": {"scrape_interval": "1s"}, "scrape_configs": [{
        "job_name": "triton", "static_configs": [{"targets": [target],
                                                  "labels": {"namespace": "ml", "revision": "clf-b"}}]}]}
    with running_prometheus(config, tmp_path / "prometheus") as url:
        yield url


def _infer(server: TritonServer, first: float) -> None:
    body = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32",
                                   "data": [first, 0.0, 0.0, 0.0]}]}).encode()
    request = urllib.request.Request(f"http://{server.http_url}/v2/models/m/infer", data=body)
    with contextlib.suppress(urllib.error.HTTPError):  # the negative inputs: counted by Triton as failures
        urllib.request.urlopen(request, timeout=10).close()


def test_error_rate_requests_and_p99_through_prometheus(triton: TritonServer, prometheus: str) -> None:
    window = 60
    requests = analysis.requests_query("ml", "clf-b", window)
    # increase() needs a sample from before the traffic: wait until the zero counters were scraped
    wait_for(lambda: prom.query(prometheus, requests) is not None, 60, "Triton's counters scraped")
    for i in range(30):
        _infer(triton, -1.0 if i % 3 == 0 else 1.0)  # 10 of 30 fail
    wait_for(lambda: (prom.query(prometheus, requests) or 0) >= 29, 60, "30 requests in the window")
    error_rate = prom.query(prometheus, analysis.builtin_query("ErrorRate", "ml", "clf-b", window))
    assert error_rate == pytest.approx(1 / 3, abs=0.05)
    p99 = prom.query(prometheus, analysis.builtin_query("LatencyP99Ms", "ml", "clf-b", window))
    assert p99 is not None and 0 < p99 < 5000
    checks = analysis.checks({"intervalSeconds": window, "metrics": [
        {"name": "ErrorRate", "thresholdRange": {"max": 0.05}}]}, "ml", "clf-b")
    verdict = analysis.judge(checks, {"ErrorRate": error_rate}, prom.query(prometheus, requests), min_requests=20)
    assert verdict.result == analysis.FAILED and verdict.failed == ["ErrorRate"]


def test_other_revisions_and_missing_series_give_no_value(prometheus: str) -> None:
    assert prom.query(prometheus, analysis.builtin_query("LatencyP99Ms", "ml", "clf-other", 60)) is None
    with pytest.raises(prom.PrometheusError, match="400"):
        prom.query(prometheus, "sum(")
    with pytest.raises(prom.PrometheusError, match="cannot query"):
        prom.query(f"http://127.0.0.1:{free_port()}", "up")


def test_a_whole_window_measured_and_a_dead_prometheus_fails_it(triton: TritonServer, prometheus: str) -> None:
    spec = {"intervalSeconds": 60, "metrics": [{"name": "ErrorRate", "thresholdRange": {"max": 0.05}},
                                               {"name": "LatencyP99Ms", "thresholdRange": {"max": 5000}}]}
    run = analysis.Run("ml", "clf-b", analysis.checks(spec, "ml", "clf-b"), analysis.requests_query("ml", "clf-b", 60),
                       min_requests=10)
    wait_for(lambda: prom.query(prometheus, run.requests_query) is not None, 60, "Triton's counters scraped")
    for i in range(20):
        _infer(triton, -1.0 if i % 4 == 0 else 1.0)  # 5 of 20 fail
    wait_for(lambda: (prom.query(prometheus, run.requests_query) or 0) >= 19, 60, "20 requests in the window")
    window = prom.measure(run, prom.Endpoint(prometheus))
    assert (window.result, window.failed) == (analysis.FAILED, ["ErrorRate"]), window.message()
    assert window.values["ErrorRate"] == pytest.approx(0.25, abs=0.05)
    dead = prom.measure(run, prom.Endpoint(f"http://127.0.0.1:{free_port()}"))
    assert dead.result == analysis.FAILED and "cannot query" in dead.message()  # fail closed, with the reason
