"""The data-plane bench still runs (``bench/data_plane.py`` at its smoke size) and its JSON keeps its shape.

Only one real node may run per machine, so the bench is measured here on the session's cluster, node and S3
store (:meth:`bench.realnode_setup.RealNodeEnv.of`) rather than through ``hack/bench.sh``, whose run starts its
own. Not a timed test: the numbers of a smoke run mean little and are not checked; the bench fails by itself
when it measured nothing (failed requests, a pod off the real node, Triton not sampling at the set rate, the
sidecar not reading what Triton wrote). The result goes to ``tmp_path``, not over ``bench/results/``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from bench import data_plane
from bench.common import Run
from bench.realnode_setup import RealNodeEnv
from tests.e2e.conftest import ModelStore
from tritonops.devcluster.realnode import RealNode
from tritonops.devcluster.session import ClusterHandle
from tritonops_runtime import localtriton

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.slow, pytest.mark.triton]
CONFIGS = ["direct", "pod", "service", "service+1%", "service+10%"]
TOP_KEYS = {"bench", "smoke", "started", "seconds", "host", "params", "results"}


def test_data_plane_smoke(cluster: ClusterHandle, real_node: RealNode, model_store: ModelStore,
                          tmp_path: Path) -> None:
    if localtriton.find_tritonserver() is None:
        pytest.skip("tritonserver not found: pip install nvidia-pytriton (or set TRITONOPS_TRITONSERVER)")
    run = Run(data_plane.NAME, True, tmp_path / "data_plane.json", time.time())
    doc = json.loads(data_plane.measure(run, RealNodeEnv.of(cluster, model_store.s3)).read_text())

    assert doc.keys() >= TOP_KEYS and doc["bench"] == "data_plane" and doc["smoke"] is True
    results = doc["results"]
    assert results["baseline"] == "direct" and results["serviceBaseline"] == "service"
    assert list(results["configs"]) == CONFIGS
    for label, cfg in results["configs"].items():
        assert cfg["requests"] > 0 and cfg["throughputRps"] > 0 and 0 < cfg["p50Ms"] <= cfg["p99Ms"], label
        assert cfg["serverCpuMsPerRequest"] is None or cfg["serverCpuMsPerRequest"] > 0, label
        for base in ("vsDirect", "vsService"):
            assert cfg["ratios"][base].keys() >= {"throughput", "p50", "p99", "serverCpuPerRequest",
                                                  "throughputPerRound"}, label
        assert cfg["serverFailures"] == len(cfg["serverFailureDetails"])  # counted, not failed on: see the bench
        if cfg["percent"]:
            assert cfg["capture"]["traceRate"] == round(100 / cfg["percent"]), label
        else:
            assert cfg["capture"] is None, label
    assert results["configs"]["direct"]["ratios"]["vsDirect"]["throughput"] == 1
    assert results["configs"]["service"]["ratios"]["vsService"]["throughput"] == 1
