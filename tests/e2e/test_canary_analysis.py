"""Canary analysis end to end: real tritonserver pods on the real node, real Prometheus scraping them, a
bounded load through the Service, and the operator promoting a good version and rolling back a bad one.

The bad version is the example classifier with a chain of 512x512 matrix products added to every
request (its answers stay correct; every request is slow, about 150 ms here against a few ms), so the
LatencyP99Ms check, read from Triton's own latency summaries through Prometheus, must fail it. Prometheus
runs on this machine and scrapes the pods at their pod IPs; the test discovers them from the API server
(Debian's Prometheus has no Kubernetes discovery) and labels them as the chart's PodMonitor does.
"""

from __future__ import annotations

import hashlib
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from tests.conftest import ROOT
from tests.e2e.conftest import ModelStore, local_md, running_operator
from tests.e2e.test_real_node import _infer, _serving_version_1
from tests.integration.support import Api, OperatorProcess, converged, wait_until
from tests.prometheus import PodTargets, running_prometheus, triton_pods_job
from tritonops import prom
from tritonops.devcluster.session import ClusterHandle

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.slow]
SLOW_KEY = "slow/model.onnx"
ANALYSIS = {"intervalSeconds": 10, "failureLimit": 1, "inconclusiveLimit": 6, "minRequests": 10,
            "metrics": [{"name": "ErrorRate", "thresholdRange": {"max": 0.05}},
                        {"name": "LatencyP99Ms", "thresholdRange": {"max": 60}}]}


