"""The canary part of a plan (pure): observed state + recorded progress + clock -> canary size and decision.

Traffic is split by replica ratio: the Service selects every revision, so the canary's share is its
share of ready pods. Capacity policy Surge: the stable revision keeps all its replicas until the canary
is promoted; NoSurge: the canary's replicas are taken from stable's, so the total (and the GPU count)
stays constant (:func:`tritonops.canary.split_replicas`); an abort gives them back. The user's requests
come as annotations naming the canary revision, so a request never leaks onto a later canary and the
operator never has to clear them (it writes no annotations): ``tritonops.io/promote: <revision>`` skips
the remaining steps, ``tritonops.io/promote-step: <revision>/<step>`` ends that one step's pause (or an
inconclusive halt), ``tritonops.io/abort: <revision>`` sends all traffic back to stable,
``tritonops.io/pause: <revision>`` holds the canary until it is removed (``spec.rollout.paused`` is the
declarative pause, for Git).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tritonops import canary as c
from tritonops.diagnose import Diagnosis, deployment_available
from tritonops.status import reasons as r
from tritonops.status.conditions import Cond

PROMOTE_ANNOTATION = "tritonops.io/promote"  # <revision>: skip every remaining step
PROMOTE_STEP_ANNOTATION = "tritonops.io/promote-step"  # <revision>/<step index>: end that step's pause
ABORT_ANNOTATION = "tritonops.io/abort"  # <revision>
PAUSE_ANNOTATION = "tritonops.io/pause"  # <revision>: hold this canary (removing it resumes)


@dataclass(frozen=True)
class CanaryPlan:
    """What the planner needs from the canary step machine this cycle."""

    progress: c.Progress
    steps: list[c.Step]
    canary_replicas: int  # for the canary revision's Deployment
    promote: bool  # the canary may replace stable now (promoted and fully available)
    requeue_after: float | None
    stable_replicas: int | None = None  # NoSurge: what the stable revision keeps (None: leave it alone)


def is_canary(spec: dict[str, Any]) -> bool:
    return bool(spec.get("rollout", {}).get("strategy") == "Canary")


def _total(spec: dict[str, Any], stable_dep: dict[str, Any] | None) -> int:
    """The serving size to split: spec.replicas, or the stable Deployment's when an autoscaler owns it."""
    if spec.get("autoscaling"):
        return int((stable_dep or {}).get("spec", {}).get("replicas", 1))
    return int(spec.get("replicas", 1))


def plan_canary(md: dict[str, Any], deployments: dict[str, dict[str, Any]], target: str | None,
                stable: str | None, now: datetime) -> CanaryPlan | None:
    """The canary decision, or None when this cycle is not a canary rollout (no stable yet, Rolling)."""
    spec, status = md["spec"], md.get("status") or {}
    if not is_canary(spec) or not target or not stable or target == stable:
        return None
    canary_spec = spec.get("rollout", {}).get("canary", {})
    steps = c.parse_steps(canary_spec)
    surge = canary_spec.get("capacityPolicy", "Surge") != "NoSurge"
    progress = c.from_status(status.get("rollout") or {}, status.get("canaryRevision"), target, now)
    total = _total(spec, deployments.get(stable))
    split = c.split_replicas(total, c.target_weight(steps, progress), surge)
    dep = deployments.get(target)
    annotations = md["metadata"].get("annotations") or {}
    gate = c.Gate(canary_ready=split.canary == 0 or deployment_available(dep, split.canary),
                  achieved_weight=split.weight, promote_full=annotations.get(PROMOTE_ANNOTATION) == target,
                  promote=annotations.get(PROMOTE_STEP_ANNOTATION) == f"{target}/{progress.step}",
                  abort=annotations.get(ABORT_ANNOTATION) == target,
                  paused=bool(spec.get("rollout", {}).get("paused")) or annotations.get(PAUSE_ANNOTATION) == target)
    nxt = c.advance(steps, progress, gate, now)
    keep = None if surge else total  # NoSurge: what stable keeps, below
    if nxt.decision == c.PROMOTED:
        return CanaryPlan(nxt, steps, total, deployment_available(dep, total), None, None if surge else 0)
    if nxt.decision == c.ABORTED:
        return CanaryPlan(nxt, steps, 0, False, None, keep)
    after = c.split_replicas(total, c.target_weight(steps, nxt), surge)
    return CanaryPlan(nxt, steps, after.canary, False, c.next_check(steps, nxt, now),
                      None if surge else after.stable)


def describe(plan: CanaryPlan) -> str:
    """A one-line account for the Progressing condition: weight, step, what it waits for."""
    p, steps = plan.progress, plan.steps
    where = f"step {p.step + 1} of {len(steps)}" if p.step < len(steps) else "all steps done"
    text = f"weight {p.weight}%: {where}"
    if p.step < len(steps):
        step = steps[p.step]
        if step.kind == c.SET_WEIGHT:
            text += f" (setWeight {step.weight}: waiting for {plan.canary_replicas} canary replica(s))"
        elif step.seconds is not None:
            text += f" (pause {step.seconds}s)"
    return f"{text}; {p.reason}" if p.reason else text


def canary_conditions(plan: CanaryPlan, diag: Diagnosis | None, now: datetime,
                      deadline: int) -> tuple[list[Cond], float | None]:
    """Progressing and Degraded during a canary, and when to look again.

    The progress deadline applies while a setWeight step waits for its canary replicas, never to pauses.
    """
    p, msg = plan.progress, describe(plan)
    if p.decision == c.ABORTED:
        return [Cond(r.PROGRESSING, False, r.ROLLOUT_ABORTED, msg),
                Cond(r.DEGRADED, True, r.ROLLOUT_ABORTED, msg)], None
    progressing = Cond(r.PROGRESSING, True, r.CANARY_PAUSED if p.decision == c.PAUSED else r.CANARY_STEP, msg)
    degraded = Cond(r.DEGRADED, True, diag.reason, diag.message) if diag else Cond(r.DEGRADED, False, r.AS_EXPECTED, "")
    waiting = p.step < len(plan.steps) and plan.steps[p.step].kind == c.SET_WEIGHT and p.step_started is not None
    if not waiting or p.step_started is None:
        return [progressing, degraded], plan.requeue_after
    elapsed = (now - p.step_started).total_seconds()
    if elapsed > deadline:
        late = f"the canary did not become available at step {p.step + 1} within {deadline}s"
        late += f": {diag.message}" if diag else ""
        return [Cond(r.PROGRESSING, False, r.PROGRESS_DEADLINE_EXCEEDED, late),
                Cond(r.DEGRADED, True, r.PROGRESS_DEADLINE_EXCEEDED, late)], None
    return [progressing, degraded], max(1.0, deadline - elapsed)


def aborted_entry(plan: CanaryPlan, spec: dict[str, Any], stamp: str) -> dict[str, Any]:
    """The ``status.history`` entry of an aborted canary."""
    model = spec["model"]
    entry = {"revision": plan.progress.canary, "storageUri": model["storageUri"],
             "modelVersion": int(model.get("version", 1)), "retiredAt": stamp, "outcome": "Aborted",
             "message": plan.progress.reason}
    if model.get("digest"):
        entry["digest"] = model["digest"]
    return entry
