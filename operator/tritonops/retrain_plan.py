"""The drift → retraining → candidate loop of one ModelDeployment (pure): ``status.drift``,
``status.retraining``, the Job to start, the Jobs to delete, and which model is served.

Triggers, checked only while no retraining Job runs: a manual request (a new value of the annotation
``tritonops.io/retrain``, set by ``kubectl tritonops retrain`` or the Argo CD action; not held back by the
cooldown), drift declared by the monitors (``trigger.onDrift``) or quality below its minimum
(``trigger.onQualityDrop``), both at most once per ``trigger.cooldownSeconds`` and not while a candidate
waits for approval or rolls out. One Job at a time, numbered (``status.retraining.jobs``).

The Job's result (its termination message) decides: Accepted records ``status.retraining.candidate``;
Rejected or Failed leave the served model as it is. The operator never edits ``spec``: an accepted
candidate is served *instead of* ``spec.model`` (:func:`serving_md`) while ``spec.model`` is what it was
when the Job started — with ``promotion.mode: Canary`` at once, through ``spec.rollout`` (a canary's
analysis rolls a bad candidate back, and the model served before it serves again); with ``Manual`` once
``tritonops.io/approve`` names the candidate's Job. A promoted candidate stays served
(``status.retraining.serving``) until ``spec.model`` changes: committing the candidate's ``storageUri``,
``version`` and ``digest`` to Git makes it permanent (Committed); any other change supersedes it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tritonops.builders.job import build_job
from tritonops.builders.meta import Owner
from tritonops.builders.monitor import threshold
from tritonops.canary import parse_time, stamp
from tritonops.history import Event
from tritonops.status import reasons as r

DRIFT, QUALITY, MANUAL = "Drift", "QualityDrop", "Manual"
RETRAIN_ANNOTATION = "tritonops.io/retrain"
APPROVE_ANNOTATION = "tritonops.io/approve"
RUNNING, SUCCEEDED, FAILED, REJECTED = "Running", "Succeeded", "Failed", "Rejected"
PENDING, ROLLING_OUT, PROMOTED, ROLLED_BACK = "Pending", "RollingOut", "Promoted", "RolledBack"
SUPERSEDED, COMMITTED = "Superseded", "Committed"
ACCEPTED = "Accepted"


@dataclass(frozen=True)
class DriftReading:
    """The monitors' numbers for one ModelDeployment (aggregated over its pods), or why there are none."""

    detected: bool = False
    score: float | None = None
    prediction_psi: float | None = None
    windows: int = 0
    quality: float | None = None
    quality_pairs: int = 0
    quality_below: bool = False
    error: str = ""

    @classmethod
    def from_values(cls, v: dict[str, float | None]) -> DriftReading:
        return cls(bool(v.get("detected")), v.get("score"), v.get("prediction_psi"), int(v.get("windows") or 0),
                   v.get("quality"), int(v.get("quality_pairs") or 0), bool(v.get("quality_below")))


@dataclass(frozen=True)
class JobView:
    """A retraining Job as observed: Running, Succeeded or Failed, and its container's result."""

    name: str
    state: str
    result: dict[str, Any] | None = None  # the parsed termination message
    reason: str = ""  # why the Job failed (its condition's message), when it did
    finished: str = ""


@dataclass
class RetrainPlan:
    """What the loop does this cycle."""

    create: dict[str, Any] | None = None
    delete: list[str] = field(default_factory=list)
    retraining: dict[str, Any] | None = None
    drift: dict[str, Any] | None = None
    events: list[Event] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    requeue: float | None = None


def model_key(model: dict[str, Any]) -> str:
    return f"{model.get('storageUri', '')}@{model.get('version', 1)}"


def _override(model: dict[str, Any], chosen: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in model.items() if k != "digest"}
    out.update(storageUri=chosen["storageUri"], version=int(chosen["version"]))
    if chosen.get("format"):
        out["format"] = chosen["format"]
    if chosen.get("digest"):
        out["digest"] = chosen["digest"]
    return out


