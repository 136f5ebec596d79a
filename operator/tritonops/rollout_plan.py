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

from tritonops import analysis as a
from tritonops import autoscaling_plan
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
    analysis: dict[str, Any] | None = None  # status.rollout.analysis (None: the canary has no checks)
    verdict: str = ""  # the analysis verdict this cycle (Passed, Failed, Inconclusive or "")
    route_weight: int = 0  # Gateway API routing: the canary's weight on the route now


def route_ref(spec: dict[str, Any]) -> str | None:
    """The name of the HTTPRoute whose weights the canary sets, or None (replica-ratio traffic)."""
    if not is_canary(spec):
        return None
    routing = spec.get("rollout", {}).get("canary", {}).get("trafficRouting") or {}
    name: str | None = routing.get("gatewayAPI", {}).get("httpRouteRef", {}).get("name")
    return name


def _delay_left(decided: datetime | None, seconds: int, now: datetime) -> float:
    return max(0.0, seconds - (now - decided).total_seconds()) if decided else 0.0


def is_canary(spec: dict[str, Any]) -> bool:
    return bool(spec.get("rollout", {}).get("strategy") == "Canary")


def _analysis(md: dict[str, Any], target: str, window: a.Window | None,
              now: datetime) -> tuple[a.Settings | None, dict[str, Any], str, str]:
    """The analysis record with this cycle's window folded in, and its verdict (with the numbers)."""
    status = md.get("status") or {}
    cfg = a.settings(md["spec"].get("rollout", {}).get("canary", {}))
    if cfg is None:
        return None, {}, "", ""
    same = status.get("canaryRevision") == target
    state = ((status.get("rollout") or {}).get("analysis") or {}) if same else {}
    if window is not None and window.revision == target:
        state = a.record(state, window, 0, now)
    verdict, why = a.verdict(state, cfg)
    return cfg, state, verdict, why


def _gate(md: dict[str, Any], target: str, progress: c.Progress, ready: bool, weight: int,
          verdict: tuple[str, str], analysed: bool) -> c.Gate:
    spec, annotations = md["spec"], md["metadata"].get("annotations") or {}
    return c.Gate(canary_ready=ready, achieved_weight=weight,
                  promote_full=annotations.get(PROMOTE_ANNOTATION) == target,
                  promote=annotations.get(PROMOTE_STEP_ANNOTATION) == f"{target}/{progress.step}",
                  abort=annotations.get(ABORT_ANNOTATION) == target,
                  paused=bool(spec.get("rollout", {}).get("paused")) or annotations.get(PAUSE_ANNOTATION) == target,
                  verdict=verdict[0], verdict_reason=verdict[1], analysis_required=analysed)


def plan_canary(md: dict[str, Any], deployments: dict[str, dict[str, Any]], target: str | None,
                stable: str | None, now: datetime, window: a.Window | None = None,
                route_ok: bool = True) -> CanaryPlan | None:
    """The canary decision, or None when this cycle is not a canary rollout (no stable yet, Rolling).

    ``route_ok``: with Gateway API routing, whether the route can be weighted (no weight moves otherwise).
    """
    spec, status = md["spec"], md.get("status") or {}
    if not is_canary(spec) or not target or not stable or target == stable:
        return None
    canary_spec = spec.get("rollout", {}).get("canary", {})
    steps, routed = c.parse_steps(canary_spec), route_ref(spec) is not None
    surge = canary_spec.get("capacityPolicy", "Surge") != "NoSurge"
    split_of = c.route_split if routed else c.split_replicas
    progress = c.from_status(status.get("rollout") or {}, status.get("canaryRevision"), target, now)
    cfg, state, verdict, why = _analysis(md, target, window, now)
    total = autoscaling_plan.total(spec)  # the autoscaler's, when there is one
    goal = c.target_weight(steps, progress)
    split = split_of(total, goal, surge)
    dep = deployments.get(target)
    ready = route_ok and (split.canary == 0 or deployment_available(dep, split.canary))
    gate = _gate(md, target, progress, ready, goal if routed else split.weight, (verdict, why), cfg is not None)
    nxt = c.advance(steps, progress, gate, now)
    record = a.record(state, None, nxt.weight, now) if cfg else None
    if nxt.decision == c.PROMOTED:
        full = deployment_available(dep, total)
        return CanaryPlan(nxt, steps, total, full, None, None if surge else 0, record, verdict,
                          100 if full or not surge else _weight_reached(steps, nxt))
    if nxt.decision == c.ABORTED:
        return _aborted(nxt, steps, dep, total, surge, routed, canary_spec, now, record, verdict)
    after = split_of(total, c.target_weight(steps, nxt), surge)
    wake = [t for t in (c.next_check(steps, nxt, now),
                        a.seconds_until_due(record, cfg.interval, now) if cfg and record else None) if t is not None]
    return CanaryPlan(nxt, steps, after.canary, False, min(wake) if wake else None,
                      None if surge else after.stable, record, verdict, nxt.weight)


def _weight_reached(steps: list[c.Step], progress: c.Progress) -> int:
    """The weight of the last setWeight step a promoted canary passed: a routed Surge canary keeps it until it
    has every replica (promoting sends it all the traffic, which its step-sized Deployment cannot yet carry;
    found by ``bench/rollouts.py``). NoSurge's stable gives its replicas up at once, so it has nothing to keep."""
    done = [s.weight for s in steps[: progress.step] if s.kind == c.SET_WEIGHT]
    return done[-1] if done else 0


def _aborted(nxt: c.Progress, steps: list[c.Step], dep: dict[str, Any] | None, total: int, surge: bool,
             routed: bool, canary_spec: dict[str, Any], now: datetime, record: dict[str, Any] | None,
             verdict: str) -> CanaryPlan:
    """All traffic back on stable now; a routed Surge canary keeps its pods for abortScaleDownDelaySeconds.

    With replica ratios the pods *are* the traffic, so the canary goes to zero at once; with NoSurge the
    stable revision needs its replicas back at once, so the canary's go at once too (the GPU count stays).
    """
    keep = None if surge else total
    left = _delay_left(nxt.decided_at, int(canary_spec.get("abortScaleDownDelaySeconds", 30)), now)
    if routed and surge and left > 0:
        replicas = int((dep or {}).get("spec", {}).get("replicas", 0))
        return CanaryPlan(nxt, steps, replicas, False, left, keep, record, verdict, 0)
    return CanaryPlan(nxt, steps, 0, False, None, keep, record, verdict, 0)


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
    reason = r.CANARY_STEP
    if p.decision == c.PAUSED:
        reason = r.ANALYSIS_INCONCLUSIVE if plan.verdict == c.INCONCLUSIVE else r.CANARY_PAUSED
    progressing = Cond(r.PROGRESSING, True, reason, msg)
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
