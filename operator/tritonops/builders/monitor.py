"""The drift-monitor sidecar of a revision's pod, and what Triton needs to feed it (pure).

With ``spec.drift.enabled`` Triton samples requests itself (trace level ``TIMESTAMPS`` + ``TENSORS``,
one of every ``round(100 / samplePercent)`` requests) into rotated files ``/capture/trace.json.<k>`` of
20 traces each, on a disk emptyDir shared with the sidecar (not tmpfs: Triton's writes would count
against its own memory limit). The trace write happens on a thread the response waits for, so the
directory is always local. The sidecar (``tritonops-drift-monitor`` from the runtime image) reads and
deletes those files, compares windows with the reference profile, scores labelled feedback, and serves
its metrics and ``POST /v1/feedback`` on port 8010 (named ``drift``).

It has no readiness probe: a monitor that cannot start must never take the model out of service. Its
liveness probe restarts it when it hangs. The flags mirror ``tritonops_runtime.drift.capture.trace_args``
(the runtime's tests check both agree).
"""

from __future__ import annotations

from typing import Any

from tritonops.api.schema_drift import DEFAULT_THRESHOLDS
from tritonops_runtime import contract as c

CAPTURE_VOLUME = "capture"
CAPTURE_SIZE = "1Gi"  # the sidecar keeps at most 32 files of 20 traces waiting; far below this
LOG_FREQUENCY = 20  # traces per file: a file (and so a window's rows) waits for this many sampled requests
MONITOR_RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}


def drift_enabled(spec: dict[str, Any]) -> bool:
    return bool((spec.get("drift") or {}).get("enabled"))


def sample_rate(percent: float) -> int:
    """Triton's trace ``rate``: one of every this many requests."""
    return max(1, round(100 / percent))


def trace_args(drift: dict[str, Any]) -> list[str]:
    """tritonserver flags that make it write sampled tensors for the sidecar."""
    trace_file = f"{c.CAPTURE_DIR}/{c.TRACE_FILE}"
    return [f"--trace-config=triton,file={trace_file}", f"--trace-config=triton,log-frequency={LOG_FREQUENCY}",
            "--trace-config=level=TIMESTAMPS", "--trace-config=level=TENSORS",
            f"--trace-config=rate={sample_rate(float(drift.get('samplePercent', 10)))}", "--trace-config=count=-1"]


def threshold(drift: dict[str, Any]) -> float:
    """The drift threshold asked for, or the method's own default."""
    method = drift.get("method", "psi")
    return float(drift["threshold"]) if "threshold" in drift else DEFAULT_THRESHOLDS[method]


def _args(spec: dict[str, Any]) -> list[str]:
    drift, model = spec["drift"], spec["model"]
    reference = drift["reference"]
    args = ["--trace-prefix", f"{c.CAPTURE_DIR}/{c.TRACE_FILE}", "--reference", reference["storageUri"],
            "--model", model["name"], "--input", model["inputs"][0]["name"],
            "--window-size", str(drift.get("windowSize", 5000)),
            "--interval-seconds", str(drift.get("intervalSeconds", 300)),
            "--method", drift.get("method", "psi"), "--threshold", f"{threshold(drift):g}",
            "--consecutive-windows", str(drift.get("consecutiveWindows", 3)),
            "--correction", drift.get("correction", "holm"),
            "--listen", f"0.0.0.0:{c.DRIFT_PORT}", "--state-file", c.DRIFT_STATE_FILE]
    if reference.get("digest"):
        args += ["--reference-digest", reference["digest"]]
    if model.get("outputs"):
        args += ["--output", model["outputs"][0]["name"]]
    quality = drift.get("quality")
    if quality:
        args += ["--quality-metric", quality["metric"], "--quality-minimum", f"{float(quality['minimum']):g}",
                 "--quality-window", str(quality.get("windowSize", 500)),
                 "--feedback-ttl-seconds", str(quality.get("feedbackTTLSeconds", 3600))]
    return args


def monitor_container(spec: dict[str, Any], image: str, pull_policy: str,
                      security: dict[str, Any]) -> dict[str, Any]:
    """The sidecar container (``security``: the pod's restricted container securityContext)."""
    container: dict[str, Any] = {
        "name": "drift-monitor", "image": image, "imagePullPolicy": pull_policy,
        "command": ["tritonops-drift-monitor"], "args": _args(spec),
        "ports": [{"name": "drift", "containerPort": c.DRIFT_PORT, "protocol": "TCP"}],
        "livenessProbe": {"httpGet": {"path": c.DRIFT_HEALTH_PATH, "port": "drift"}, "periodSeconds": 20,
                          "failureThreshold": 6, "timeoutSeconds": 5, "initialDelaySeconds": 30},
        "resources": MONITOR_RESOURCES,
        "volumeMounts": [{"name": CAPTURE_VOLUME, "mountPath": c.CAPTURE_DIR},
                         {"name": "monitor-scratch", "mountPath": c.SCRATCH_DIR}],
        "securityContext": security, "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    secret = spec["model"].get("credentials", {}).get("secretName")
    if secret:  # the reference profile is read like the model: the same keys of the same Secret
        container["env"] = [{"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key,
                                                                          "optional": True}}}
                            for key in c.CREDENTIAL_ENV_KEYS]
    return container


def capture_volumes() -> list[dict[str, Any]]:
    return [{"name": CAPTURE_VOLUME, "emptyDir": {"sizeLimit": CAPTURE_SIZE}},
            {"name": "monitor-scratch", "emptyDir": {"sizeLimit": "256Mi"}}]


def capture_mount() -> dict[str, Any]:
    """Triton's mount of the capture directory (it writes the trace files there)."""
    return {"name": CAPTURE_VOLUME, "mountPath": c.CAPTURE_DIR}