def effective_model(md: dict[str, Any]) -> dict[str, Any]:
    """The model served: ``spec.model``, or a retrained one in its place (see the module docstring)."""
    model: dict[str, Any] = md["spec"]["model"]
    state = (md.get("status") or {}).get("retraining") or {}
    key, candidate, serving = model_key(model), state.get("candidate") or {}, state.get("serving") or {}
    if candidate.get("promotion") in (ROLLING_OUT, PROMOTED) and candidate.get("specModel") == key:
        return _override(model, candidate)
    if serving.get("specModel") == key:
        return _override(model, serving)
    return model


def serving_md(md: dict[str, Any]) -> dict[str, Any]:
    """``md`` with ``spec.model`` replaced by the model served (unchanged when they are the same)."""
    model = effective_model(md)
    return md if model is md["spec"]["model"] else {**md, "spec": {**md["spec"], "model": model}}


def job_view(job: dict[str, Any], pods: list[dict[str, Any]]) -> JobView:
    """What a Job came to, with the termination message of its newest pod's retraining container (the
    result; or, when it is not one, its last line, e.g. the error a container of the user's printed)."""
    status = job.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    state = SUCCEEDED if "Complete" in conditions else FAILED if "Failed" in conditions else RUNNING
    result, last_words = None, None
    for pod in sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp", ""), reverse=True):
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            message = ((cs.get("state") or {}).get("terminated") or {}).get("message") or ""
            try:
                parsed = json.loads(message) if message.strip().startswith("{") else None
            except ValueError:
                parsed = None
            if result is None and isinstance(parsed, dict) and parsed.get("decision"):
                result = parsed
            lines = [line.strip() for line in message.splitlines() if line.strip()]
            if last_words is None and lines:  # the newest pod's own words only
                last_words = lines[-1][:500] if parsed is None else ""
    failed = conditions.get("Failed") or {}
    why = "; ".join(x for x in (last_words, failed.get("message") or failed.get("reason") or "") if x)
    return JobView(job["metadata"]["name"], state, result, why,
                   status.get("completionTime") or failed.get("lastTransitionTime") or "")


# --- status.drift ------------------------------------------------------------------------------------

def drift_status(md: dict[str, Any], reading: DriftReading | None, now: datetime) -> tuple[dict[str, Any] | None,
                                                                                          list[Event]]:
    """``status.drift`` after this cycle's reading (kept as it was when nothing was read), and the events of
    drift being declared or cleared and of quality dropping."""
    drift = md["spec"].get("drift") or {}
    old = (md.get("status") or {}).get("drift")
    if not drift.get("enabled"):
        return None, []
    if reading is None:
        return old, []
    new: dict[str, Any] = {"method": drift.get("method", "psi"), "threshold": threshold(drift),
                           "detected": reading.detected, "windows": reading.windows, "lastCheckTime": stamp(now)}
    for key, value in (("score", reading.score), ("predictionPSI", reading.prediction_psi)):
        if value is not None:
            new[key] = round(value, 6)
    if drift.get("quality") and reading.quality is not None:
        quality = drift["quality"]
        new["quality"] = {"metric": quality["metric"], "value": round(reading.quality, 6),
                          "minimum": float(quality["minimum"]), "pairs": reading.quality_pairs,
                          "belowMinimum": reading.quality_below}
    if reading.error:
        new = {**(old or {}), "lastCheckTime": stamp(now), "message": reading.error}
    return new, _drift_events(old or {}, new)


def _drift_events(old: dict[str, Any], new: dict[str, Any]) -> list[Event]:
    events = []
    if new.get("detected") and not old.get("detected"):
        events.append(Event("Warning", r.EVENT_DRIFT_DETECTED,
                            f"drift declared by the monitor ({new['method']} score {new.get('score')}, threshold "
                            f"{new['threshold']})"))
    elif old.get("detected") and new.get("detected") is False:
        events.append(Event("Normal", r.EVENT_DRIFT_CLEARED, "no drift monitor declares drift any more"))
    below, was = (new.get("quality") or {}).get("belowMinimum"), (old.get("quality") or {}).get("belowMinimum")
    if below and not was:
        q = new["quality"]
        events.append(Event("Warning", r.EVENT_QUALITY_DROPPED,
                            f"{q['metric']} {q['value']} below its minimum {q['minimum']} over {q['pairs']} labels"))
    return events


