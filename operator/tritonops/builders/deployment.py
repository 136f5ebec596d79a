"""The Triton Deployment of one revision: fetch the model in an init container, serve it with Triton.

The pod passes Pod Security ``restricted``, is scraped by Prometheus on the metrics port and gets GPU
tolerations when it requests ``nvidia.com/gpu``. Paths, ports and environment come from
:mod:`tritonops_runtime.contract`, the same module the fetcher reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tritonops.builders.meta import (
    LABEL_REVISION,
    Owner,
    common_labels,
    config_map_name,
    metadata,
    selector_labels,
    stamp_hash,
)
from tritonops.builders.monitor import capture_mount, capture_volumes, drift_enabled, monitor_container, trace_args
from tritonops.diff import parse_quantity
from tritonops_runtime import contract as c

GPU = "nvidia.com/gpu"
GPU_TOLERATION = {"key": GPU, "operator": "Exists", "effect": "NoSchedule"}
UID = 10001  # pods run as a high UID that no host account shares (kube-score; runtime/Dockerfile)
# A terminating pod keeps serving this long before tritonserver gets SIGTERM: endpoint removal reaches
# kube-proxy (and Gateways, load balancers) asynchronously, and until it has, new connections still arrive
# at this pod. Without it a rollout refuses connections (seen on the real node: 50 of 11,036 requests).
DRAIN_SECONDS = 5


@dataclass(frozen=True)
class BuildOptions:
    """Operator-level settings the builders need (passed in; builders read no globals)."""

    runtime_image: str = "ghcr.io/tritonops/tritonops-runtime:0.1.0"
    runtime_pull_policy: str = "IfNotPresent"
    prometheus_url: str = ""  # the operator's Prometheus (canary analysis; KEDA's ScaledObjects query it)


ANNOTATION_TEMPLATE = "tritonops.io/template-version"
# Bumped whenever these builders change a revision's pod template for an unchanged spec (2: latency
# summaries for canary analysis). A Deployment of an earlier version is frozen: see tritonops.revisions.
TEMPLATE_VERSION = "2"


def requests_gpu(spec: dict[str, Any]) -> bool:
    """Whether the Triton container asks for GPUs."""
    limits = spec.get("resources", {}).get("limits", {})
    return GPU in limits and str(limits[GPU]) not in ("0", "")


def _restricted(read_only_root: bool = True) -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": read_only_root, "runAsNonRoot": True}


DEFAULT_MAX_SIZE = "20Gi"


def max_size(spec: dict[str, Any]) -> tuple[str, int, bool]:
    """``spec.model.maxSize`` as (quantity, bytes, set explicitly); the fetcher's 20Gi by default."""
    given = spec["model"].get("maxSize")
    quantity = str(given if given is not None else DEFAULT_MAX_SIZE)
    number = parse_quantity(quantity)
    return quantity, int(number) if number is not None else c.DEFAULT_MAX_BYTES, given is not None


def _with_ephemeral(resources: dict[str, Any], amount: int) -> dict[str, Any]:
    requests = {**resources.get("requests", {}), "ephemeral-storage": str(amount)}
    return {**resources, "requests": requests}


def _fetch_resources(spec: dict[str, Any]) -> dict[str, Any]:
    """The fetcher's resources; with maxSize set, room for the archive and its unpacked files at once."""
    resources = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}}
    _, size, explicit = max_size(spec)
    return _with_ephemeral(resources, 2 * size) if explicit else resources


def _fetch_env(spec: dict[str, Any]) -> list[dict[str, Any]]:
    model, triton = spec["model"], spec.get("runtime", {}).get("triton", {})
    values = [
        (c.ENV_STORAGE_URI, model["storageUri"]),
        (c.ENV_MODEL_NAME, model["name"]),
        (c.ENV_MODEL_VERSION, str(model.get("version", 1))),
        (c.ENV_MODEL_FORMAT, model["format"]),
        (c.ENV_MODEL_DIGEST, model.get("digest", "")),
        (c.ENV_BACKEND, triton.get("backend", c.BACKEND_NATIVE)),
        (c.ENV_REPOSITORY, c.MODEL_REPOSITORY),
        (c.ENV_CONFIG_FILE, f"{c.CONFIG_DIR}/{c.CONFIG_FILE}"),
        (c.ENV_PVC_ROOT, c.PVC_ROOT),
        (c.ENV_MAX_BYTES, str(max_size(spec)[1])),
    ]
    # The API server drops empty values, which would read back as a difference: leave them out.
    return [{"name": k, "value": v} for k, v in values if v]


