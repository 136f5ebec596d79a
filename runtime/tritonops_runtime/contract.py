"""The contract between the pods the operator builds and the programs that run in them.

Paths, ports, file names and environment variable names live here and nowhere else. The operator
(``tritonops.builders``) imports this module; the runtime CLIs read the same names. Changing a value
here changes both sides at once.
"""

from typing import Final

# --- Triton ports (the NGC image defaults; also what the Service exposes) ------------------------
HTTP_PORT: Final = 8000
GRPC_PORT: Final = 8001
METRICS_PORT: Final = 8002
HEALTH_READY_PATH: Final = "/v2/health/ready"
HEALTH_LIVE_PATH: Final = "/v2/health/live"
METRICS_PATH: Final = "/metrics"

# --- Volumes inside the Triton pod -------------------------------------------------------------
# The init container lays out the model repository here (an emptyDir shared with tritonserver).
MODEL_REPOSITORY: Final = "/models"
# The operator mounts the rendered config.pbtxt (a ConfigMap) here, read by the fetcher.
CONFIG_DIR: Final = "/etc/tritonops/config"
CONFIG_FILE: Final = "config.pbtxt"
# A pvc://<claim>/<path> storage URI is served from the claim mounted (read-only) at this root;
# the fetcher maps pvc://<claim>/<path> to PVC_ROOT/<path>.
PVC_ROOT: Final = "/mnt/model-pvc"
# Scratch space for downloads and unpacking (an emptyDir; the root filesystem is read-only).
SCRATCH_DIR: Final = "/tmp"
TERMINATION_LOG: Final = "/dev/termination-log"

# --- Environment of the fetcher (init container) -----------------------------------------------
ENV_STORAGE_URI: Final = "TRITONOPS_STORAGE_URI"
ENV_MODEL_NAME: Final = "TRITONOPS_MODEL_NAME"
ENV_MODEL_VERSION: Final = "TRITONOPS_MODEL_VERSION"
ENV_MODEL_FORMAT: Final = "TRITONOPS_MODEL_FORMAT"
ENV_MODEL_DIGEST: Final = "TRITONOPS_MODEL_DIGEST"  # "sha256:<hex>" or empty
ENV_BACKEND: Final = "TRITONOPS_BACKEND"  # "Native" or "PythonWrapper"
ENV_REPOSITORY: Final = "TRITONOPS_MODEL_REPOSITORY"
ENV_CONFIG_FILE: Final = "TRITONOPS_CONFIG_FILE"
ENV_PVC_ROOT: Final = "TRITONOPS_PVC_ROOT"
ENV_MAX_BYTES: Final = "TRITONOPS_MAX_BYTES"
ENV_TERMINATION_LOG: Final = "TRITONOPS_TERMINATION_LOG"
# Credentials, region and S3-compatible endpoint, read from the user's secret (spec.model.credentials) by
# tritonops_runtime.sources; the fetcher reads no other key of that secret.
ENV_AWS_ACCESS_KEY_ID: Final = "AWS_ACCESS_KEY_ID"
ENV_AWS_SECRET_ACCESS_KEY: Final = "AWS_SECRET_ACCESS_KEY"
ENV_AWS_SESSION_TOKEN: Final = "AWS_SESSION_TOKEN"  # optional (STS); signed as x-amz-security-token
ENV_AWS_REGION: Final = "AWS_REGION"  # first of the two regions set wins; default us-east-1
ENV_AWS_DEFAULT_REGION: Final = "AWS_DEFAULT_REGION"
ENV_AWS_ENDPOINT_URL_S3: Final = "AWS_ENDPOINT_URL_S3"  # first of the two endpoints set wins; default AWS
ENV_AWS_ENDPOINT_URL: Final = "AWS_ENDPOINT_URL"
# Exactly the keys above: the operator passes only these keys of the secret to the fetcher (each optional).
CREDENTIAL_ENV_KEYS: Final = (
    ENV_AWS_ACCESS_KEY_ID, ENV_AWS_SECRET_ACCESS_KEY, ENV_AWS_SESSION_TOKEN, ENV_AWS_REGION,
    ENV_AWS_DEFAULT_REGION, ENV_AWS_ENDPOINT_URL_S3, ENV_AWS_ENDPOINT_URL,
)
# The values of these keys are secret: the fetcher scrubs them from every line it prints.
SECRET_ENV_KEYS: Final = (ENV_AWS_SECRET_ACCESS_KEY, ENV_AWS_SESSION_TOKEN)

