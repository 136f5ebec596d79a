"""ModelDeployments served by real pods: the fetcher pulls from a real S3 server, real tritonserver loads the
model, the kubelet runs the probes on Triton's own health endpoints, kube-proxy routes the Service.

Every namespace enforces Pod Security ``restricted``, so each pod here was admitted under it. The bridge CNI
plugin does not enforce NetworkPolicy, so neither the operator's nor Triton's NetworkPolicy is exercised here.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tests.e2e.conftest import ModelStore, local_md
from tests.integration.support import Api, OperatorProcess, converged, kubectl, wait_until
from tritonops.devcluster.nodeconf import REAL_NODE_LABEL, REAL_NODE_TOLERATION
from tritonops.devcluster.realnode import RealNode
from tritonops.devcluster.session import ClusterHandle
from tritonops_runtime import contract as c

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.slow]
MODEL = "classifier"


def service_ip(api: Api, ns: str, name: str) -> str:
    ip: str = api.core.read_namespaced_service(name, ns).spec.cluster_ip
    return ip


def samples(store: ModelStore) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and the outputs torch gave for them when the example was made."""
    data = json.loads((store.example.dir / "sample.json").read_text())
    return np.array(data["inputs"], dtype=np.float32), np.array(data["outputs"], dtype=np.float32)


def degraded(api: Api, ns: str, name: str, reason: str) -> dict[str, Any] | None:
    cond = api.condition(ns, name, "Degraded")
    return cond if cond and cond["status"] == "True" and cond["reason"] == reason else None


def test_example_answers_over_http_and_grpc_through_the_service(
        api: Api, cluster: ClusterHandle, namespace: str, real_node: RealNode, model_store: ModelStore,
        store_secret: str, e2e_operator: OperatorProcess) -> None:
    api.create_md(namespace, local_md("clf", model_store.uri("classifier/model.onnx"), digest=model_store.digest))
    wait_until("clf Ready", lambda: converged(api, namespace, "clf"), timeout=300)

    pods = api.core.list_namespaced_pod(namespace, label_selector="tritonops.io/modeldeployment=clf").items
    assert [p.spec.node_name for p in pods] == [real_node.name]
    fetch = pods[0].status.init_container_statuses[0].state.terminated
    assert fetch.exit_code == 0 and model_store.digest in fetch.message  # the fetcher's report
    assert api.core.read_namespace(namespace).metadata.labels["pod-security.kubernetes.io/enforce"] == "restricted"

    x, expected = samples(model_store)
    ip = service_ip(api, namespace, "clf")
    http = httpclient.InferenceServerClient(f"{ip}:{c.HTTP_PORT}")
    grpc = grpcclient.InferenceServerClient(f"{ip}:{c.GRPC_PORT}")
    try:
        hin = httpclient.InferInput("INPUT0", list(x.shape), "FP32")
        hin.set_data_from_numpy(x)
        gin = grpcclient.InferInput("INPUT0", list(x.shape), "FP32")
        gin.set_data_from_numpy(x)
        by_http = http.infer(MODEL, [hin]).as_numpy("OUTPUT0")
        by_grpc = grpc.infer(MODEL, [gin]).as_numpy("OUTPUT0")
    finally:
        http.close()
        grpc.close()
    np.testing.assert_allclose(by_http, expected, atol=1e-5)
    np.testing.assert_allclose(by_grpc, expected, atol=1e-5)

    # From inside the pod (kubectl exec through the API server to the kubelet): the Service, which sends
    # the pod back to itself (hairpin), and Triton's logs through kubectl logs.
    probe = f"import urllib.request as u; print(u.urlopen('http://{ip}:{c.HTTP_PORT}{c.HEALTH_READY_PATH}').status)"
    pod = pods[0].metadata.name
    inside = kubectl(cluster, "exec", "-n", namespace, pod, "-c", "triton", "--", "python3", "-c", probe)
    assert inside.stdout == "200\n"
    assert "Started HTTPService" in kubectl(cluster, "logs", "-n", namespace, pod, "-c", "triton").stdout