def pvc_claim(storage_uri: str) -> str:
    """The claim name of a ``pvc://<claim>/<path>`` URI, else ''."""
    if not storage_uri.startswith("pvc://"):
        return ""
    return storage_uri[len("pvc://"):].split("/", 1)[0]


def _fetch_container(spec: dict[str, Any], opts: BuildOptions) -> dict[str, Any]:
    mounts = [{"name": "models", "mountPath": c.MODEL_REPOSITORY},
              {"name": "config", "mountPath": c.CONFIG_DIR, "readOnly": True},
              {"name": "scratch", "mountPath": c.SCRATCH_DIR}]
    if pvc_claim(spec["model"]["storageUri"]):
        mounts.append({"name": "model-pvc", "mountPath": c.PVC_ROOT, "readOnly": True})
    container: dict[str, Any] = {
        "name": "fetch-model", "image": opts.runtime_image, "imagePullPolicy": opts.runtime_pull_policy,
        "command": ["tritonops-fetch"], "env": _fetch_env(spec), "volumeMounts": mounts,
        "resources": _fetch_resources(spec),
        "securityContext": _restricted(), "terminationMessagePath": c.TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    secret = spec["model"].get("credentials", {}).get("secretName")
    if secret:  # only the keys the fetcher reads, each optional: never the whole Secret (envFrom)
        container["env"] = container["env"] + [
            {"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": True}}}
            for key in c.CREDENTIAL_ENV_KEYS]
    return container


def triton_args(runtime: dict[str, Any]) -> list[str]:
    """tritonserver arguments: the pod contract first, the user's extra args last.

    Latency summaries (p50/p90/p99 per model) are on: the canary's LatencyP99Ms and QueueTimeP99Ms checks
    read them.
    """
    return [
        f"--model-repository={c.MODEL_REPOSITORY}", "--model-control-mode=none", "--strict-readiness=true",
        f"--exit-timeout-secs={runtime.get('exitTimeoutSeconds', 30)}", f"--http-port={c.HTTP_PORT}",
        f"--grpc-port={c.GRPC_PORT}", f"--metrics-port={c.METRICS_PORT}", "--metrics-config=summary_latencies=true",
        *runtime.get("args", []),
    ]


def _probes(runtime: dict[str, Any]) -> dict[str, Any]:
    def http(path: str, period: int, failures: int, timeout: int) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": "http"}, "periodSeconds": period,
                "failureThreshold": failures, "timeoutSeconds": timeout}

    # The startup probe absorbs slow model loads; liveness only starts once the model is up.
    startup_failures = math.ceil(runtime.get("startupTimeoutSeconds", 600) / 10)
    return {"startupProbe": http(c.HEALTH_READY_PATH, 10, startup_failures, 5),
            "readinessProbe": http(c.HEALTH_READY_PATH, 5, 3, 3),
            "livenessProbe": http(c.HEALTH_LIVE_PATH, 15, 4, 5)}


