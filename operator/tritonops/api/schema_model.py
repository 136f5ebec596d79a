"""Schema of ``spec.model`` and ``spec.runtime``: what is served and how Triton serves it."""

from __future__ import annotations

from tritonops.api import DEFAULT_TRITON_IMAGE
from tritonops.api.openapi import Schema, array, boolean, integer, obj, rule, string, string_map
from tritonops_runtime.contract import CREDENTIAL_ENV_KEYS

DATA_TYPES = (
    "TYPE_BOOL", "TYPE_UINT8", "TYPE_UINT16", "TYPE_UINT32", "TYPE_UINT64", "TYPE_INT8", "TYPE_INT16",
    "TYPE_INT32", "TYPE_INT64", "TYPE_FP16", "TYPE_FP32", "TYPE_FP64", "TYPE_STRING", "TYPE_BF16",
)
FORMATS = ("torchscript", "onnx", "tensorrt", "python")
# Flags the operator sets itself; a user arg repeating them would silently fight the pod contract.
MANAGED_ARGS = (
    "--model-repository", "--model-store", "--model-control-mode", "--strict-readiness",
    "--http-port", "--grpc-port", "--metrics-port", "--exit-timeout-secs",
)

STORAGE_URI_RULE = (
    "self.matches('^(s3|gs)://[a-z0-9][a-z0-9._-]{1,253}(/[^\\\\s]*)?$')"
    " || self.matches('^https?://[^\\\\s/]+(/[^\\\\s]*)?$')"
    " || self.matches('^pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?/[^\\\\s]+$')"
    " || self.matches('^file:///[^\\\\s]*$')"
)
# Credentials never travel in a URI: it is copied into pod env, status.history, events and error lines.
NO_CREDENTIALS_RULE = (
    "!self.matches('^[a-z0-9]+://[^/?#]*@')"
    " && !self.matches('(?i)[?&](x-amz-signature|x-amz-credential|x-amz-security-token|x-goog-signature|"
    "x-goog-credential|signature|sig|token|access_token|sv|se|sp)=')"
)
NO_CREDENTIALS_MESSAGE = (
    "must not carry credentials (user:password@ or a signed query such as X-Amz-Signature or sig=): put them "
    "in the Secret named by spec.model.credentials.secretName"
)
STORAGE_URI_MESSAGE = (
    "spec.model.storageUri must be s3://bucket/path, gs://bucket/path, http(s)://host/path, "
    "pvc://<claim>/<path> or file:///<path>"
)


def _tensor(description: str) -> Schema:
    return array(
        obj(
            {
                "name": string("Tensor name as the model exports it.", max_length=128, min_length=1),
                "dataType": string("Triton data type.", max_length=16, enum=DATA_TYPES),
                "dims": array(integer(minimum=-1, fmt="int64"), "Shape without the batch dimension; "
                              "-1 marks a variable dimension.", max_items=8, min_items=1),
            },
            required=("name", "dataType", "dims"),
        ),
        description,
        max_items=32,
        list_type="map",
        map_keys=("name",),
    )


def model_schema() -> Schema:
    """``spec.model``."""
    return obj(
        {
            "name": string(
                "Triton model name; clients call /v2/models/<name>. Immutable.",
                max_length=128, min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
            ),
            "storageUri": string(
                "Where the model lives: s3://, gs://, http(s)://, pvc://<claim>/<path> or file:///<path>. "
                "A single model file, a directory, or a .tar.gz/.zip archive.",
                max_length=2048,
            ),
            "version": integer("Triton version directory the model is served as.", minimum=1,
                               maximum=2147483647, default=1, fmt="int64"),
            "format": string("Model format.", max_length=16, enum=FORMATS),
            "digest": string("Expected sha256 of the fetched file or archive; the fetch fails on mismatch.",
                             max_length=71, pattern=r"^sha256:[a-f0-9]{64}$"),
            "maxSize": {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}],
                        "pattern": r"^[0-9]+(Ki|Mi|Gi|Ti|k|M|G|T)?$",
                        "description": "Largest the model may be, downloaded and unpacked (default 20Gi): the fetch "
                                       "fails beyond it, the model and scratch volumes get it as sizeLimit, and "
                                       "when set the pod requests it as ephemeral-storage (twice during the fetch: "
                                       "archive and unpacked files)."},
            "credentials": obj(
                {"secretName": string("Secret in this namespace; only the keys the fetcher reads are passed to "
                                      f"it ({', '.join(CREDENTIAL_ENV_KEYS)}), each optional.",
                                      max_length=253, min_length=1)},
                "Credentials for the model store.", required=("secretName",),
            ),
            "inputs": _tensor("Model inputs; required by backends that cannot infer them."),
            "outputs": _tensor("Model outputs."),
        },
        "The model to serve.",
        required=("name", "storageUri", "format"),
        rules=(
            rule("self.name == oldSelf.name",
                 "spec.model.name is immutable: clients address the model by it; create a new "
                 "ModelDeployment to serve under another name", field_path=".name"),
            rule(STORAGE_URI_RULE.replace("self.", "self.storageUri."), STORAGE_URI_MESSAGE,
                 field_path=".storageUri"),
            rule(NO_CREDENTIALS_RULE.replace("self.", "self.storageUri."),
                 f"spec.model.storageUri {NO_CREDENTIALS_MESSAGE}", field_path=".storageUri"),
        ),
    )


