"""The retraining Job of a ModelDeployment (pure): one per retraining run, named ``<md>-retrain-<n>``.

The container is ``spec.retraining``'s image; without a ``command`` of the user's it runs the runtime's
``tritonops-retrain`` with the serving model, the new data and the model store as flags (each also in the
environment, ``TRITONOPS_MODEL_URI`` ..., for a command of the user's), and the user's ``args`` after
them. Its result is the container's termination message (JSON: decision, storageUri, version, digest,
metrics), which the operator reads from the Job's pod. A rejection by the evaluation gate (exit status
``RETRAIN_EXIT_REJECTED``) fails the Job at once (``podFailurePolicy``) instead of being retried.

The pod carries none of the serving labels (a retraining pod must never receive inference traffic nor
count as a replica); it is found through the Job. It runs restricted like the model pods, with the model
store's credentials as the same optional Secret keys, on the model's placement (GPU toleration when it
asks for GPUs).
"""

from __future__ import annotations

from typing import Any

from tritonops.builders.deployment import GPU, GPU_TOLERATION, UID
from tritonops.builders.meta import (
    LABEL_COMPONENT,
    LABEL_MANAGED_BY,
    LABEL_MD,
    LABEL_PART_OF,
    MANAGED_BY,
    Owner,
    metadata,
)
from tritonops_runtime import contract as c

LABEL_RETRAINING_OF = "tritonops.io/retraining-of"


def job_name(md_name: str, number: int) -> str:
    """The n-th retraining Job of a ModelDeployment (names stay under 63 characters: md names are <= 45)."""
    return f"{md_name}-retrain-{number}"


def job_labels(md_name: str) -> dict[str, str]:
    """Labels of the Job object (listed by the operator like its other children)."""
    return {LABEL_MD: md_name, LABEL_COMPONENT: "retraining", LABEL_MANAGED_BY: MANAGED_BY,
            LABEL_PART_OF: "tritonops"}


def _env(spec: dict[str, Any], model: dict[str, Any], trigger: str) -> list[dict[str, Any]]:
    retraining = spec["retraining"]
    values = [(c.ENV_RETRAIN_MODEL_URI, model["storageUri"]), (c.ENV_RETRAIN_MODEL_DIGEST, model.get("digest", "")),
              (c.ENV_RETRAIN_DATA_URI, retraining.get("dataStorageUri", "")),
              (c.ENV_RETRAIN_OUTPUT_URI, retraining["outputStorageUri"]), (c.ENV_RETRAIN_TRIGGER, trigger),
              (c.ENV_MODEL_NAME, model["name"]), (c.ENV_MODEL_VERSION, str(model.get("version", 1))),
              (c.ENV_MODEL_FORMAT, model["format"]), (c.ENV_PVC_ROOT, c.PVC_ROOT)]
    env = [{"name": k, "value": v} for k, v in values if v]
    secret = model.get("credentials", {}).get("secretName")
    if secret:
        env += [{"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": True}}}
                for key in c.CREDENTIAL_ENV_KEYS]
    return env


def _command(retraining: dict[str, Any], model: dict[str, Any], served_format: str) -> dict[str, Any]:
    if retraining.get("command"):
        return {"command": list(retraining["command"]), "args": list(retraining.get("args", []))}
    flags = [f"--model-uri=$({c.ENV_RETRAIN_MODEL_URI})", f"--output-uri=$({c.ENV_RETRAIN_OUTPUT_URI})",
             f"--parent-version={model.get('version', 1)}"]
    if served_format == "onnx":  # the candidate must be servable the same way
        flags.append("--onnx")
    if retraining.get("dataStorageUri"):
        flags.append(f"--data-uri=$({c.ENV_RETRAIN_DATA_URI})")
    if model.get("digest"):
        flags.append(f"--model-digest=$({c.ENV_RETRAIN_MODEL_DIGEST})")
    return {"command": ["tritonops-retrain"], "args": flags + list(retraining.get("args", []))}


def _pod_spec(spec: dict[str, Any], model: dict[str, Any], trigger: str, served_format: str) -> dict[str, Any]:
    retraining = spec["retraining"]
    resources = retraining.get("resources") or {}
    container = {
        "name": c.RETRAIN_CONTAINER, "image": retraining["image"], **_command(retraining, model, served_format),
        "env": _env(spec, model, trigger), "resources": resources,
        "volumeMounts": [{"name": "scratch", "mountPath": c.SCRATCH_DIR}],
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "terminationMessagePath": c.TERMINATION_LOG, "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod: dict[str, Any] = {
        "restartPolicy": "Never", "automountServiceAccountToken": False, "enableServiceLinks": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID, "fsGroup": UID,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container], "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": "20Gi"}}],
    }
    tolerations = list(spec.get("tolerations", []))
    if any(GPU in (resources.get(k) or {}) for k in ("limits", "requests")):
        tolerations.append(GPU_TOLERATION)
    for key, value in (("nodeSelector", spec.get("nodeSelector")), ("tolerations", tolerations),
                       ("serviceAccountName", spec.get("serviceAccountName"))):
        if value:
            pod[key] = value
    return pod


def build_job(owner: Owner, spec: dict[str, Any], model: dict[str, Any], number: int, trigger: str,
              served_format: str = "") -> dict[str, Any]:
    """The ``number``-th retraining Job, training from ``model`` (what the serving model is trained from);
    ``served_format``: the format the model is served in (ONNX: the Job exports the candidate to ONNX too)."""
    retraining = spec["retraining"]
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": metadata(job_name(owner.name, number), owner, job_labels(owner.name),
                             {"tritonops.io/trigger": trigger}),
        "spec": {
            "backoffLimit": int(retraining.get("backoffLimit", 1)),
            "activeDeadlineSeconds": int(retraining.get("activeDeadlineSeconds", 3600)),
            "podFailurePolicy": {"rules": [{"action": "FailJob", "onExitCodes": {
                "containerName": c.RETRAIN_CONTAINER, "operator": "In", "values": [c.RETRAIN_EXIT_REJECTED]}}]},
            "template": {"metadata": {"labels": {LABEL_RETRAINING_OF: owner.name, LABEL_COMPONENT: "retraining",
                                                 LABEL_MANAGED_BY: MANAGED_BY}},
                         "spec": _pod_spec(spec, model, trigger, served_format)},
        },
    }
