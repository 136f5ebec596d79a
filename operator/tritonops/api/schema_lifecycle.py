"""Schema of the lifecycle blocks ``rollout`` and ``autoscaling`` (``drift`` and ``retraining``:
:mod:`tritonops.api.schema_drift`)."""

from __future__ import annotations

from tritonops.api.openapi import Schema, array, boolean, integer, number, obj, rule, string

ANALYSIS_METRICS = ("ErrorRate", "LatencyP99Ms", "QueueTimeP99Ms", "PredictionDriftPSI")
AUTOSCALING_METRICS = ("QueueTime", "InferenceRate", "PendingRequests", "GPUUtilization", "CPU", "Memory",
                       "Prometheus")


def _step() -> Schema:
    return obj(
        {
            "setWeight": integer("Percent of traffic to the canary.", minimum=0, maximum=100),
            "pause": obj({"durationSeconds": integer("Omit to pause until promoted.", minimum=1,
                                                     maximum=604800)}),
            "analysis": obj({"durationSeconds": integer(minimum=1, maximum=86400)},
                            "Run the analysis for this long before the next step."),
        },
        rules=(rule("[has(self.setWeight), has(self.pause), has(self.analysis)].filter(x, x).size() == 1",
                    "each spec.rollout.canary.steps[] entry sets exactly one of setWeight, pause, analysis"),),
    )


def _prometheus() -> Schema:
    return obj(
        {
            "address": string("Base URL, e.g. http://prometheus-operated.monitoring:9090.", max_length=2048,
                              min_length=1),
            "insecureSkipVerify": boolean("Skip verifying an https address's certificate.", default=False),
        },
        "Overrides the address of the operator's Prometheus (chart value analysis.prometheus.url) for this "
        "ModelDeployment. The bearer token and CA bundle stay the operator's (chart values): the operator "
        "is not granted to read Secrets.",
        required=("address",),
        rules=(rule("self.address.startsWith('http://') || self.address.startsWith('https://')",
                    "spec.rollout.canary.analysis.prometheus.address must be an http:// or https:// URL",
                    field_path=".address"),),
    )


def _analysis() -> Schema:
    metric = obj(
        {
            "name": string(f"A built-in metric ({', '.join(ANALYSIS_METRICS)}: PredictionDriftPSI needs "
                           "spec.drift.enabled) or, with query, any name.", max_length=63, min_length=1),
            "query": string("PromQL returning one number for the canary; {{namespace}} and {{revision}} are "
                            "replaced by the canary's.", max_length=4096),
            "thresholdRange": obj(
                {"min": number(), "max": number()},
                rules=(rule("has(self.min) || has(self.max)",
                            "thresholdRange needs a bound: set max (fail above it) or min (fail below it)"),)),
        },
        required=("name", "thresholdRange"),
        rules=(rule(f"has(self.query) || self.name in {list(ANALYSIS_METRICS)}",
                    f"spec.rollout.canary.analysis.metrics[]: set query, or use a built-in name: "
                    f"{', '.join(ANALYSIS_METRICS)}", field_path=".name"),),
    )
    return obj(
        {
            "intervalSeconds": integer("Length of an analysis window; one runs every interval once the canary "
                                       "takes traffic.", minimum=5, maximum=3600, default=60),
            "failureLimit": integer("Failed windows (in all) that abort the canary.", minimum=1, maximum=100,
                                    default=2),
            "inconclusiveLimit": integer("Windows in a row with fewer than minRequests canary requests that "
                                         "pause the rollout with Progressing/AnalysisInconclusive (too little "
                                         "traffic to judge) until the step is promoted. Paused rather than "
                                         "failed (Flagger fails, Argo Rollouts pauses): low traffic says nothing "
                                         "against the model, and a canary never promotes without a passing "
                                         "window anyway.", minimum=1, maximum=100, default=3),
            "minRequests": integer("Canary requests a window needs to be judged.", minimum=0,
                                   maximum=1000000000, default=20),
            "metrics": array(metric, max_items=16, min_items=1, list_type="map", map_keys=("name",)),
            "prometheus": _prometheus(),
        },
        "Checks run against the canary from Prometheus; a missing series or a provider error counts as a "
        "failed check.",
        required=("metrics",),
    )