def test_wrong_digest_reports_the_fetchers_message(
        api: Api, namespace: str, model_store: ModelStore, store_secret: str, e2e_operator: OperatorProcess) -> None:
    wrong = "sha256:" + "0" * 64
    api.create_md(namespace, local_md("bad-digest", model_store.uri("classifier/model.onnx"), digest=wrong))
    cond = wait_until("Degraded/ModelFetchFailed",
                      lambda: degraded(api, namespace, "bad-digest", "ModelFetchFailed"), timeout=180)
    assert f"digest mismatch for s3://models/classifier/model.onnx: expected {wrong}, found {model_store.digest}" \
        in cond["message"]


def test_model_triton_cannot_load_reports_model_load_failed(
        api: Api, namespace: str, model_store: ModelStore, store_secret: str, e2e_operator: OperatorProcess) -> None:
    api.create_md(namespace, local_md("broken", model_store.uri("broken/model.onnx")))
    cond = wait_until("Degraded/ModelLoadFailed",
                      lambda: degraded(api, namespace, "broken", "ModelLoadFailed"), timeout=240)
    assert "pod broken-" in cond["message"]
    md = api.md(namespace, "broken") or {}
    ready = api.condition(namespace, "broken", "Ready")
    assert ready and ready["status"] == "False", md.get("status")


@dataclass
class Load:
    """Closed-loop HTTP inference through the Service: one new connection per request, bounded in count and time."""

    url: str
    body: bytes
    limit: int = 50_000  # ~150 requests/s here: a rollout of about a minute stays well inside
    seconds: float = 240.0
    ok: int = 0
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        deadline = time.monotonic() + self.seconds
        while not self.stop.is_set() and self.ok + len(self.errors) < self.limit and time.monotonic() < deadline:
            try:
                outputs = _infer(self.url, self.body)["outputs"]
                assert outputs[0]["name"] == "OUTPUT0" and len(outputs[0]["data"]) == 3
                self.ok += 1
            except Exception as err:
                self.errors.append(f"{time.strftime('%H:%M:%S')} {type(err).__name__}: {err}")


def _infer(url: str, body: bytes, timeout: float = 10) -> dict[str, Any]:
    """One inference over HTTP/JSON on a new connection (the Service balances connections)."""
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        answer: dict[str, Any] = json.loads(resp.read())
        return answer


def _answers(url: str, body: bytes) -> bool:
    try:
        return bool(_infer(url, body, timeout=5))
    except OSError:
        return False


def _serving_version_1(api: Api, namespace: str, store: ModelStore, name: str) -> tuple[str, str, bytes]:
    """Deploy the example as version 1 and wait until it is Ready: (stable revision, infer URL, request body)."""
    api.create_md(namespace, local_md(name, store.uri("classifier/model.onnx"), digest=store.digest, version=1))
    stable = wait_until(f"{name} Ready", lambda: converged(api, namespace, name), timeout=300)
    x, _ = samples(store)
    body = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32",
                                   "data": x[0].tolist()}]}).encode()
    url = f"http://{service_ip(api, namespace, name)}:{c.HTTP_PORT}/v2/models/{MODEL}/infer"
    # Ready says the pods are; kube-proxy programs the Service a moment later (until then: connection refused).
    wait_until("the Service answers", lambda: _answers(url, body), timeout=30)
    return stable["status"]["stableRevision"], url, body


