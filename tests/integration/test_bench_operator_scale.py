"""The operator-at-scale bench still runs: ``hack/bench.sh --smoke operator_scale`` writes its JSON with its keys.

Not a timed test: the bench starts its own control plane with KWOK nodes (8 nodes, 10 ModelDeployments at
smoke size; ``$KUBECONFIG`` is dropped for it), and the numbers of a smoke run mean little. What holds at any
size is checked: every change reached its Deployment, nothing was written over three idle resyncs, and the
restarted operator converged. The result goes to ``tmp_path`` (``TRITONOPS_BENCH_RESULTS``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def test_operator_scale_smoke(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env |= {"TRITONOPS_BENCH_RESULTS": str(tmp_path), "PYTHON": sys.executable}
    proc = subprocess.run(["bash", "hack/bench.sh", "--smoke", "operator_scale"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=400, check=False)
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    doc = json.loads((tmp_path / "operator_scale.json").read_text())
    assert doc["bench"] == "operator_scale" and doc["smoke"] is True
    results = doc["results"]
    for size, by in results["sizes"].items():
        changes = by["changes"]
        assert 0 < changes["p50Seconds"] <= changes["p99Seconds"] <= changes["maxSeconds"], size
        assert by["grow"]["readySeconds"] >= by["grow"]["childrenSeconds"] > 0, size
    assert results["idle"]["requests"].get("writes", 0) == 0
    assert results["idle"]["requests"]["reconciles"] >= 3 * max(map(int, results["sizes"]))
    assert results["restart"]["convergedSeconds"] > 0
    assert results["resources"]["all"]["rssPeakMiB"] > 0
