"""Schema of ``spec.drift`` (the drift monitor sidecar and ground-truth quality) and ``spec.retraining``
(the retraining Job and how its result is rolled out).

Drift thresholds mean different things per method: a PSI or Jensen-Shannon score above which a feature
drifts (``psi``, ``js``), or the significance level alpha after the multiple-testing ``correction`` across
all features (``ks``, ``chi2``). There is no schema default: the monitor takes the method's own (psi 0.2,
js 0.1, ks and chi2 0.05), so switching methods never keeps a threshold meant for another.
"""

from __future__ import annotations

from tritonops.api.openapi import Schema, array, boolean, integer, number, obj, quantity_map, rule, string
from tritonops.api.schema_model import NO_CREDENTIALS_MESSAGE, NO_CREDENTIALS_RULE, STORAGE_URI_RULE

DRIFT_METHODS = ("psi", "js", "ks", "chi2")
DEFAULT_THRESHOLDS = {"psi": 0.2, "js": 0.1, "ks": 0.05, "chi2": 0.05}
QUALITY_METRICS = ("accuracy", "f1", "auc", "mse")
DIGEST = r"^sha256:[a-f0-9]{64}$"


def _uri(field: str, description: str) -> Schema:
    s = string(description, max_length=2048)
    s["x-kubernetes-validations"] = [
        rule(STORAGE_URI_RULE, f"{field} must be an s3://, gs://, http(s)://, pvc:// or file:/// URI"),
        rule(NO_CREDENTIALS_RULE, f"{field} {NO_CREDENTIALS_MESSAGE}"),
    ]
    return s


def _quality() -> Schema:
    return obj(
        {
            "metric": string("accuracy, f1 (macro), auc (one-vs-rest, from the predicted probabilities) or mse.",
                             max_length=16, enum=QUALITY_METRICS),
            "minimum": number("Below this (above it for mse) over a full window, quality has dropped."),
            "windowSize": integer("Labelled predictions per quality window.", minimum=10, maximum=1000000,
                                  default=500),
            "feedbackTTLSeconds": integer("How long a sampled prediction waits for its label.", minimum=10,
                                          maximum=604800, default=3600),
        },
        "Ground truth: clients POST {id, label} to the Service's feedback port (8010, /v1/feedback) for sampled "
        "requests that carried an id; the monitor scores the joined predictions.",
        required=("metric", "minimum"),
    )


def drift_schema() -> Schema:
    """``spec.drift``."""
    return obj(
        {
            "enabled": boolean(default=False),
            "method": string("psi, js (Jensen-Shannon distance), ks (Kolmogorov-Smirnov) or chi2.", max_length=8,
                             enum=DRIFT_METHODS, default="psi"),
            "threshold": number("psi/js: the score above which a feature drifts (defaults 0.2/0.1); ks/chi2: the "
                                "significance level after correction (default 0.05).", minimum=0, maximum=100),
            "correction": string("Multiple-testing correction across features for ks/chi2.", max_length=8,
                                 enum=("holm", "bh", "none"), default="holm"),
            "samplePercent": number("Percent of requests Triton captures (1 of every round(100/p)).",
                                    minimum=0.01, maximum=100, default=10),
            "windowSize": integer("Captured rows per window (windows do not overlap).", minimum=100,
                                  maximum=1000000, default=5000),
            "intervalSeconds": integer("How often the monitor checks for a full window.", minimum=10,
                                       maximum=86400, default=300),
            "consecutiveWindows": integer("Windows over threshold before drift is declared.",
                                          minimum=1, maximum=100, default=3),
            "reference": obj({
                "storageUri": _uri("spec.drift.reference.storageUri",
                                   "The reference profile (tritonops profile build, or written beside each "
                                   "retrained version as reference_profile.json)."),
                "digest": string("Expected sha256 of the profile.", max_length=71, pattern=DIGEST),
            }, required=("storageUri",)),
            "quality": _quality(),
        },
        "Watch the live inputs and predictions for drift, and their quality against labels, in a sidecar that "
        "reads what Triton samples (off the request path).",
        rules=(rule("!has(self.enabled) || !self.enabled || has(self.reference)",
                    "spec.drift.enabled needs spec.drift.reference.storageUri", field_path=".reference"),
               rule("!has(self.threshold) || self.threshold > 0.0",
                    "spec.drift.threshold must be above 0", field_path=".threshold"),
               rule("!has(self.threshold) || !has(self.method) || self.method == 'psi' || self.threshold < 1.0",
                    "spec.drift.threshold must be below 1 for js (a distance) and ks/chi2 (a significance "
                    "level such as 0.05)", field_path=".threshold")),
    )


def _trigger() -> Schema:
    return obj({
        "onDrift": boolean("Retrain when drift is declared.", default=True),
        "onQualityDrop": boolean("Retrain when spec.drift.quality drops below its minimum.", default=True),
        "cooldownSeconds": integer("Least time between the starts of two retraining Jobs.", minimum=0,
                                   maximum=2592000, default=86400),
    }, default={})


def retraining_schema() -> Schema:
    """``spec.retraining``."""
    return obj(
        {
            "enabled": boolean(default=False),
            "trigger": _trigger(),
            "image": string("Image of the retraining container (one with torch and tritonops-runtime[retrain] "
                            "for the built-in tritonops-retrain).", max_length=512),
            "command": array(string(max_length=1024), "Default: tritonops-retrain.", max_items=32),
            "args": array(string(max_length=4096), max_items=64),
            "trainableModel": obj({
                "storageUri": _uri("spec.retraining.trainableModel.storageUri", "The TorchScript file."),
                "digest": string(max_length=71, pattern=DIGEST),
            }, "The model the Job fine-tunes when spec.model is served in a form that cannot be trained (ONNX, "
               "TensorRT): its TorchScript source. A retrained candidate carries its own.", required=("storageUri",)),
            "dataStorageUri": _uri("spec.retraining.dataStorageUri",
                                   "The new labelled data (.npz with inputs and labels, or .csv with the label "
                                   "last); passed to the Job as TRITONOPS_DATA_URI."),
            "resources": obj({"requests": quantity_map(), "limits": quantity_map()}),
            "backoffLimit": integer(minimum=0, maximum=10, default=1),
            "activeDeadlineSeconds": integer(minimum=60, maximum=604800, default=3600, fmt="int64"),
            "outputStorageUri": _uri("spec.retraining.outputStorageUri",
                                     "Where the retraining Job writes the new version (never overwriting one)."),
            "promotion": obj({"mode": string("Canary: roll an accepted candidate out through spec.rollout "
                                             "(its analysis rolls a bad one back); Manual: wait for "
                                             "kubectl tritonops approve.", max_length=8,
                                             enum=("Canary", "Manual"), default="Canary")},
                             default={}),
            "successfulJobsHistoryLimit": integer(minimum=0, maximum=100, default=3),
            "failedJobsHistoryLimit": integer(minimum=0, maximum=100, default=3),
        },
        "Retrain the model in a Job on drift, a quality drop or on demand, then roll the result out.",
        rules=(rule("!has(self.enabled) || !self.enabled || has(self.outputStorageUri)",
                    "spec.retraining.enabled needs spec.retraining.outputStorageUri",
                    field_path=".outputStorageUri"),
               rule("!has(self.enabled) || !self.enabled || has(self.image)",
                    "spec.retraining.enabled needs spec.retraining.image (an image with torch and "
                    "tritonops-runtime[retrain], or your own)", field_path=".image")),
    )
