"""The closed loop on the real node: Triton samples the requests it serves, the drift-monitor sidecar compares
them with the reference profile and scores labelled feedback, real Prometheus scrapes it, the operator reads
it into ``status.drift``, starts a retraining Job when drift is declared, and serves the accepted candidate.

Traffic comes from the example's own generator (``examples/model/make_model.py``): first from the training
distribution (no drift), then with two features shifted by two standard deviations. Every request carries a
KServe ``id``; the test posts the true labels to the Service's feedback port.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import ROOT
from tests.e2e.conftest import ModelStore, local_md, running_operator
from tests.e2e.test_real_node import _answers, service_ip
from tests.integration.support import Api, converged, kubectl, wait_until
from tests.integration.test_canary import kubectl_tritonops
from tests.prometheus import PodTargets, running_prometheus, triton_pods_job
from tritonops.devcluster.realnode import RealNode
from tritonops.devcluster.retrain_image import import_retrain_image
from tritonops.devcluster.session import ClusterHandle
from tritonops_runtime import contract as c

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.slow]
ROWS = 8  # rows per request (the model's maxBatchSize)
DRIFT = {"enabled": True, "method": "psi", "samplePercent": 100, "windowSize": 100, "intervalSeconds": 10,
         "consecutiveWindows": 2, "quality": {"metric": "accuracy", "minimum": 0.8, "windowSize": 50}}


def generator() -> Any:
    sys.path.insert(0, str(ROOT / "examples" / "model"))
    import make_model  # the example's own generator, not a package

    return make_model


def shifted(n: int, seed: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    x, y = generator().synthetic_data(n, seed=seed)
    x[:, :2] += shift
    return x, y


@dataclass
class LabelledTraffic:
    """Requests of ``ROWS`` rows from (inputs, labels), each with an id; the labels kept for feedback."""

    url: str
    x: np.ndarray
    y: np.ndarray
    rate: float = 4.0
    sent: dict[str, list[int]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        i = 0
        while not self.stop.is_set() and i + ROWS <= len(self.x):
            rid = f"r{time.monotonic_ns()}"
            body = {"id": rid, "inputs": [{"name": "INPUT0", "shape": [ROWS, 4], "datatype": "FP32",
                                           "data": self.x[i:i + ROWS].ravel().tolist()}]}
            try:
                request = urllib.request.Request(self.url, data=json.dumps(body).encode(),
                                                 headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=10) as resp:
                    resp.read()
                self.sent[rid] = [int(v) for v in self.y[i:i + ROWS]]
            except OSError as err:
                self.errors.append(f"{type(err).__name__}: {err}")
            i += ROWS
            self.stop.wait(1 / self.rate)

    def __enter__(self) -> LabelledTraffic:
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(30)


def feedback(base: str, sent: dict[str, list[int]]) -> dict[str, int]:
    """POST every request's labels (one label per row: the monitor joins rows by request id)."""
    items = [{"id": rid, "label": labels} for rid, labels in sent.items()]
    request = urllib.request.Request(f"{base}{c.FEEDBACK_PATH}", data=json.dumps({"items": items}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        answer: dict[str, int] = json.loads(resp.read())
        return answer


@pytest.fixture
def drift_prometheus(api: Api, namespace: str, real_node: Any, tmp_path: Path) -> Iterator[str]:
    targets = tmp_path / "targets.json"
    config = {"global": {"scrape_interval": "2s"}, "scrape_configs": [triton_pods_job(targets)]}
    with PodTargets(api.core, namespace, targets, ports=(c.METRICS_PORT, c.DRIFT_PORT)), \
            running_prometheus(config, tmp_path / "prometheus") as url:
        yield url


@pytest.fixture
def loop_operator(cluster: ClusterHandle, namespace: str, drift_prometheus: str, tmp_path: Path) -> Iterator[None]:
    with running_operator(cluster, namespace, tmp_path, drift_prometheus):
        yield


def put(store: ModelStore, tmp: Path, key: str, data: bytes) -> str:
    """Upload ``data`` to the model store under ``key``; its digest."""
    path = tmp / key.replace("/", "_")
    path.write_bytes(data)
    store.s3.put("models", key, path)
    return "sha256:" + hashlib.sha256(data).hexdigest()


def npz(x: np.ndarray, y: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.savez(out, inputs=x, labels=y)
    return out.getvalue()


def drift_of(api: Api, namespace: str) -> dict[str, Any]:
    return ((api.md(namespace, "drifty") or {}).get("status") or {}).get("drift") or {}


def retraining_of(api: Api, namespace: str) -> dict[str, Any]:
    return ((api.md(namespace, "drifty") or {}).get("status") or {}).get("retraining") or {}


def diagnostics(api: Api, namespace: str, monitor: str, prometheus: str) -> None:
    """What to look at when the loop stalls (printed; pytest shows it for a failed test)."""
    print("status:", json.dumps({k: v for k, v in ((api.md(namespace, "drifty") or {}).get("status") or {}).items()
                                 if k in ("drift", "retraining", "conditions")}, indent=1))
    for pod in api.core.list_namespaced_pod(namespace).items:
        for container in ("drift-monitor", "retrain"):
            if any(ctr.name == container for ctr in pod.spec.containers):
                try:
                    log = api.core.read_namespaced_pod_log(pod.metadata.name, namespace, container=container,
                                                           tail_lines=40)
                except Exception as err:  # a container that has not started has no log yet
                    log = f"(no log: {err})"[:300]
                print(f"--- {pod.metadata.name}/{container}:\n{log}")
    for url in (f"{monitor}{c.DRIFT_STATUS_PATH}",
                f"{prometheus}/api/v1/query?query=tritonops_drift_windows_total"):
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                print(url, resp.read()[:3000].decode())
        except OSError as err:
            print(url, err)


def test_drift_is_declared_from_real_traffic_and_starts_a_retraining_job(
        api: Api, namespace: str, model_store: ModelStore, store_secret: str, loop_operator: None,
        retrain_image: str, drift_prometheus: str, cluster: ClusterHandle, tmp_path: Path) -> None:
    example = model_store.example
    profile = (example.dir / "reference_profile.json").read_bytes()
    profile_digest = put(model_store, tmp_path, "classifier/reference_profile.json", profile)
    pt_digest = put(model_store, tmp_path, "classifier/model.pt", example.torchscript.read_bytes())
    put(model_store, tmp_path, "data/shifted.npz", npz(*shifted(2000, 7, 2.0)))
    x_bad, y_bad = shifted(2000, 8, 2.0)
    put(model_store, tmp_path, "data/mislabelled.npz", npz(x_bad, np.random.default_rng(3).permutation(y_bad)))
    md = local_md("drifty", model_store.uri("classifier/model.onnx"), digest=model_store.digest)
    # A retrained candidate goes through a canary: half the pods (one beside the stable one), 10 s, then all.
    md["spec"]["rollout"] = {"strategy": "Canary", "progressDeadlineSeconds": 180,
                             "canary": {"steps": [{"setWeight": 50}, {"pause": {"durationSeconds": 10}}]}}
    md["spec"]["drift"] = {**DRIFT, "reference": {"storageUri": model_store.uri("classifier/reference_profile.json"),
                                                  "digest": profile_digest}}
    md["spec"]["retraining"] = {
        "enabled": True, "image": retrain_image, "outputStorageUri": model_store.uri("retrained"),
        "dataStorageUri": model_store.uri("data/shifted.npz"), "trigger": {"cooldownSeconds": 3600},
        "trainableModel": {"storageUri": model_store.uri("classifier/model.pt"), "digest": pt_digest},
        "args": ["--threads=1", "--epochs=40", "--lr=0.01", "--min-metric=0.8"],  # an absolute floor, too
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "3Gi"}}}
    api.create_md(namespace, md)
    wait_until("Ready", lambda: converged(api, namespace, "drifty"), timeout=300)
    ip = service_ip(api, namespace, "drifty")
    url, monitor = f"http://{ip}:{c.HTTP_PORT}/v2/models/classifier/infer", f"http://{ip}:{c.DRIFT_PORT}"
    x, y = generator().synthetic_data(4000, seed=99)
    probe = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32",
                                    "data": x[0].tolist()}]}).encode()
    wait_until("the Service answers", lambda: _answers(url, probe), timeout=30)
    try:
        _loop(api, namespace, url, monitor, x, y)
        _promoted(api, namespace, url, model_store)
        _rejected(api, namespace, model_store)
        shown = kubectl(cluster, "get", "md", "drifty", "-n", namespace).stdout
        status = kubectl_tritonops(cluster, "status", "drifty", "-n", namespace)
        print(shown, status, kubectl_tritonops(cluster, "history", "drifty", "-n", namespace), sep="\n")
        # (the drift line shows the last reading: the old pods' declared drift, or the candidate's fresh monitors)
        assert "Rejected" in shown.splitlines()[1] and "\n  drift:   " in status and "(strategy Canary)" in status
        assert "retrain: Rejected" in status  # the last Job's outcome; the serving candidate is still version 2:
        assert f"candidate: {model_store.uri('retrained/2/model.onnx')} version 2" in status and "Promoted" in status
    finally:
        diagnostics(api, namespace, monitor, drift_prometheus)