# --- the Job -----------------------------------------------------------------------------------------

def _trigger(md: dict[str, Any], state: dict[str, Any], drift: dict[str, Any] | None,
             now: datetime) -> tuple[str, float | None]:
    """(what starts a Job now, or ""; seconds until the cooldown ends when a trigger waits for it)."""
    retraining = md["spec"].get("retraining") or {}
    if not retraining.get("enabled"):
        return "", None
    request = (md["metadata"].get("annotations") or {}).get(RETRAIN_ANNOTATION)
    if request and request != state.get("handledRequest"):
        return MANUAL, None
    if (state.get("candidate") or {}).get("promotion") in (PENDING, ROLLING_OUT):
        return "", None
    trigger = retraining.get("trigger") or {}
    drift = drift or {}
    wanted = DRIFT if trigger.get("onDrift", True) and drift.get("detected") else \
        QUALITY if trigger.get("onQualityDrop", True) and (drift.get("quality") or {}).get("belowMinimum") else ""
    last = parse_time(state.get("lastTriggerTime"))
    if wanted and last:
        left = int(trigger.get("cooldownSeconds", 86400)) - (now - last).total_seconds()
        if left > 0:
            return "", left
    return wanted, None


def trainable(md: dict[str, Any], served: dict[str, Any]) -> dict[str, Any]:
    """What the Job fine-tunes: a served candidate's own TorchScript file, else ``trainableModel``, else the
    served model itself."""
    state = (md.get("status") or {}).get("retraining") or {}
    for chosen in (state.get("candidate") or {}, state.get("serving") or {}):
        if chosen.get("trainable") and chosen.get("storageUri") == served["storageUri"]:
            return {**served, **chosen["trainable"], "format": "torchscript"}
    own = (md["spec"].get("retraining") or {}).get("trainableModel")
    if own and served is md["spec"]["model"]:
        return {**{k: v for k, v in served.items() if k != "digest"}, **own, "format": "torchscript"}
    return served


def _start(md: dict[str, Any], owner: Owner, state: dict[str, Any], trigger: str, now: datetime,
           plan: RetrainPlan) -> dict[str, Any]:
    number = int(state.get("jobs", 0)) + 1
    model = effective_model(md)
    job = build_job(owner, md["spec"], trainable(md, model), number, trigger, model.get("format", ""))
    plan.create = job
    name = job["metadata"]["name"]
    new = {**state, "phase": RUNNING, "activeJob": name, "trigger": trigger, "lastTriggerTime": stamp(now),
           "jobs": number, "basedOn": model_key(model), "specModel": model_key(md["spec"]["model"]),
           "message": f"Job {name} retrains {model['storageUri']} (version {model.get('version', 1)})"}
    if trigger == MANUAL:
        new["handledRequest"] = (md["metadata"].get("annotations") or {})[RETRAIN_ANNOTATION]
    plan.events.append(Event("Normal", r.EVENT_RETRAINING_STARTED, f"{new['message']}; trigger: {trigger}"))
    plan.history.append({"outcome": "RetrainingStarted", "job": name, "at": stamp(now), "message": new["message"]})
    return new


def _artifact(result: dict[str, Any], served_format: str) -> dict[str, str]:
    """The file of the new version to serve: its ONNX export for a model served as ONNX (when the Job wrote
    one), else what it names (TorchScript)."""
    if served_format == "onnx" and result.get("onnxDigest") and result.get("versionUri"):
        return {"storageUri": f"{str(result['versionUri']).rstrip('/')}/model.onnx",
                "digest": str(result["onnxDigest"]), "format": "onnx"}
    return {k: str(result[k]) for k in ("storageUri", "digest", "format") if result.get(k)}


def _trainable_of(result: dict[str, Any]) -> dict[str, str]:
    """The candidate's TorchScript file (what a later retraining fine-tunes)."""
    return {k: str(result[k]) for k in ("storageUri", "digest") if result.get(k)}


