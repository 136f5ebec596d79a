"""The real autoscaling loop: kube-controller-manager's HPA controller scales a ModelDeployment from Triton's
own metrics, read through real Prometheus and prometheus-adapter (built from its Go module) serving the
custom metrics API, with the real Triton pods on the real node under a bounded load.

The HPA is the operator's (one test per preset: ``InferenceRate``, ``QueueTime``, ``PendingRequests``
through prometheus-adapter, ``CPU`` and ``Memory`` through metrics-server (built from its Go module) reading
the real node's kubelet), targets the ModelDeployment's ``/scale`` and reads the preset's metric from the
adapter rules the chart renders (:mod:`tritonops.api.adapter`). Each prints the time from the load step to
the HPA's decision and to new Ready replicas (quoted in the README).
Debian's Prometheus has no Kubernetes discovery, so the test lists the pods for it (``PodTargets``) with
the labels the chart's PodMonitor gives them.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.autoscaling_support import metrics_apis
from tests.e2e.conftest import ModelStore, local_md, running_operator
from tests.e2e.test_canary_analysis import Traffic, _slow_onnx
from tests.e2e.test_real_node import _answers, samples, service_ip
from tests.integration.support import Api, converged, wait_until
from tests.metrics_server import running_metrics_server
from tests.prometheus import PodTargets, running_prometheus, triton_pods_job
from tritonops.api.adapter import rules
from tritonops.devcluster.session import ClusterHandle
from tritonops_runtime import contract as c

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.slow]
BUSY_KEY = "busy/model.onnx"


@dataclass(frozen=True)
class Case:
    """One preset under a load that needs ``maximum`` replicas; ``streams`` clients, each at most ``rate``
    requests/s and one request at a time (so concurrency, and with it queueing, is bounded by ``streams``)."""

    target: float
    maximum: int
    streams: int
    rate: float
    busy: bool  # the busy model (about 40 ms of CPU per request) rather than the example (about 1 ms)
    recovers: bool = True  # the metric falls back once the load stops (memory does not)


CASES = {
    # 16 requests/s offered, 4 inferences/s per replica aimed at: 3 replicas (the maximum).
    "InferenceRate": Case(target=4, maximum=3, streams=1, rate=16.0, busy=False),
    # 3 concurrent clients on a one-instance model: requests queue behind each other (tens of ms); 20 ms aimed at.
    "QueueTime": Case(target=20000, maximum=2, streams=3, rate=20.0, busy=True),
    # the same load: about 2 requests wait at any time; 1 per replica aimed at.
    "PendingRequests": Case(target=1, maximum=2, streams=3, rate=20.0, busy=True),
    # the same load keeps about one CPU busy: 200 % of the 100m request aimed at (metrics-server, kubelet).
    "CPU": Case(target=200, maximum=2, streams=3, rate=20.0, busy=True),
    # Triton's memory is its loaded model, not its load: a target below what an idle replica holds adds a
    # replica without load, and nothing brings it back (the test shows the reading and the pace only).
    "Memory": Case(target=10, maximum=2, streams=0, rate=0.0, busy=False, recovers=False),
}


def scaling(preset: str, case: Case) -> dict[str, Any]:
    return {"minReplicas": 1, "maxReplicas": case.maximum, "metrics": [{"type": preset, "target": case.target}],
            "behavior": {"scaleUp": {"stabilizationWindowSeconds": 0,
                                     "policies": [{"type": "Pods", "value": 2, "periodSeconds": 15}]}},
            "scaleDownStabilizationSeconds": 20}


@pytest.fixture
def busy_model(model_store: ModelStore, tmp_path: Path) -> str:
    """A correct model that takes about 40 ms of CPU per request (so that requests queue); its digest."""
    model = tmp_path / "busy.onnx"
    _slow_onnx(model, matmuls=24)
    model_store.s3.put("models", BUSY_KEY, model)
    return "sha256:" + hashlib.sha256(model.read_bytes()).hexdigest()


# The adapter serves external.metrics.k8s.io only with an external rule; the helpers register both APIs.
EXTERNAL = {"seriesQuery": 'nv_inference_count{namespace!=""}',
            "resources": {"overrides": {"namespace": {"resource": "namespace"}}},
            "name": {"matches": "^nv_inference_count$", "as": "tritonops_inference_rate_total"},
            "metricsQuery": "sum(rate(<<.Series>>{<<.LabelMatchers>>}[1m])) by (<<.GroupBy>>)"}


@pytest.fixture
def metrics(cluster: ClusterHandle, api: Api, namespace: str, real_node: Any, tmp_path: Path) -> Iterator[str]:
    targets = tmp_path / "targets.json"
    config = {"global": {"scrape_interval": "2s"}, "scrape_configs": [triton_pods_job(targets)]}
    with PodTargets(api.core, namespace, targets), running_prometheus(config, tmp_path / "prometheus") as url, \
            metrics_apis(cluster, url, {**rules(), "externalRules": [EXTERNAL]}, tmp_path / "adapter"), \
            running_metrics_server(cluster, tmp_path / "metrics-server"):
        yield url


@pytest.fixture
def autoscaling_operator(cluster: ClusterHandle, namespace: str, metrics: str, tmp_path: Path) -> Iterator[None]:
    with running_operator(cluster, namespace, tmp_path, metrics):
        yield


def _sizes(api: Api, namespace: str) -> tuple[int, int]:
    """(spec.replicas the HPA wrote, available Triton replicas)."""
    md = api.md(namespace, "auto") or {}
    available = sum(d.status.available_replicas or 0 for d in api.deployments(namespace, "auto"))
    return int(md.get("spec", {}).get("replicas", 0)), available


@pytest.mark.parametrize("preset", list(CASES))
def test_the_hpa_scales_the_model_up_under_load_and_down_after(
        preset: str, api: Api, namespace: str, model_store: ModelStore, store_secret: str, busy_model: str,
        autoscaling_operator: None) -> None:
    case = CASES[preset]
    md = local_md("auto", model_store.uri(BUSY_KEY), digest=busy_model) if case.busy else \
        local_md("auto", model_store.uri("classifier/model.onnx"), digest=model_store.digest)
    md["spec"]["autoscaling"] = scaling(preset, case)
    api.create_md(namespace, md)
    wait_until("Ready", lambda: converged(api, namespace, "auto"), timeout=300)

    def reading() -> Any:
        hpa = api.autoscaling.read_namespaced_horizontal_pod_autoscaler("auto", namespace)
        return hpa if hpa.status.current_metrics else None

    hpa = wait_until("the HPA reads the metric", reading, timeout=120)
    assert hpa.spec.scale_target_ref.kind == "ModelDeployment"
    x, _ = samples(model_store)
    body = f'{{"inputs":[{{"name":"INPUT0","shape":[1,4],"datatype":"FP32","data":{x[0].tolist()}}}]}}'.encode()
    url = f"http://{service_ip(api, namespace, 'auto')}:{c.HTTP_PORT}/v2/models/classifier/infer"
    wait_until("the Service answers", lambda: _answers(url, body), timeout=30)  # kube-proxy follows Ready
    with contextlib.ExitStack() as stack:
        loads = [stack.enter_context(Traffic(url, body, rate=case.rate)) for _ in range(case.streams)]
        t0 = time.monotonic()
        wait_until("the HPA asks for more replicas", lambda: _sizes(api, namespace)[0] > 1, timeout=180)
        decided = time.monotonic() - t0
        wait_until("a second replica serves", lambda: _sizes(api, namespace)[1] > 1, timeout=240)
        serving = time.monotonic() - t0
        wait_until("all replicas serve", lambda: _sizes(api, namespace)[1] == case.maximum, timeout=240)
        full = time.monotonic() - t0
        answered = sum(len(load.answers) for load in loads)
        offered = answered / full
        reading = api.autoscaling.read_namespaced_horizontal_pod_autoscaler("auto", namespace).status
    t1 = time.monotonic()
    if case.recovers:
        wait_until("back to one replica", lambda: _sizes(api, namespace) == (1, 1), timeout=300)
    down = time.monotonic() - t1
    errors = [e for load in loads for e in load.errors]
    assert not errors, errors[:5]
    startup = ((api.md(namespace, "auto") or {}).get("status") or {}).get("startupSeconds")
    print(f"{preset} target {case.target:g}, {case.streams} client(s) ({offered:.1f} answers/s): "
          f"HPA scaled up after {decided:.0f} s, a 2nd replica served after {serving:.0f} s, {case.maximum} after "
          f"{full:.0f} s; " + (f"back to 1 replica {down:.0f} s after the load stopped " if case.recovers else "")
          + f"({answered} requests, no errors; measured start of a replica {startup} s; HPA read "
          f"{_reading(reading)})")


def _reading(status: Any) -> str:
    """The HPA's current value of its one metric, as it printed it."""
    metric = (status.current_metrics or [None])[0]
    if metric is None:
        return "nothing"
    current = (metric.resource or metric.pods or metric.external).current
    return str(current.average_utilization if current.average_utilization is not None else current.average_value)