def _triton_container(spec: dict[str, Any]) -> dict[str, Any]:
    runtime = spec.get("runtime", {})
    ports = [{"name": "http", "containerPort": c.HTTP_PORT, "protocol": "TCP"},
             {"name": "grpc", "containerPort": c.GRPC_PORT, "protocol": "TCP"},
             {"name": "metrics", "containerPort": c.METRICS_PORT, "protocol": "TCP"}]
    mounts = [{"name": "models", "mountPath": c.MODEL_REPOSITORY, "readOnly": True},
              {"name": "shm", "mountPath": "/dev/shm"}, {"name": "scratch", "mountPath": c.SCRATCH_DIR}]
    args = triton_args(runtime)
    if drift_enabled(spec):
        args, mounts = [*args, *trace_args(spec["drift"])], [*mounts, capture_mount()]
    return {
        "name": "triton", "image": runtime.get("image", ""),
        "imagePullPolicy": runtime.get("imagePullPolicy", "IfNotPresent"),
        "command": ["tritonserver"], "args": args, "ports": ports,
        **_probes(runtime), "lifecycle": {"preStop": {"sleep": {"seconds": DRAIN_SECONDS}}},
        "resources": _serving_resources(spec), "volumeMounts": mounts,
        "securityContext": _restricted(), "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def _serving_resources(spec: dict[str, Any]) -> dict[str, Any]:
    """The user's resources, plus the model's maxSize as an ephemeral-storage request when it is set."""
    _, size, explicit = max_size(spec)
    resources: dict[str, Any] = spec.get("resources", {})
    return _with_ephemeral(resources, size) if explicit else resources


def _volumes(spec: dict[str, Any], revision: str) -> list[dict[str, Any]]:
    limit = max_size(spec)[0]  # the kubelet evicts a pod whose volume grows past it
    volumes: list[dict[str, Any]] = [
        {"name": "models", "emptyDir": {"sizeLimit": limit}},
        {"name": "config", "configMap": {"name": config_map_name(revision)}},
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
        {"name": "scratch", "emptyDir": {"sizeLimit": limit}},
    ]
    claim = pvc_claim(spec["model"]["storageUri"])
    if claim:
        volumes.append({"name": "model-pvc", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
    if drift_enabled(spec):
        volumes += capture_volumes()
    return volumes


def _placement(spec: dict[str, Any]) -> dict[str, Any]:
    tolerations = list(spec.get("tolerations", []))
    if requests_gpu(spec) and GPU_TOLERATION not in tolerations:
        tolerations.append(GPU_TOLERATION)
    placement: dict[str, Any] = {}
    for key in ("nodeSelector", "affinity", "priorityClassName", "serviceAccountName"):
        if spec.get(key):
            placement[key] = spec[key]
    if tolerations:
        placement["tolerations"] = tolerations
    return placement


def build_pod_spec(spec: dict[str, Any], revision: str, opts: BuildOptions) -> dict[str, Any]:
    """The pod of one revision."""
    exit_timeout = spec.get("runtime", {}).get("exitTimeoutSeconds", 30)
    return {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID, "fsGroup": UID,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "initContainers": [_fetch_container(spec, opts)],
        "containers": [_triton_container(spec)] + ([monitor_container(
            spec, opts.runtime_image, opts.runtime_pull_policy, _restricted())] if drift_enabled(spec) else []),
        "volumes": _volumes(spec, revision),
        "terminationGracePeriodSeconds": DRAIN_SECONDS + exit_timeout + 5,
        **_placement(spec),
    }


def build_deployment(owner: Owner, revision: str, spec: dict[str, Any], replicas: int | None,
                     opts: BuildOptions) -> dict[str, Any]:
    """The Deployment serving ``revision``; ``replicas=None`` leaves scaling to an autoscaler."""
    labels = common_labels(owner.name, "inference-server", revision)
    match = {**selector_labels(owner.name), LABEL_REVISION: revision}
    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": match},
        # A revision's pod template never changes (a change is a new revision), so this only governs
        # scaling; never surge, a GPU node rarely has a spare GPU.
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
        "progressDeadlineSeconds": spec.get("rollout", {}).get("progressDeadlineSeconds", 600),
        "revisionHistoryLimit": 1,
        "template": {
            "metadata": {"labels": dict(labels), "annotations": {
                "prometheus.io/scrape": "true", "prometheus.io/port": str(c.METRICS_PORT),
                "prometheus.io/path": c.METRICS_PATH, "kubectl.kubernetes.io/default-container": "triton"}},
            "spec": build_pod_spec(spec, revision, opts),
        },
    }
    if replicas is not None:
        deployment_spec["replicas"] = replicas
    return stamp_hash({"apiVersion": "apps/v1", "kind": "Deployment",
                       "metadata": metadata(revision, owner, labels, {ANNOTATION_TEMPLATE: TEMPLATE_VERSION}),
                       "spec": deployment_spec})


def deployment_replicas(name: str, namespace: str, replicas: int) -> dict[str, Any]:
    """Only ``spec.replicas`` of an existing Deployment (applied under its own field manager)."""
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": replicas}}