def _int_or_percent(description: str) -> Schema:
    return {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": r"^(100|[1-9]?[0-9])%$|^[0-9]+$", "description": description}


def rollout_schema() -> Schema:
    """``spec.rollout``."""
    canary = obj(
        {
            "steps": array(_step(), max_items=32),
            "capacityPolicy": string("Surge adds the canary's replicas beside stable's (needs spare capacity); "
                                     "NoSurge takes them from stable's, so the total, and the GPU count, stays "
                                     "constant (stable keeps one replica at least until promotion).",
                                     max_length=8, enum=("Surge", "NoSurge"), default="Surge"),
            "analysis": _analysis(),
            "trafficRouting": obj({"gatewayAPI": obj({"httpRouteRef": obj(
                {"name": string(max_length=253, min_length=1)}, required=("name",))}, required=("httpRouteRef",))},
                "Weight the traffic on an HTTPRoute of yours (same namespace) instead of by replica counts: the "
                "operator sets the weighted backendRefs of the route's rules that point at this model's Service, "
                "under its own field manager (tritonops-traffic), and creates a Service per revision."),
            "scaleDownDelaySeconds": integer("Gateway API routing: how long the old stable revision keeps its pods "
                                             "after the route moved all traffic to the promoted canary (replica "
                                             "ratio: the pods are the traffic, they go at once).", minimum=0,
                                             maximum=86400, default=30),
            "abortScaleDownDelaySeconds": integer("Gateway API routing: how long an aborted canary keeps its pods "
                                                  "after the route sent all traffic back to stable (replica ratio: "
                                                  "scaled to zero at once).", minimum=0, maximum=86400,
                                                  default=30),
        },
        rules=(rule("!has(self.steps) || self.steps.filter(s, has(s.setWeight)).map(s, s.setWeight).isSorted()",
                    "spec.rollout.canary.steps: setWeight values must not decrease", field_path=".steps"),
               rule("!has(self.steps) || !self.steps.exists(s, has(s.analysis)) || has(self.analysis)",
                    "spec.rollout.canary.steps has an analysis step: set spec.rollout.canary.analysis.metrics",
                    field_path=".analysis")),
    )
    return obj(
        {
            "strategy": string("Rolling replaces the revision once the new one is available; Canary "
                               "shifts traffic by setWeight, pause and analysis steps, gated by metric "
                               "analysis.", max_length=16,
                               enum=("Rolling", "Canary"), default="Rolling"),
            "progressDeadlineSeconds": integer(minimum=30, maximum=86400, default=600),
            "revisionHistoryLimit": integer(minimum=0, maximum=100, default=10),
            "paused": boolean(default=False),
            "canary": canary,
            "rolling": obj(
                {"maxSurge": _int_or_percent("Replicas the target may add above spec.replicas (a count or a "
                                             "percentage, rounded up). Default 25%."),
                 "maxUnavailable": _int_or_percent("Replicas that may be unavailable during the update (a count "
                                                   "or a percentage, rounded down). Default 0.")},
                "Rolling strategy: replace the stable revision's pods step by step. Without it the new revision "
                "gets every replica at once and the old one keeps all of its until the new one is available. "
                "maxSurge 0 with maxUnavailable 1 keeps the GPU count constant.",
                rules=(rule("!(has(self.maxSurge) && string(self.maxSurge) in ['0', '0%'] && "
                            "(!has(self.maxUnavailable) || string(self.maxUnavailable) in ['0', '0%']))",
                            "spec.rollout.rolling: maxSurge and maxUnavailable cannot both be 0: allow one "
                            "replica of surge or of unavailability"),)),
        },
        "How a new revision replaces the serving one.",
        default={},
        rules=(rule("!has(self.strategy) || self.strategy != 'Canary' || has(self.canary)",
                    "spec.rollout.strategy Canary needs spec.rollout.canary.steps", field_path=".canary"),),
    )


def _scaling_rules() -> Schema:
    policy = obj({"type": string(max_length=8, enum=("Pods", "Percent")),
                  "value": integer(minimum=1, maximum=100000),
                  "periodSeconds": integer(minimum=1, maximum=1800)},
                 required=("type", "value", "periodSeconds"))
    return obj({"stabilizationWindowSeconds": integer(minimum=0, maximum=3600),
                "selectPolicy": string(max_length=8, enum=("Max", "Min", "Disabled")),
                "policies": array(policy, max_items=8)})


def autoscaling_schema() -> Schema:
    """``spec.autoscaling``."""
    metric = obj(
        {
            "type": string(max_length=32, enum=AUTOSCALING_METRICS),
            "target": number("Per-replica target: microseconds (QueueTime), inferences/s (InferenceRate), "
                             "requests (PendingRequests), percent (GPUUtilization, CPU, Memory), or the "
                             "query's unit (Prometheus).", minimum=0),
            "activationTarget": number("KEDA: the value above which a ModelDeployment scaled to zero wakes up.",
                                       minimum=0),
            "query": string("PromQL for type Prometheus (KEDA): the ModelDeployment's total; {{namespace}} is "
                            "replaced.", max_length=4096),
        },
        required=("type", "target"),
        rules=(rule("self.type != 'Prometheus' || has(self.query)",
                    "autoscaling metric of type Prometheus needs query: set it to a PromQL expression",
                    field_path=".query"),),
    )
    return obj(
        {
            "minReplicas": integer("0 (scale to zero) only with engine KEDA; never the default.", minimum=0,
                                   maximum=1000, default=1),
            "maxReplicas": integer(minimum=1, maximum=1000),
            "engine": string("HPA (autoscaling/v2, custom metrics from prometheus-adapter) or KEDA.",
                             max_length=8, enum=("HPA", "KEDA"), default="HPA"),
            "metrics": array(metric, max_items=8, min_items=1),
            "behavior": obj({"scaleUp": _scaling_rules(), "scaleDown": _scaling_rules()},
                            "HPA behavior (KEDA passes it on). A new replica helps only once its model is "
                            "loaded: keep scale-up periods above the model's load time."),
            "scaleDownStabilizationSeconds": integer(minimum=0, maximum=3600, default=300),
            "capToFreeGPUs": boolean("Grow a GPU model only as far as the free GPUs of the nodes it may use "
                                     "(true when unset). Set false when a node autoscaler adds GPU nodes for "
                                     "Pending pods."),
        },
        "Scale with load: the autoscaler writes spec.replicas through the /scale subresource and the "
        "operator splits it between the stable and the canary revision.",
        required=("maxReplicas",),
        rules=(rule("self.minReplicas <= self.maxReplicas",
                    "spec.autoscaling.minReplicas must be <= maxReplicas", field_path=".minReplicas"),
               rule("self.minReplicas > 0 || (has(self.engine) && self.engine == 'KEDA')",
                    "spec.autoscaling.minReplicas 0 (scale to zero) needs engine KEDA", field_path=".minReplicas"),
               rule("!has(self.metrics) || !self.metrics.exists(m, m.type == 'Prometheus') || "
                    "(has(self.engine) && self.engine == 'KEDA')",
                    "spec.autoscaling.metrics: type Prometheus needs engine KEDA (an HPA would need a "
                    "prometheus-adapter rule for each query): use engine KEDA or a preset",
                    field_path=".metrics")),
    )
