"""Schema of ``status``: written only by the operator (observedGeneration, conditions, revisions)."""

from __future__ import annotations

from tritonops.api.openapi import Schema, array, boolean, integer, number, obj, opaque, string


def condition_schema() -> Schema:
    """A metav1.Condition."""
    return obj(
        {
            "type": string(max_length=316),
            "status": string(max_length=8, enum=("True", "False", "Unknown")),
            "observedGeneration": integer(minimum=0, fmt="int64"),
            "lastTransitionTime": {"type": "string", "format": "date-time", "maxLength": 64},
            "reason": string(max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"),
            "message": string(max_length=32768),
        },
        required=("type", "status", "lastTransitionTime", "reason", "message"),
    )


def _history_entry() -> Schema:
    return obj({
        "revision": string(max_length=63),
        "storageUri": string(max_length=2048),
        "modelVersion": integer(fmt="int64"),
        "digest": string(max_length=71),
        "promotedAt": string(max_length=64),
        "retiredAt": string(max_length=64),
        "outcome": string("Promoted, Superseded, Aborted; for the retraining loop RetrainingStarted, "
                          "RetrainingSucceeded/Rejected/Failed, CandidateRollingOut/Promoted/RolledBack/...",
                          max_length=32),
        "job": string("The retraining Job, for the loop's entries.", max_length=253),
        "at": string("When a retraining entry happened.", max_length=64),
        "message": string(max_length=1024),
    })


def _analysis_record() -> Schema:
    check = obj({
        "name": string(max_length=63),
        "result": string("Passed, Failed or Inconclusive.", max_length=16),
        "value": number("No value: the series was missing or Prometheus did not answer (a failed check)."),
        "min": number(),
        "max": number(),
    })
    return obj({
        "since": string("When the canary first took traffic; windows count from here.", max_length=64),
        "lastRunAt": string(max_length=64),
        "windows": integer("Windows measured.", minimum=0),
        "failures": integer("Failed windows in all.", minimum=0),
        "inconclusive": integer("Inconclusive windows in a row.", minimum=0),
        "result": string("The last window's verdict: Passed, Failed or Inconclusive.", max_length=16),
        "requests": number("Canary requests in the last window."),
        "message": string("The last window's numbers.", max_length=1024),
        "checks": array(check, max_items=16),
    }, "Canary analysis: the record of its windows.")


def _replica_split() -> Schema:
    side = obj({"revision": string(max_length=63), "desired": integer(minimum=0),
                "available": integer(minimum=0)})
    return obj({"total": integer("The replicas served: spec.replicas (the autoscaler's, when there is one) "
                                 "within its bounds and, for growth, the free GPUs.", minimum=0),
                "requested": integer("What the autoscaler asks for, shown while the free GPUs hold the total "
                                     "below it.", minimum=0),
                "limitedBy": string("FreeGPUs while the total is held below the autoscaler's.", max_length=32),
                "stable": side, "canary": side},
               "How the serving size is split between the stable and the canary revision (shown during a canary "
               "or with autoscaling).")


def _drift() -> Schema:
    quality = obj({"metric": string(max_length=16), "value": number(), "minimum": number(),
                   "pairs": integer("Labelled predictions in the window.", minimum=0),
                   "belowMinimum": boolean()})
    return obj({
        "method": string(max_length=8),
        "score": number("The last window's aggregate score (the highest over features and pods)."),
        "threshold": number(),
        "detected": boolean("Drift declared: consecutiveWindows windows in a row drifted (on any pod)."),
        "predictionPSI": number("PSI of the predictions against the reference's."),
        "windows": integer("Windows evaluated since the pods started (all pods).", minimum=0, fmt="int64"),
        "quality": quality,
        "lastCheckTime": string(max_length=64),
        "message": string(max_length=1024),
    }, "The drift monitor's last word, read from its metrics in Prometheus.")


def _file() -> Schema:
    return obj({"storageUri": string(max_length=2048), "digest": string(max_length=71)},
               "The version's TorchScript file, which a later retraining fine-tunes.")


def _retraining() -> Schema:
    candidate = obj({
        "job": string(max_length=253),
        "storageUri": string("Commit these three to spec.model to make the candidate permanent in Git.",
                             max_length=2048),
        "version": integer(minimum=1, fmt="int64"),
        "digest": string(max_length=71),
        "decision": string("Accepted or Rejected by the Job's evaluation gate.", max_length=16),
        "metrics": opaque("The gate's numbers: candidate and current model on the holdout."),
        "promotion": string("Pending (Manual, awaiting approve), RollingOut, Promoted, RolledBack or Superseded "
                            "(spec.model changed).", max_length=16),
        "basedOn": string("The model the candidate was trained from (storageUri@version).", max_length=2100),
        "specModel": string("spec.model when its Job started: the candidate is served only while spec.model "
                            "is unchanged.", max_length=2100),
        "format": string(max_length=16),
        "rolloutSince": string("When its rollout began.", max_length=64),
        "trainable": _file(),
        "message": string(max_length=1024),
    })
    return obj({
        "phase": string("Idle, Running, Succeeded, Failed or Rejected (the last Job's outcome).", max_length=16),
        "activeJob": string(max_length=253),
        "trigger": string("What started the last Job: Drift, QualityDrop or Manual.", max_length=16),
        "lastTriggerTime": string(max_length=64),
        "lastFinishTime": string(max_length=64),
        "jobs": integer("Retraining Jobs started so far (names end with this number).", minimum=0, fmt="int64"),
        "message": string(max_length=1024),
        "candidate": candidate,
        "serving": obj({"storageUri": string(max_length=2048), "version": integer(minimum=1, fmt="int64"),
                        "digest": string(max_length=71), "format": string(max_length=16),
                        "specModel": string(max_length=2100), "job": string(max_length=253),
                        "trainable": _file()},
                       "The promoted retrained model, served in place of spec.model until spec.model changes."),
        "basedOn": string(max_length=2100),
        "specModel": string(max_length=2100),
        "handledRequest": string("The last tritonops.io/retrain request acted on.", max_length=64),
    })


def status_schema() -> Schema:
    """``status``."""
    return obj(
        {
            "observedGeneration": integer(minimum=0, fmt="int64"),
            "phase": string("For display; derived from conditions.", max_length=32),
            "conditions": array(condition_schema(), max_items=32, list_type="map", map_keys=("type",)),
            "stableRevision": string("The revision that serves and last became available.", max_length=63),
            "canaryRevision": string("The revision being rolled out, if any.", max_length=63),
            "canaryWeight": integer("Percent of traffic on the canary revision.", minimum=0, maximum=100),
            "autoscaler": string("The kind of the autoscaler the operator keeps (HorizontalPodAutoscaler or "
                                 "ScaledObject), if any.", max_length=32),
            "replicaSplit": _replica_split(),
            "startupSeconds": integer("With autoscaling: how long the newest Ready pod took from its creation to "
                                      "Ready (scheduling, model fetch and load); paces the default scale-up.",
                                      minimum=0),
            "replicas": integer(minimum=0),
            "readyReplicas": integer(minimum=0),
            "availableReplicas": integer(minimum=0),
            "selector": string("Label selector of the serving pods (scale subresource).", max_length=1024),
            "rollout": obj({
                "startedAt": string(max_length=64),
                "currentStepIndex": integer("Canary: the step being executed (the number of steps once all "
                                            "are done).", minimum=0),
                "stepStartedAt": string("Canary: when the current step began.", max_length=64),
                "weight": integer("Canary: percent of traffic the canary takes, as achieved.", minimum=0,
                                  maximum=100),
                "decision": string("Canary: Progressing, Paused, Promoted or Aborted.", max_length=16),
                "message": string(max_length=1024),
                "decidedAt": string("Canary: when it was promoted or aborted.", max_length=64),
                "analysis": _analysis_record(),
            }),
            "drift": _drift(),
            "retraining": _retraining(),
            "history": array(_history_entry(), max_items=100),
            "kopf": opaque("Bookkeeping of the operator framework."),
        },
    )