def _candidate(md: dict[str, Any], state: dict[str, Any], job: JobView, result: dict[str, Any], manual: bool,
               now: datetime) -> dict[str, Any]:
    metrics = {k: result[k] for k in ("metric", "current", "candidate", "optimizations") if k in result}
    candidate = {"job": job.name, "version": int(result.get("version") or 0), "decision": ACCEPTED,
                 "metrics": metrics, "basedOn": state.get("basedOn", ""), "specModel": state.get("specModel", ""),
                 "promotion": PENDING if manual else ROLLING_OUT,
                 **_artifact(result, effective_model(md).get("format", "")), "trainable": _trainable_of(result)}
    if not manual:
        candidate["rolloutSince"] = stamp(now)
    return candidate


def _finish(md: dict[str, Any], state: dict[str, Any], job: JobView | None, now: datetime,
            plan: RetrainPlan) -> dict[str, Any]:
    """The outcome of the active Job once it is over."""
    name = state["activeJob"]
    new = {k: v for k, v in state.items() if k != "activeJob"}
    new["lastFinishTime"] = (job.finished if job and job.finished else stamp(now))
    result = job.result if job else None
    reasons = "; ".join(str(x) for x in (result or {}).get("reasons") or [])[:900]
    if job is None:
        new.update(phase=FAILED, message=f"Job {name} disappeared before it finished")
    elif result and result.get("decision") == ACCEPTED and result.get("storageUri") and result.get("version"):
        manual = (md["spec"]["retraining"].get("promotion") or {}).get("mode") == "Manual"
        new["candidate"] = _candidate(md, state, job, result, manual, now)
        new.update(phase=SUCCEEDED, message=f"Job {name} wrote {result['storageUri']} (version {result['version']}): "
                   + ("approve it with kubectl tritonops approve" if manual else "rolling it out"))
        plan.events.append(Event("Normal", r.EVENT_CANDIDATE_ACCEPTED, new["message"]))
    elif result and result.get("decision") == REJECTED:
        new.update(phase=REJECTED, message=f"Job {name}: the candidate was rejected by the gate: {reasons}")
        plan.events.append(Event("Warning", r.EVENT_CANDIDATE_REJECTED, new["message"]))
    else:
        why = reasons or job.reason or "it finished without a result (termination message)"
        new.update(phase=FAILED, message=f"Job {name} failed: {why}"[:1000])
        plan.events.append(Event("Warning", r.EVENT_RETRAINING_FAILED, new["message"]))
    plan.history.append({"outcome": f"Retraining{new['phase']}", "job": name, "at": stamp(now),
                         "message": new["message"]})
    return new


# --- the candidate -----------------------------------------------------------------------------------

def _promotion(md: dict[str, Any], candidate: dict[str, Any], now: datetime) -> tuple[str, str]:
    """The candidate's promotion state after this cycle, and an event message when it moved."""
    status = md.get("status") or {}
    model, current = md["spec"]["model"], candidate.get("promotion", "")
    if current in (SUPERSEDED, COMMITTED, ROLLED_BACK):
        return current, ""
    if model_key(model) != candidate.get("specModel"):
        same = model.get("storageUri") == candidate["storageUri"] and int(model.get("version", 1)) == \
            candidate["version"]
        return (COMMITTED, "the candidate is now spec.model (committed)") if same else \
            (SUPERSEDED, "spec.model changed: the candidate is no longer served")
    annotations = md["metadata"].get("annotations") or {}
    if current == PENDING and annotations.get(APPROVE_ANNOTATION) == candidate["job"]:
        return ROLLING_OUT, f"approved: rolling {candidate['storageUri']} out"
    if current != ROLLING_OUT or not candidate.get("rolloutSince"):
        return current, ""
    rollout = status.get("rollout") or {}
    if rollout.get("decision") == "Aborted" and rollout.get("startedAt", "") >= candidate["rolloutSince"]:
        return ROLLED_BACK, f"the canary of {candidate['storageUri']} was aborted: the previous model serves"
    promoted = [h for h in status.get("history") or [] if h.get("outcome") == "Promoted"]
    if promoted and promoted[-1].get("storageUri") == candidate["storageUri"] and \
            int(promoted[-1].get("modelVersion", 0)) == candidate["version"]:
        return PROMOTED, (f"{candidate['storageUri']} (version {candidate['version']}) serves: commit storageUri, "
                          f"version and digest to spec.model to keep it")
    return current, ""


