"""The rollouts bench still runs: ``hack/bench.sh --smoke rollouts`` writes its JSON with its keys.

Not a timed test: the bench starts its own control plane with KWOK nodes (it refuses ``$KUBECONFIG``, so the
variable is dropped for it), and the numbers of a smoke run mean little; only that every decision and step
run was measured (the bench fails by itself otherwise) and that the result keeps its shape. The result goes
to ``tmp_path`` (``TRITONOPS_BENCH_RESULTS``), not over a developer's ``bench/results/``.
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
MODES = {"replicaRatio", "httpRoute"}
POINTS = ("write", "traffic", "status", "undersized")


def test_rollouts_smoke(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env |= {"TRITONOPS_BENCH_RESULTS": str(tmp_path), "PYTHON": sys.executable}
    proc = subprocess.run(["bash", "hack/bench.sh", "--smoke", "rollouts"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=400, check=False)
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    doc = json.loads((tmp_path / "rollouts.json").read_text())
    assert doc.keys() >= {"bench", "smoke", "started", "seconds", "host", "params", "results"}
    assert doc["bench"] == "rollouts" and doc["smoke"] is True
    results = doc["results"]
    assert set(results["decisions"]) == MODES and set(results["steps"]) == MODES
    for mode, by in results["decisions"].items():
        assert set(by) == {"abort", "promote", "complete"}, mode
        for decision, summary in by.items():
            assert summary["runs"] >= 1 and set(summary["samples"]) == set(POINTS), (mode, decision)
            for point in POINTS:
                assert 0 <= summary[point]["p50"] <= summary[point]["max"] < 60, (mode, decision, point)
    for mode, steps in results["steps"].items():
        assert steps["runs"] >= 1 and steps["steps"] >= 1 and steps["configuredPauseSeconds"] > 0, mode
        assert steps["ratio"]["p50"] >= 1, mode  # the pauses alone take their configured time
        assert steps["wallSeconds"]["p50"] >= steps["configuredPauseSeconds"], mode
        assert steps.keys() >= {"overheadPerStepSeconds", "setWeightSeconds", "setWeightReactionSeconds",
                                "pauseOvershootSeconds", "startRoundingSeconds"}, mode
