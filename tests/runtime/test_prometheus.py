"""Canary analysis queries against a real Prometheus (Debian's) scraping a real tritonserver.

The model raises for negative inputs, so Triton counts those requests as BACKEND failures; the analysis's
ErrorRate, request count and p99 latency must read them back through Prometheus. (A request answered with
an error *response* instead counts as a success in Triton 2.51's metrics; see the issue notes.)
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.integration.waiting import wait_for
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
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus not installed: bash hack/install-test-deps.sh (Debian's prometheus)")
    target = f"127.0.0.1:{triton.metrics_port}"
    config = {"global": {"scrape_interval": "1s"}, "scrape_configs": [{
        "job_name": "triton", "static_configs": [{"targets": [target],
                                                  "labels": {"namespace": "ml", "revision": "clf-b"}}]}]}
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    with (tmp_path / "prometheus.log").open("wb") as log:
        proc = subprocess.Popen([binary, f"--config.file={tmp_path / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda: proc.poll() is None and _ready(url), 60, "Prometheus ready")
            yield url
        finally:
            proc.terminate()
            proc.wait(15)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as resp:
            return int(resp.status) == 200
    except OSError:
        return False


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