# Size limit of a download, a copied directory or file, and of an unpacked archive (each), in bytes. The
# fetcher's messages name the spec field that sets it (the operator passes it as ENV_MAX_BYTES).
DEFAULT_MAX_BYTES: Final = 20 * 1024**3
MAX_SIZE_FIELD: Final = "spec.model.maxSize"

# --- Model formats -> file name inside <repo>/<model>/<version>/ and Triton backend -------------
MODEL_FILES: Final = {
    "torchscript": "model.pt",
    "onnx": "model.onnx",
    "tensorrt": "model.plan",
    "python": "model.py",
}
NATIVE_BACKENDS: Final = {
    "torchscript": "pytorch",
    "onnx": "onnxruntime",
    "tensorrt": "tensorrt",
    "python": "python",
}
# Backend modes (spec.runtime.triton.backend): the format's native backend, or our Python-backend
# wrapper that serves TorchScript/ONNX files with torch/onnxruntime (CPU clusters, tests).
BACKEND_NATIVE: Final = "Native"
BACKEND_PYTHON_WRAPPER: Final = "PythonWrapper"
WRAPPABLE_FORMATS: Final = ("torchscript", "onnx")

# --- Added for the runtime data plane (issue 4) ---------------------------------------------------
# config.pbtxt parameters through which the PythonWrapper backend tells our wrapper model.py what to load.
WRAPPER_PARAM_FORMAT: Final = "tritonops.format"
WRAPPER_PARAM_FILE: Final = "tritonops.model_file"
# Triton's Python backend loads <repo>/<model>/<version>/model.py; the wrapper is copied there.
WRAPPER_FILE: Final = "model.py"
# The fetcher's report, written to <repo>/<model>/FETCHED.json (also printed as one JSON line on stdout).
FETCHED_FILE: Final = "FETCHED.json"
# Archive suffixes the fetcher unpacks (anything else is a single model file or a directory).
ARCHIVE_SUFFIXES: Final = (".tar.gz", ".tgz", ".zip")

# --- Drift monitor (the drift-monitor sidecar; spec.drift) ----------------------------------------
# Triton writes sampled tensors (trace level TIMESTAMPS+TENSORS) as <CAPTURE_DIR>/<TRACE_FILE>.<k>; the
# sidecar reads and deletes them. A local emptyDir: the trace write is on the request's thread.
CAPTURE_DIR: Final = "/capture"
TRACE_FILE: Final = "trace.json"
DRIFT_PORT: Final = 8010  # the sidecar: GET /metrics, POST /v1/feedback, GET /v1/status, GET /healthz
FEEDBACK_PATH: Final = "/v1/feedback"
DRIFT_STATUS_PATH: Final = "/v1/status"
DRIFT_HEALTH_PATH: Final = "/healthz"
# The sidecar's state (consecutive drifted windows), kept across restarts of the container.
DRIFT_STATE_FILE: Final = "/capture/monitor-state.json"

# --- Retraining Job (spec.retraining) ---------------------------------------------------------------
# The operator passes these to the retraining container; the result is its termination message (JSON).
ENV_RETRAIN_MODEL_URI: Final = "TRITONOPS_MODEL_URI"
ENV_RETRAIN_DATA_URI: Final = "TRITONOPS_DATA_URI"
ENV_RETRAIN_OUTPUT_URI: Final = "TRITONOPS_OUTPUT_URI"
ENV_RETRAIN_TRIGGER: Final = "TRITONOPS_RETRAIN_TRIGGER"
ENV_RETRAIN_MODEL_DIGEST: Final = "TRITONOPS_MODEL_DIGEST"
RETRAIN_CONTAINER: Final = "retrain"
# Exit statuses of tritonops-retrain: a rejection by the evaluation gate is final (the Job's
# podFailurePolicy fails the Job at once instead of retrying); any other non-zero status is retried.
RETRAIN_EXIT_REJECTED: Final = 3