def _advance_candidate(md: dict[str, Any], state: dict[str, Any], now: datetime, plan: RetrainPlan) -> dict[str, Any]:
    candidate = state.get("candidate")
    if not candidate or candidate.get("decision") != ACCEPTED:
        return state
    promotion, message = _promotion(md, candidate, now)
    if promotion == candidate.get("promotion"):
        return state
    new = {**state, "candidate": {**candidate, "promotion": promotion, "message": message}}
    if promotion == ROLLING_OUT:
        new["candidate"]["rolloutSince"] = stamp(now)
    if promotion == PROMOTED:
        new["serving"] = {k: candidate[k] for k in ("storageUri", "version", "digest", "format", "specModel", "job",
                                                   "trainable") if k in candidate}
    if promotion in (SUPERSEDED, COMMITTED):
        new.pop("serving", None)
    reason = {ROLLING_OUT: r.EVENT_CANDIDATE_ROLLOUT, PROMOTED: r.EVENT_CANDIDATE_PROMOTED,
              ROLLED_BACK: r.EVENT_CANDIDATE_ROLLED_BACK}.get(promotion, r.EVENT_CANDIDATE_ROLLOUT)
    plan.events.append(Event("Warning" if promotion == ROLLED_BACK else "Normal", reason, message))
    plan.history.append({"outcome": f"Candidate{promotion}", "job": candidate["job"], "at": stamp(now),
                         "storageUri": candidate["storageUri"], "modelVersion": candidate["version"],
                         "message": message})
    return new


def _expired(md: dict[str, Any], jobs: dict[str, JobView], active: str | None) -> list[str]:
    """Finished Jobs beyond the history limits (oldest first; the active one never)."""
    retraining = md["spec"].get("retraining") or {}
    limits = {SUCCEEDED: int(retraining.get("successfulJobsHistoryLimit", 3)),
              FAILED: int(retraining.get("failedJobsHistoryLimit", 3))}

    def number(name: str) -> int:
        tail = name.rsplit("-", 1)[-1]
        return int(tail) if tail.isdigit() else 0

    out: list[str] = []
    for state, limit in limits.items():
        done = sorted((j.name for j in jobs.values() if j.state == state and j.name != active), key=number)
        out += done[:max(0, len(done) - limit)]
    return sorted(out)


def plan_retraining(md: dict[str, Any], owner: Owner, jobs: dict[str, JobView], reading: DriftReading | None,
                    now: datetime) -> RetrainPlan:
    """This cycle of the loop for ``md`` (``jobs``: its retraining Jobs; ``reading``: None when the
    monitors were not read this cycle)."""
    plan = RetrainPlan()
    plan.drift, plan.events = drift_status(md, reading, now)
    old = (md.get("status") or {}).get("retraining") or {}
    state = dict(old)
    active = state.get("activeJob")
    if active and (active not in jobs or jobs[active].state != RUNNING):
        state = _finish(md, state, jobs.get(active), now, plan)
    elif not active:
        trigger, wait = _trigger(md, state, plan.drift, now)
        if trigger:
            state = _start(md, owner, state, trigger, now, plan)
        plan.requeue = wait
    state = _advance_candidate(md, state, now, plan)
    if not state.get("phase") and (md["spec"].get("retraining") or {}).get("enabled"):
        state = {"phase": "Idle", "jobs": 0}
    plan.retraining = state or None
    plan.delete = _expired(md, jobs, state.get("activeJob"))
    return plan


def merge_status(status: dict[str, Any], plan: RetrainPlan, history_limit: int) -> dict[str, Any]:
    """The cycle's status with ``drift``, ``retraining`` and the loop's history entries."""
    out = {k: v for k, v in status.items() if k not in ("drift", "retraining")}
    for key, value in (("drift", plan.drift), ("retraining", plan.retraining)):
        if value:
            out[key] = value
    if plan.history:
        out["history"] = [*(status.get("history") or []), *plan.history][-max(history_limit, 1):]
    return out