def test_new_model_version_rolls_out_without_a_failed_request(
        api: Api, namespace: str, model_store: ModelStore, store_secret: str, e2e_operator: OperatorProcess) -> None:
    first, url, body = _serving_version_1(api, namespace, model_store, "roll")
    load = Load(url, body)
    thread = threading.Thread(target=load.run, daemon=True)
    thread.start()
    try:
        wait_until("requests flowing", lambda: load.ok >= 20 or load.errors, timeout=30)
        api.patch_md(namespace, "roll", {"spec": {"model": {"version": 2}}})

        def rolled() -> dict[str, Any] | None:
            md = converged(api, namespace, "roll")
            return md if md and md["status"]["stableRevision"] != first else None

        wait_until("version 2 stable", rolled, timeout=300)
        wait_until("old revision scaled down", lambda: not [
            d for d in api.deployments(namespace, "roll") if d.metadata.name == first and d.status.replicas],
            timeout=120)
        served = load.ok
        wait_until("requests after the rollout",
                   lambda: load.ok >= served + 20 or load.errors or not thread.is_alive(), timeout=30)
        assert thread.is_alive(), f"the load ended early (limit {load.limit} or {load.seconds:.0f}s) after {load.ok}"
    finally:
        load.stop.set()
        thread.join(30)
    assert not load.errors, f"{len(load.errors)} of {load.ok + len(load.errors)} requests failed: {load.errors[:5]}"
    assert load.ok >= 40
    print(f"{load.ok} requests through the rollout, none failed")


def test_an_image_that_was_not_imported_fails_without_leaving_the_machine(
        api: Api, namespace: str, real_node: RealNode) -> None:
    restricted = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True,
                  "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}}
    api.core.create_namespaced_pod(namespace, {"metadata": {"name": "nowhere"}, "spec": {
        "nodeSelector": {REAL_NODE_LABEL: "true"}, "tolerations": [REAL_NODE_TOLERATION],
        "containers": [{"name": "c", "image": "registry.example.invalid/nothing:1", "securityContext": restricted}]}})

    def pull_error() -> str | None:
        statuses = api.core.read_namespaced_pod("nowhere", namespace).status.container_statuses or []
        waiting = statuses[0].state.waiting if statuses else None
        return waiting.message if waiting and waiting.reason in ("ErrImagePull", "ImagePullBackOff") else None

    message = wait_until("the pull to fail", pull_error, timeout=60)
    assert "127.0.0.1:9" in message, message  # the registry request went to the closed loopback proxy


def _versions(url: str, body: bytes, count: int) -> dict[str, int]:
    """Send ``count`` requests, each on a new connection; count the model versions that answered."""
    seen: dict[str, int] = {}
    for _ in range(count):
        version = _infer(url, body)["model_version"]
        seen[version] = seen.get(version, 0) + 1
    return seen


def test_canary_splits_real_traffic_by_replicas_then_takes_it_all(
        api: Api, namespace: str, model_store: ModelStore, store_secret: str, e2e_operator: OperatorProcess) -> None:
    stable, url, body = _serving_version_1(api, namespace, model_store, "can")
    api.patch_md(namespace, "can", {"spec": {"model": {"version": 2}, "rollout": {
        "strategy": "Canary", "canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}}})

    def paused() -> dict[str, Any] | None:
        md = api.md(namespace, "can") or {}
        return md if md.get("status", {}).get("rollout", {}).get("decision") == "Paused" else None

    md = wait_until("canary paused at 50%", paused, timeout=300)
    canary = md["status"]["canaryRevision"]
    assert md["status"]["canaryWeight"] == 50  # one canary pod beside one stable pod
    wait_until("both revisions in the Service", lambda: len(_versions(url, body, 20)) == 2, timeout=30)
    split = _versions(url, body, 200)
    assert split.keys() == {"1", "2"} and min(split.values()) >= 60, split  # ~100 each; < 60 is p < 1e-8
    print(f"200 requests at weight 50: {split} (model version: requests)")

    api.custom.patch_namespaced_custom_object("tritonops.io", "v1alpha1", namespace, "modeldeployments", "can",
                                              {"metadata": {"annotations": {"tritonops.io/promote": canary}}})
    wait_until("canary stable", lambda: (m := converged(api, namespace, "can"))
               and m["status"]["stableRevision"] == canary, timeout=300)
    wait_until("old pods gone", lambda: not api.core.list_namespaced_pod(
        namespace, label_selector=f"tritonops.io/revision={stable}").items, timeout=120)
    assert _versions(url, body, 50) == {"2": 50}