def _instance_group() -> Schema:
    return obj(
        {
            "kind": string("Where instances run.", max_length=8, enum=("KIND_GPU", "KIND_CPU")),
            "count": integer("Instances per device.", minimum=1, maximum=64, default=1),
            "gpus": array(integer(minimum=0, maximum=15), "GPU indices (KIND_GPU only).", max_items=16),
        },
        required=("kind",),
        rules=(rule("self.kind == 'KIND_GPU' || !has(self.gpus)",
                    "gpus applies only to KIND_GPU instance groups: remove gpus or set kind: KIND_GPU",
                    field_path=".gpus"),),
    )


def _version_policy() -> Schema:
    return obj(
        {
            "latest": obj({"numVersions": integer(minimum=1, maximum=64, default=1)}),
            "all": obj({}),
            "specific": obj({"versions": array(integer(minimum=1, fmt="int64"), max_items=64,
                                               min_items=1)}, required=("versions",)),
        },
        "Which versions Triton serves: exactly one of latest, all, specific.",
        rules=(rule("[has(self.latest), has(self.all), has(self.specific)].filter(x, x).size() == 1",
                    "spec.runtime.triton.versionPolicy: set exactly one of latest, all or specific"),),
    )


def triton_schema() -> Schema:
    """``spec.runtime.triton``: the parts of Triton's model configuration we render."""
    dyn = obj(
        {
            "preferredBatchSize": array(integer(minimum=1, maximum=1048576), max_items=16),
            "maxQueueDelayMicroseconds": integer(minimum=0, maximum=60_000_000, fmt="int64"),
        },
        "Server-side batching of requests.",
    )
    return obj(
        {
            "backend": string(
                "Native uses the format's own backend (production images). PythonWrapper serves "
                "TorchScript/ONNX files through Triton's Python backend (CPU clusters, tests).",
                max_length=16, enum=("Native", "PythonWrapper"), default="Native"),
            "maxBatchSize": integer("0 disables batching.", minimum=0, maximum=1048576, default=0),
            "instanceGroups": array(_instance_group(), max_items=8),
            "allowCPUFallback": boolean("PythonWrapper with KIND_GPU instances: when torch has no CUDA or "
                                        "onnxruntime no CUDA provider, serve on the CPU with a loud warning "
                                        "instead of failing the model load (the default)."),
            "dynamicBatching": dyn,
            "versionPolicy": _version_policy(),
            "parameters": string_map("Model config parameters.", max_properties=32, value_max_length=1024),
        },
        "Triton model configuration (config.pbtxt).",
        default={},
        rules=(
            rule("!has(self.dynamicBatching) || (has(self.maxBatchSize) && self.maxBatchSize > 0)",
                 "spec.runtime.triton.dynamicBatching needs batching: set spec.runtime.triton.maxBatchSize "
                 "> 0 or remove dynamicBatching", field_path=".dynamicBatching"),
            rule("!has(self.dynamicBatching) || !has(self.dynamicBatching.preferredBatchSize) || "
                 "self.dynamicBatching.preferredBatchSize.all(b, has(self.maxBatchSize) && b <= self.maxBatchSize)",
                 "spec.runtime.triton.dynamicBatching.preferredBatchSize: every size must be <= maxBatchSize",
                 field_path=".dynamicBatching.preferredBatchSize"),
        ),
    )


def runtime_schema() -> Schema:
    """``spec.runtime``."""
    managed = ", ".join(f"'{a}'" for a in MANAGED_ARGS)
    return obj(
        {
            "image": string("Triton server image (pin a tag or a digest).", max_length=512,
                            default=DEFAULT_TRITON_IMAGE),
            "imagePullPolicy": string(max_length=16, enum=("Always", "IfNotPresent", "Never"),
                                      default="IfNotPresent"),
            "args": array(string(max_length=512), "Extra tritonserver arguments.", max_items=32),
            "startupTimeoutSeconds": integer("How long a model may take to load before the pod restarts.",
                                             minimum=30, maximum=7200, default=600),
            "exitTimeoutSeconds": integer("Grace period for in-flight requests on shutdown.",
                                          minimum=1, maximum=600, default=30),
            "triton": triton_schema(),
        },
        "The Triton server that serves the model.",
        default={},
        rules=(rule(f"!has(self.args) || self.args.all(a, ![{managed}].exists(m, a.startsWith(m)))",
                    "spec.runtime.args must not set flags the operator manages "
                    f"({', '.join(MANAGED_ARGS)}): remove them", field_path=".args"),),
    )


def toleration_schema() -> Schema:
    """A corev1.Toleration."""
    return obj({
        "key": string(max_length=317),
        "operator": string(max_length=8, enum=("Exists", "Equal")),
        "value": string(max_length=63),
        "effect": string(max_length=16, enum=("NoSchedule", "PreferNoSchedule", "NoExecute")),
        "tolerationSeconds": integer(fmt="int64"),
    })
