"""Condition types and reasons: every string the operator writes into ``status.conditions``.

Positive-polarity types (``Ready`` True is good) except ``Degraded`` and ``InvalidSpec``, whose True
means something needs attention. Reasons are CamelCase constants; tests and users match on them.
"""

from typing import Final

# --- condition types ---------------------------------------------------------------------------
READY: Final = "Ready"  # the serving revision has all its replicas available
AVAILABLE: Final = "Available"  # at least one replica serves
PROGRESSING: Final = "Progressing"  # a new revision is being rolled out
DEGRADED: Final = "Degraded"  # something keeps the desired state from being reached
INVALID_SPEC: Final = "InvalidSpec"  # the API accepted the spec but the operator cannot honour it

# --- reasons -----------------------------------------------------------------------------------
REVISION_AVAILABLE: Final = "RevisionAvailable"  # Ready: all replicas of the stable revision available
REPLICAS_UNAVAILABLE: Final = "ReplicasUnavailable"  # Ready: fewer available replicas than requested
NO_STABLE_REVISION: Final = "NoRevisionAvailable"  # Ready/Available: nothing has become available yet
SCALED_TO_ZERO: Final = "ScaledToZero"  # Ready: replicas is 0
MINIMUM_REPLICAS_AVAILABLE: Final = "MinimumReplicasAvailable"  # Available: at least one replica serves
NO_REPLICAS_AVAILABLE: Final = "NoReplicasAvailable"  # Available: none serves
NEW_REVISION_PROGRESSING: Final = "NewRevisionProgressing"  # Progressing: rolling a revision out
ROLLOUT_COMPLETE: Final = "RolloutComplete"  # Progressing False: the desired revision is stable
PROGRESS_DEADLINE_EXCEEDED: Final = "ProgressDeadlineExceeded"  # the new revision did not become available
ROLLOUT_BLOCKED: Final = "RolloutBlockedByInvalidSpec"  # Progressing False: spec cannot be honoured
INSUFFICIENT_GPU: Final = "InsufficientGPU"  # Degraded: the scheduler found no node with free GPUs
UNTOLERATED_TAINT: Final = "UntoleratedTaint"  # Degraded: the only fitting nodes carry taints the pods lack
NODE_SELECTOR_MISMATCH: Final = "NodeSelectorMismatch"  # Degraded: no node matches nodeSelector/affinity
UNSCHEDULABLE: Final = "Unschedulable"  # Degraded: pods cannot be scheduled for another reason
AUTOSCALER_UNAVAILABLE: Final = "AutoscalerUnavailable"  # Degraded: KEDA missing or no Prometheus for it
RESOURCE_CONFLICT: Final = "ResourceConflict"  # Degraded: a child's name is taken by an object we do not own
MODEL_FETCH_FAILED: Final = "ModelFetchFailed"  # Degraded: the init container could not fetch the model
MODEL_LOAD_FAILED: Final = "ModelLoadFailed"  # Degraded: tritonserver keeps failing to start
CANARY_STEP: Final = "CanaryStep"  # Progressing: a canary is walking its steps
CANARY_PAUSED: Final = "CanaryPaused"  # Progressing: a canary waits for a user (pause step, spec.rollout.paused)
TRAFFIC_ROUTE_UNUSABLE: Final = "TrafficRouteUnusable"  # Degraded: the canary's HTTPRoute is missing or unusable
ANALYSIS_INCONCLUSIVE: Final = "AnalysisInconclusive"  # Progressing: paused, too little canary traffic to judge
ROLLOUT_ABORTED: Final = "RolloutAborted"  # Degraded/Progressing: the canary was aborted; stable serves alone
AS_EXPECTED: Final = "AsExpected"  # Degraded False
SPEC_VALID: Final = "SpecValid"  # InvalidSpec False
INVALID_SPEC_REASON: Final = "InvalidSpec"  # InvalidSpec True
SYSTEM_NAMESPACE: Final = "SystemNamespace"  # InvalidSpec/Ready: in kube-system & co. without being listed

# --- event reasons -----------------------------------------------------------------------------
EVENT_REVISION_PROMOTED: Final = "RevisionPromoted"
EVENT_CANARY_STEP: Final = "CanaryStep"  # a canary completed a step (the message has weight and step)
EVENT_ANALYSIS_FAILED: Final = "AnalysisFailed"  # a canary analysis window failed (the message has the numbers)
EVENT_DRIFT_DETECTED: Final = "DriftDetected"  # the drift monitors declared drift (score, features)
EVENT_DRIFT_CLEARED: Final = "DriftCleared"  # no monitor declares drift any more
EVENT_QUALITY_DROPPED: Final = "QualityDropped"  # spec.drift.quality fell below its minimum
EVENT_RETRAINING_STARTED: Final = "RetrainingStarted"  # a retraining Job was created (the trigger)
EVENT_CANDIDATE_ACCEPTED: Final = "CandidateAccepted"  # the Job's gate accepted a new version
EVENT_CANDIDATE_REJECTED: Final = "CandidateRejected"  # the Job's gate rejected it (the reasons)
EVENT_RETRAINING_FAILED: Final = "RetrainingFailed"  # the Job failed (the reason)
EVENT_CANDIDATE_ROLLOUT: Final = "CandidateRollout"  # an accepted candidate is being rolled out
EVENT_CANDIDATE_PROMOTED: Final = "CandidatePromoted"  # the candidate serves (commit it to Git)
EVENT_CANDIDATE_ROLLED_BACK: Final = "CandidateRolledBack"  # its canary was aborted; the previous model serves

# --- phases (display only; derived from conditions) -------------------------------------------
PHASE_PENDING: Final = "Pending"
PHASE_PROGRESSING: Final = "Progressing"
PHASE_READY: Final = "Ready"
PHASE_DEGRADED: Final = "Degraded"
PHASE_INVALID: Final = "InvalidSpec"