def _loop(api: Api, namespace: str, url: str, monitor: str, x: np.ndarray, y: np.ndarray) -> None:

    with LabelledTraffic(url, x, y) as calm:
        wait_until("two calm windows", lambda: calm.errors or drift_of(api, namespace).get("windows", 0) >= 2,
                   timeout=120)
        assert not calm.errors, calm.errors[:3]
        joined = feedback(monitor, dict(calm.sent))
    status = drift_of(api, namespace)
    assert status["detected"] is False and status["score"] < 0.2, status
    assert joined["joined"] > 0, joined
    wait_until("quality measured", lambda: (drift_of(api, namespace).get("quality") or {}).get("pairs", 0) >= 50,
               timeout=60)
    assert drift_of(api, namespace)["quality"]["value"] > 0.8
    t0 = time.monotonic()
    with LabelledTraffic(url, *shifted(4000, 11, 2.0)) as storm:
        status = wait_until("drift declared", lambda: (d := drift_of(api, namespace)).get("detected") and d,
                            timeout=120)
        declared = time.monotonic() - t0
    assert not calm.errors and not storm.errors, (calm.errors + storm.errors)[:5]
    job = wait_until("a retraining Job", lambda: retraining_of(api, namespace).get("activeJob"), timeout=60)
    assert job == "drifty-retrain-1" and retraining_of(api, namespace)["trigger"] == "Drift"
    print(f"drift declared {declared:.0f} s after the shift (score {status['score']}, "
          f"{status['windows']} windows); Job {job} started")
    t1 = time.monotonic()
    state = wait_until("the Job's outcome", lambda: (r := retraining_of(api, namespace)).get("phase")
                       not in ("Running", None) and r, timeout=600)
    print(f"retraining: {state['phase']} after {time.monotonic() - t1:.0f} s: {state.get('message')}")
    assert state["phase"] == "Succeeded", state