def _slow_onnx(path: Path, matmuls: int = 96, size: int = 512) -> None:
    """The example's architecture, plus ``matmuls`` products of a (size x size) matrix scaled by the input."""
    sys.path.insert(0, str(ROOT / "examples" / "model"))
    import make_model  # the example's own exporter, not a package

    class Slow(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = make_model.Classifier()
            self.w = nn.Parameter(torch.randn(size, size) / size**0.5, requires_grad=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            m = self.w * x[:, :1].unsqueeze(-1)
            for _ in range(matmuls):
                m = torch.tanh(torch.matmul(m, self.w))
            out: torch.Tensor = self.inner(x) + 1e-9 * m.mean(dim=(1, 2)).unsqueeze(-1)
            return out

    assert not make_model.export_onnx(Slow(), path)


@pytest.fixture
def slow_model(model_store: ModelStore, tmp_path: Path) -> str:
    """The slow version in the model store; returns its digest."""
    model = tmp_path / "slow.onnx"
    _slow_onnx(model)
    model_store.s3.put("models", SLOW_KEY, model)
    return "sha256:" + hashlib.sha256(model.read_bytes()).hexdigest()


@pytest.fixture
def prometheus(api: Api, namespace: str, tmp_path: Path) -> Iterator[str]:
    targets = tmp_path / "targets.json"
    config = {"global": {"scrape_interval": "2s"}, "scrape_configs": [triton_pods_job(targets)]}
    with PodTargets(api.core, namespace, targets), running_prometheus(config, tmp_path / "prometheus") as url:
        yield url


@pytest.fixture
def analysing_operator(cluster: ClusterHandle, api: Api, namespace: str, prometheus: str,
                       tmp_path: Path) -> Iterator[OperatorProcess]:
    with running_operator(cluster, namespace, tmp_path, prometheus) as proc:
        yield proc


@dataclass
class Traffic:
    """A bounded load (``rate`` requests/s, one new connection each, 5 minutes at most) that records which
    model version answered each request."""

    url: str
    body: bytes
    rate: float = 25.0
    answers: list[tuple[float, str]] = field(default_factory=list)  # (monotonic time, model version)
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        deadline = time.monotonic() + 300
        while not self.stop.is_set() and time.monotonic() < deadline:
            started = time.monotonic()
            try:
                self.answers.append((time.monotonic(), _infer(self.url, self.body)["model_version"]))
            except Exception as err:
                self.errors.append(f"{time.strftime('%H:%M:%S')} {type(err).__name__}: {err}")
            self.stop.wait(max(0.0, 1 / self.rate - (time.monotonic() - started)))

    def __enter__(self) -> Traffic:
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(30)


def _canary(api: Api, namespace: str, name: str, version: int, key: str, digest: str, steps: list[dict[str, Any]],
            store: ModelStore) -> None:
    spec = local_md(name, store.uri(key), version=version, digest=digest)["spec"]
    api.patch_md(namespace, name, {"spec": {"model": spec["model"], "rollout": {
        "strategy": "Canary", "canary": {"steps": steps, "analysis": ANALYSIS}}}})


def _rollout(api: Api, namespace: str, name: str) -> dict[str, Any]:
    return ((api.md(namespace, name) or {}).get("status") or {}).get("rollout") or {}


def _at(stamp: str) -> float:
    """A status time as seconds before now on the monotonic clock (status times have 1 s precision)."""
    then = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return time.monotonic() - (datetime.now(UTC) - then).total_seconds()


def test_a_slow_canary_is_rolled_back_by_its_p99_latency(
        api: Api, namespace: str, model_store: ModelStore, store_secret: str, slow_model: str, prometheus: str,
        analysing_operator: OperatorProcess) -> None:
    stable, url, body = _serving_version_1(api, namespace, model_store, "bad")
    with Traffic(url, body) as traffic:
        wait_until("stable answers", lambda: len(traffic.answers) >= 10, timeout=30)
        _canary(api, namespace, "bad", 2, SLOW_KEY, slow_model,
                [{"setWeight": 50}, {"analysis": {"durationSeconds": 60}}], model_store)
        rollout = wait_until("the analysis to abort the canary",
                             lambda: r if (r := _rollout(api, namespace, "bad")).get("decision") == "Aborted" else None,
                             timeout=300)
        aborted_seen = time.monotonic()
        failed_at = _at(rollout["analysis"]["lastRunAt"])
        canary_answers = [t for t, v in traffic.answers if v == "2"]
        assert canary_answers, "the canary never took traffic"
        wait_until("stable alone answers", lambda: [v for _, v in traffic.answers[-20:]] == ["1"] * 20
                   and traffic.answers[-20][0] > aborted_seen, timeout=60)
        last_canary = max(t for t, v in traffic.answers if v == "2")
    md = api.md(namespace, "bad") or {}
    status = md["status"]
    assert status["stableRevision"] == stable and status["conditions"]
    checks = {c["name"]: c for c in rollout["analysis"]["checks"]}
    assert checks["LatencyP99Ms"]["result"] == "Failed" and checks["LatencyP99Ms"]["value"] > 60, checks
    assert checks["ErrorRate"]["result"] == "Passed", checks
    entry = status["history"][-1]
    assert entry["outcome"] == "Aborted" and "LatencyP99Ms=" in entry["message"], entry
    degraded = api.condition(namespace, "bad", "Degraded") or {}
    assert degraded.get("reason") == "RolloutAborted", degraded
    assert not traffic.errors, traffic.errors[:5]
    p99 = checks["LatencyP99Ms"]["value"]
    print(f"slow canary: p99 {p99:.0f} ms > 60 ms; failing window -> last canary answer "
          f"{max(0.0, last_canary - failed_at):.1f} s (status times have 1 s precision); "
          f"{len(canary_answers)} canary answers of {len(traffic.answers)}")
    assert last_canary - failed_at < 15


def test_a_good_canary_passes_its_analysis_and_is_promoted(
        api: Api, namespace: str, model_store: ModelStore, store_secret: str, prometheus: str,
        analysing_operator: OperatorProcess) -> None:
    stable, url, body = _serving_version_1(api, namespace, model_store, "good")
    steps = [{"setWeight": 50}, {"pause": {"durationSeconds": 5}}, {"analysis": {"durationSeconds": 20}}]
    starts: dict[int, float] = {}
    with Traffic(url, body) as traffic:
        wait_until("stable answers", lambda: len(traffic.answers) >= 10, timeout=30)
        _canary(api, namespace, "good", 2, "classifier/model.onnx", model_store.digest, steps, model_store)

        def promoted() -> dict[str, Any] | None:
            md = converged(api, namespace, "good")
            rollout = ((api.md(namespace, "good") or {}).get("status") or {}).get("rollout") or {}
            if "currentStepIndex" in rollout:
                starts.setdefault(int(rollout["currentStepIndex"]), time.monotonic())
            return md if md and md["status"]["stableRevision"] != stable else None

        md = wait_until("the canary promoted", promoted, timeout=300, interval=0.1)
        wait_until("version 2 alone answers", lambda: [v for _, v in traffic.answers[-20:]] == ["2"] * 20, timeout=120)
    assert not traffic.errors, traffic.errors[:5]
    history = md["status"]["history"]
    assert [h["outcome"] for h in history][-2:] == ["Superseded", "Promoted"]
    pause_overhead = starts[2] - starts[1] - 5
    print(f"good canary promoted; pause step took {pause_overhead:+.2f} s beyond its 5 s; analysis step "
          f"{starts.get(3, time.monotonic()) - starts[2]:.1f} s for 20 s of windows every 10 s")
    assert -0.5 < pause_overhead < 3
    served = f'sum(max_over_time(nv_inference_request_success{{namespace="{namespace}",revision="{stable}"}}[10m]))'
    assert (prom.query(prometheus, served) or 0) > 0  # the stable revision's pod was scraped under its labels
