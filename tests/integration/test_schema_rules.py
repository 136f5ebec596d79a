"""The API server itself rejects invalid ModelDeployments with the schema's and CEL rules' messages."""

from __future__ import annotations

import copy
import json
from typing import Any

import kubernetes
import pytest

from tests.integration.support import Api, md_body

pytestmark = pytest.mark.cluster


def _message(err: kubernetes.client.ApiException) -> str:
    """The Status message the API server returned (JSON-decoded: '<' arrives escaped)."""
    message: str = json.loads(err.body)["message"]
    return message


def _set(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(body)
    node = out
    *parents, leaf = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    if value is None:
        node.pop(leaf, None)
    else:
        node[leaf] = value
    return out


GPU_MSG = ("KIND_GPU needs a GPU: set spec.resources.limits['nvidia.com/gpu'] (for example \"1\") "
           "or use kind KIND_CPU")
CASES: list[tuple[str, str, Any, str]] = [
    ("unknown-scheme", "spec.model.storageUri", "ftp://host/model.pt",
     "spec.model.storageUri must be s3://bucket/path, gs://bucket/path, http(s)://host/path, "
     "pvc://<claim>/<path> or file:///<path>"),
    ("pvc-without-path", "spec.model.storageUri", "pvc://claim-only", "pvc://<claim>/<path>"),
    ("gpu-group-without-gpu", "spec.resources", {"limits": {"memory": "1Gi"}}, GPU_MSG),
    ("bad-format", "spec.model.format", "pickle", 'supported values: "torchscript", "onnx", "tensorrt", "python"'),
    ("missing-model", "spec.model", None, "spec.model: Required value"),
    ("bad-digest", "spec.model.digest", "md5:abc", "spec.model.digest in body should match '^sha256:[a-f0-9]{64}$'"),
    ("batching-without-batch-size", "spec.runtime.triton",
     {"maxBatchSize": 0, "dynamicBatching": {}, "instanceGroups": [{"kind": "KIND_CPU"}]},
     "spec.runtime.triton.dynamicBatching needs batching: set spec.runtime.triton.maxBatchSize > 0 or remove "
     "dynamicBatching"),
    ("preferred-over-max", "spec.runtime.triton",
     {"maxBatchSize": 4, "dynamicBatching": {"preferredBatchSize": [8]}, "instanceGroups": [{"kind": "KIND_CPU"}]},
     "spec.runtime.triton.dynamicBatching.preferredBatchSize: every size must be <= maxBatchSize"),
    ("gpus-on-cpu-group", "spec.runtime.triton", {"instanceGroups": [{"kind": "KIND_CPU", "gpus": [0]}]},
     "gpus applies only to KIND_GPU instance groups: remove gpus or set kind: KIND_GPU"),
    ("two-version-policies", "spec.runtime.triton",
     {"instanceGroups": [{"kind": "KIND_CPU"}], "versionPolicy": {"all": {}, "latest": {"numVersions": 1}}},
     "spec.runtime.triton.versionPolicy: set exactly one of latest, all or specific"),
    ("managed-arg", "spec.runtime.args", ["--model-control-mode=explicit"],
     "spec.runtime.args must not set flags the operator manages"),
    ("wrapper-for-tensorrt", "spec.model.format", "tensorrt",
     "spec.runtime.triton.backend PythonWrapper serves only torchscript or onnx models"),
    ("weight-over-100", "spec.rollout", {"strategy": "Canary", "canary": {"steps": [{"setWeight": 120}]}},
     "should be less than or equal to 100"),
    ("decreasing-weights", "spec.rollout",
     {"strategy": "Canary", "canary": {"steps": [{"setWeight": 50}, {"setWeight": 10}]}},
     "spec.rollout.canary.steps: setWeight values must not decrease"),
    ("two-actions-in-a-step", "spec.rollout",
     {"strategy": "Canary", "canary": {"steps": [{"setWeight": 10, "pause": {}}]}},
     "each spec.rollout.canary.steps[] entry sets exactly one of setWeight, pause, analysis"),
    ("canary-without-steps", "spec.rollout", {"strategy": "Canary"},
     "spec.rollout.strategy Canary needs spec.rollout.canary.steps"),
    ("min-over-max-replicas", "spec.autoscaling",
     {"minReplicas": 5, "maxReplicas": 2, "metrics": [{"type": "QueueTime", "target": 50000}]},
     "spec.autoscaling.minReplicas must be <= maxReplicas"),
    ("drift-without-reference", "spec.drift", {"enabled": True},
     "spec.drift.enabled needs spec.drift.reference.storageUri"),
    ("retraining-without-output", "spec.retraining", {"enabled": True},
     "spec.retraining.enabled needs spec.retraining.outputStorageUri"),
    ("negative-replicas", "spec.replicas", -1, "spec.replicas in body should be greater than or equal to 0"),
    ("gpu-request-without-limit", "spec.resources", {"requests": {"nvidia.com/gpu": 1}, "limits": {"cpu": "1"}},
     "spec.resources.requests['nvidia.com/gpu'] needs the same value in spec.resources.limits['nvidia.com/gpu']"),
    ("threshold-without-bounds", "spec.rollout",
     {"strategy": "Canary", "canary": {"steps": [{"setWeight": 10}],
                                       "analysis": {"metrics": [{"name": "ErrorRate", "thresholdRange": {}}]}}},
     "thresholdRange needs a bound: set max (fail above it) or min (fail below it)"),
    ("prometheus-metric-without-query", "spec.autoscaling",
     {"maxReplicas": 3, "metrics": [{"type": "Prometheus", "target": 10}]},
     "autoscaling metric of type Prometheus needs query: set it to a PromQL expression"),
    ("drift-reference-bad-scheme", "spec.drift",
     {"enabled": True, "reference": {"storageUri": "ftp://host/profile.json"}},
     "spec.drift.reference.storageUri must be an s3://, gs://, http(s)://, pvc:// or file:/// URI"),
    ("custom-check-without-query", "spec.rollout",
     {"strategy": "Canary", "canary": {"steps": [{"setWeight": 10}],
                                       "analysis": {"metrics": [{"name": "Mine", "thresholdRange": {"max": 1}}]}}},
     "spec.rollout.canary.analysis.metrics[]: set query, or use a built-in name"),
    ("analysis-step-without-analysis", "spec.rollout",
     {"strategy": "Canary", "canary": {"steps": [{"setWeight": 10}, {"analysis": {"durationSeconds": 60}}]}},
     "spec.rollout.canary.steps has an analysis step: set spec.rollout.canary.analysis.metrics"),
    ("prometheus-not-a-url", "spec.rollout",
     {"strategy": "Canary", "canary": {"steps": [{"setWeight": 10}], "analysis": {
         "prometheus": {"address": "prometheus:9090"},
         "metrics": [{"name": "ErrorRate", "thresholdRange": {"max": 0.01}}]}}},
     "spec.rollout.canary.analysis.prometheus.address must be an http:// or https:// URL"),
    ("userinfo-in-uri", "spec.model.storageUri", "https://alice:s3cret@models.example.com/m.onnx",
     "spec.model.storageUri must not carry credentials"),
    ("signed-query-in-uri", "spec.model.storageUri",
     "https://bucket.s3.amazonaws.com/m.onnx?X-Amz-Credential=AKIA%2F&X-Amz-Signature=abc",
     "spec.model.storageUri must not carry credentials"),
    ("sas-token-in-reference", "spec.drift", {"enabled": True, "reference": {
        "storageUri": "https://acct.blob.core.windows.net/c/p.json?sv=2022&sig=abc"}},
     "spec.drift.reference.storageUri must not carry credentials"),
    ("bad-max-size", "spec.model.maxSize", "lots", "spec.model.maxSize in body should match"),
    ("rolling-without-room", "spec.rollout", {"strategy": "Rolling", "rolling": {"maxSurge": "0%"}},
     "spec.rollout.rolling: maxSurge and maxUnavailable cannot both be 0"),
    ("rolling-bad-percent", "spec.rollout", {"strategy": "Rolling", "rolling": {"maxUnavailable": "150%"}},
     "spec.rollout.rolling.maxUnavailable in body should match"),
]


@pytest.mark.parametrize(("case", "path", "value", "message"), CASES, ids=[c[0] for c in CASES])
def test_api_server_rejects(api: Api, namespace: str, case: str, path: str, value: Any, message: str) -> None:
    body = _set(md_body("rejected"), path, value)
    if case == "wrapper-for-tensorrt":
        body = _set(body, "spec.runtime.triton.backend", "PythonWrapper")
    with pytest.raises(kubernetes.client.ApiException) as err:
        api.create_md(namespace, body)
    assert err.value.status == 422
    assert message in _message(err.value), err.value.body


def test_long_names_are_rejected(api: Api, namespace: str) -> None:
    body = md_body("x" * 46)
    with pytest.raises(kubernetes.client.ApiException) as err:
        api.create_md(namespace, body)
    assert "metadata.name must be at most 45 characters" in _message(err.value)


def test_model_name_is_immutable(api: Api, namespace: str) -> None:
    api.create_md(namespace, md_body("immutable"))
    with pytest.raises(kubernetes.client.ApiException) as err:
        api.patch_md(namespace, "immutable", {"spec": {"model": {"name": "other"}}})
    assert "spec.model.name is immutable" in _message(err.value)


def test_valid_spec_is_defaulted(api: Api, namespace: str) -> None:
    md = api.create_md(namespace, md_body("defaults"))
    assert md["spec"]["runtime"]["image"].startswith("nvcr.io/nvidia/tritonserver:")
    assert md["spec"]["runtime"]["triton"]["backend"] == "Native"
    assert md["spec"]["rollout"] == {"strategy": "Rolling", "progressDeadlineSeconds": 600,
                                     "revisionHistoryLimit": 10, "paused": False}
    assert md["spec"]["model"]["version"] == 1