def _promoted(api: Api, namespace: str, url: str, store: ModelStore) -> None:
    """The accepted candidate (its ONNX export: the model is served as ONNX) rolls out and serves."""
    candidate = retraining_of(api, namespace)["candidate"]
    assert candidate["storageUri"] == store.uri("retrained/2/model.onnx") and candidate["format"] == "onnx"
    metrics = candidate["metrics"]
    print(f"candidate {candidate['storageUri']}: accuracy {metrics['current']['accuracy']} -> "
          f"{metrics['candidate']['accuracy']} on the holdout; optimizations {metrics.get('optimizations')}")
    canary = wait_until("the candidate's canary", lambda: (s := (api.md(namespace, "drifty") or {}).get("status")
                                                          or {}).get("canaryRevision") or s.get("rollout", {})
                        .get("decision") == "Promoted", timeout=120)
    wait_until("promoted", lambda: retraining_of(api, namespace)["candidate"]["promotion"] == "Promoted",
               timeout=300)
    print(f"the candidate rolled out as canary {canary}")
    status = (api.md(namespace, "drifty") or {})["status"]
    assert status["history"][-1]["outcome"] == "CandidatePromoted"
    md = api.md(namespace, "drifty") or {}
    assert md["spec"]["model"]["storageUri"] == store.uri("classifier/model.onnx")  # spec never edited
    x, _ = shifted(8, 5, 2.0)
    body = json.dumps({"inputs": [{"name": "INPUT0", "shape": [8, 4], "datatype": "FP32",
                                   "data": x.ravel().tolist()}]}).encode()
    answer = wait_until("the candidate answers", lambda: _version(url, body) == "2" or None, timeout=120)
    assert answer


def _version(url: str, body: bytes) -> str | None:
    try:
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as resp:
            return str(json.loads(resp.read()).get("model_version"))
    except OSError:
        return None


def _rejected(api: Api, namespace: str, store: ModelStore) -> None:
    """A request on mislabelled data: the gate rejects the candidate, version 2 keeps serving."""
    api.patch_md(namespace, "drifty", {"metadata": {"annotations": {"tritonops.io/retrain": "second"}},
                                       "spec": {"retraining": {"dataStorageUri": store.uri("data/mislabelled.npz")}}})
    state = wait_until("the second Job's outcome", lambda: (r := retraining_of(api, namespace)).get("jobs") == 2
                       and r.get("phase") not in ("Running", None) and r, timeout=600)
    assert state["phase"] == "Rejected", state
    print(f"second retraining: {state['message']}")
    assert retraining_of(api, namespace)["serving"]["storageUri"] == store.uri("retrained/2/model.onnx")


@pytest.fixture
def retrain_image(real_node: RealNode) -> str:
    """The retraining image (runtime/ + torch, 3.3 GiB), imported into the real node on demand."""
    return import_retrain_image(real_node).name
