"""The benchmarks still run: ``hack/bench.sh --smoke`` (tiny sizes) writes each bench's JSON with its keys.

Not a timed test: the numbers of a smoke run mean little and are not checked, only that the benches measured
something (each fails by itself when it did not: no capture, failed requests, detectors disagreeing with scipy)
and that their result files keep their shape. The results go to ``tmp_path`` (``TRITONOPS_BENCH_RESULTS``), not
over a developer's ``bench/results/``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.triton, pytest.mark.slow, pytest.mark.usefixtures("tritonserver_bin")]
ROOT = Path(__file__).resolve().parents[2]
TOP_KEYS = {"bench", "smoke", "started", "seconds", "host", "params", "results"}
METHODS = ("psi", "js", "ks", "chi2")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    out = tmp_path_factory.mktemp("bench-results")
    env = {**os.environ, "TRITONOPS_BENCH_RESULTS": str(out), "PYTHON": sys.executable}
    proc = subprocess.run(["bash", "hack/bench.sh", "--smoke", "capture_overhead", "drift_detectors"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    docs = {}
    for name in ("capture_overhead", "drift_detectors"):
        doc = json.loads((out / f"{name}.json").read_text())
        assert doc.keys() >= TOP_KEYS and doc["bench"] == name and doc["smoke"] is True, doc.keys()
        docs[name] = doc["results"]
    return docs


def test_capture_overhead(results: dict[str, dict[str, Any]]) -> None:
    capture = results["capture_overhead"]
    assert capture["baseline"] == "0%" and list(capture["configs"]) == ["0%", "1%", "10%", "100%"]
    for label, cfg in capture["configs"].items():
        assert cfg["requests"] > 0 and cfg["throughputRps"] > 0 and 0 < cfg["p50Ms"] <= cfg["p99Ms"], label
        assert cfg["ratios"].keys() >= {"throughput", "p50", "p99", "serverCpuPerRequest", "throughputPerRound"}
        assert cfg["serverFailures"] == len(cfg["serverFailureDetails"])  # counted, not failed on: see the bench
        if label == "0%":
            assert cfg["sampledRecords"] is None and cfg["ratios"]["throughput"] == 1
        else:
            assert cfg["sampledRecords"] > 0 and cfg["traceBytesPerSampled"] > 100, label


def test_drift_detectors(results: dict[str, dict[str, Any]]) -> None:
    drift = results["drift_detectors"]
    for method in METHODS:
        cost = drift["cost"][method]
        assert cost["oursSeconds"] > 0 and cost["scipySeconds"] > 0 and cost["ratio"] > 0, method
        assert cost["relativeDifference"] <= 1e-9
        assert 0 <= drift["falsePositives"][method]["windowRate"] <= 1
        for shift in ("0.25", "0.5", "1"):
            delay = drift["detectionDelay"][shift][method]
            assert delay.keys() >= {"detected", "trials", "meanDelay", "windowFlagRate"}, (shift, method)
    assert set(drift["thirdParty"]) == {"alibi-detect", "evidently"}
    assert all("absent" in lib for lib in drift["thirdParty"].values())  # skipped in smoke runs
